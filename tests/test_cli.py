"""The command line as a user runs it."""

from __future__ import annotations

import shutil
import subprocess

from click.testing import CliRunner

import audio_gen
from conftest import cli_env

from audioembed.cli import main


def test_console_script_extract_and_inspect(small_corpus, tmp_path):
    exe = shutil.which("audioembed")
    assert exe, "the audioembed console script is not installed"
    out = tmp_path / "f.h5"
    run = subprocess.run([exe, "extract", "--upstream", "mfcc", str(small_corpus), "-o", str(out), "-q"],
                         env=cli_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "8 extracted" in run.stdout
    run = subprocess.run([exe, "inspect", str(out)], env=cli_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "upstream:     mfcc" in run.stdout and "utterances:   8" in run.stdout
    assert "100 frames/s" in run.stdout


def test_plugins_lists_builtins_with_distribution():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in ("hubert", "wav2vec2", "wavlm", "data2vec", "mert", "fbank", "logmel", "mfcc", "student",
                 "unified_student", "small_hubert", "small_mert"):
        line = next(l for l in result.output.splitlines() if l.strip().startswith(name + " "))
        assert "audioembed" in line


def test_clear_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["extract", "-u", "nope", str(tmp_path), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code != 0 and "unknown upstream 'nope'" in result.output and "mfcc" in result.output
    result = runner.invoke(main, ["extract", "-u", "mfcc", str(tmp_path / "missing"), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code != 0 and "missing" in result.output
    result = runner.invoke(main, ["extract", "-u", "hubert", str(tmp_path), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code != 0 and "--model" in result.output
    result = runner.invoke(main, ["extract", "-u", "mfcc", "--shard", "2/2", str(tmp_path), "-o", "x.h5"])
    assert result.exit_code != 0 and "K < N" in result.output
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    result = runner.invoke(main, ["extract", "-u", "unified_student", str(tmp_path), "-o", str(tmp_path / "x.h5")],
                           env={"AUDIOEMBED_UNIFIED_STUDENT": str(tmp_path / "nowhere")})
    assert result.exit_code != 0 and "AUDIOEMBED_UNIFIED_STUDENT" in result.output and "not a folder" in result.output


def test_bad_file_exit_code_and_summary(tmp_path):
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    audio_gen.write_corrupt(tmp_path / "b.wav")
    result = CliRunner().invoke(main, ["extract", "-u", "fbank", str(tmp_path), "-o", str(tmp_path / "o.h5"), "-q"])
    assert result.exit_code == 3
    assert "1 extracted" in result.output and "FAILED" in result.output and "b.wav" in result.output
    result = CliRunner().invoke(main, ["extract", "-u", "fbank", str(tmp_path), "-o", str(tmp_path / "s.h5"), "-q",
                                       "--strict"])
    assert result.exit_code == 1 and "b.wav" in result.output


# --- lazy command loading, one error base, one error mapping -------------------------------------

import errno
import json
import subprocess
import sys

import click
import pytest

from audioembed.cli import COMMANDS
from audioembed.errors import AudioEmbedError, user_message


def _walk(command, path):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(None):
            yield from _walk(command.get_command(None, name), [*path, name])


def test_help_imports_no_command_module_and_no_torch():
    code = ("import sys\nfrom audioembed.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('audioembed.commands.')\n"
            "               or m.startswith('audioembed.distill') or m == 'h5py')\n"
            "print('HEAVY', heavy)\n")
    run = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "HEAVY []" in run.stdout, run.stdout
    for name in COMMANDS:
        assert name in run.stdout


def test_listed_summaries_match_the_commands_and_every_option_is_described():
    for name, lazy in COMMANDS.items():
        command = lazy.load()
        assert " ".join((command.help or "").split("\n\n")[0].split()) == lazy.summary, name
        for path, sub in _walk(command, [name]):
            undocumented = [p.name for p in sub.params if isinstance(p, click.Option) and not p.help and not p.hidden]
            assert not undocumented, f"{' '.join(path)}: options without a description: {undocumented}"


def test_every_command_help_shows_an_example():
    for name, lazy in COMMANDS.items():
        for path, sub in _walk(lazy.load(), [name]):
            assert sub.epilog and "Example" in sub.epilog and "audioembed " in sub.epilog, " ".join(path)


def test_every_project_error_derives_from_the_base():
    import importlib
    import pkgutil

    import audioembed

    for info in pkgutil.walk_packages(audioembed.__path__, "audioembed."):
        if not info.name.endswith("__main__"):  # running it would start the command line
            importlib.import_module(info.name)
    import audioembed_downstreams.common  # noqa: F401

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = [c for c in subclasses(Exception) if c.__module__.startswith(("audioembed", "audioembed_downstreams"))
            and not issubclass(c, Warning)]
    assert len(ours) >= 20
    strays = [f"{c.__module__}.{c.__qualname__}" for c in ours if not issubclass(c, AudioEmbedError)]
    assert not strays, strays


def test_os_errors_become_one_line_with_the_file():
    message, code = user_message(OSError(errno.ENOSPC, "No space left on device", "/data/out.h5"))
    assert message == "'/data/out.h5': no space left on the device" and code == 1
    message, _ = user_message(AudioEmbedError("bad\nfile name"))
    assert "\n" not in message


@pytest.mark.parametrize("where", ["proc", "parent_is_file"])
def test_impossible_output_paths_give_one_line(tmp_path, where):
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    (tmp_path / "plain").write_text("x")
    output = {"proc": "/proc/x.h5", "parent_is_file": str(tmp_path / "plain" / "x.h5")}[where]
    result = CliRunner().invoke(main, ["extract", "-u", "mfcc", str(tmp_path / "a.wav"), "-o", output, "-q"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: output"), result.output


def test_downstream_output_in_impossible_place(tmp_path):
    (tmp_path / "plain").write_text("x")
    result = CliRunner().invoke(main, ["downstream", "classify", "-u", "mfcc", "--data", str(tmp_path),
                                       "-o", str(tmp_path / "plain" / "results")])
    assert result.exit_code == 1 and "is a file, not a folder" in result.output, result.output


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch):
    import audioembed.extraction

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(audioembed.extraction, "extract", interrupted)
    result = CliRunner().invoke(main, ["extract", "-u", "mfcc", str(tmp_path), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 130
    assert "rerun the same command to resume" in result.output


def test_dashed_upstream_names_are_accepted():
    from audioembed.registry import check_upstream

    assert check_upstream("unified-student").name == "unified_student"
    assert check_upstream("small-mert").name == "small_mert"


def test_inspect_shows_the_registered_name_of_a_bundled_model(tmp_path):
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(300.0, 0.5, 24000), 24000)
    runner = CliRunner()
    result = runner.invoke(main, ["extract", "-u", "small-mert", str(tmp_path / "a.wav"), "-o", str(tmp_path / "m.h5"), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["inspect", str(tmp_path / "m.h5")])
    assert "upstream:     small_mert " in result.output, result.output


def test_library_loading_bars_are_silenced_without_quiet(tmp_path):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    result = CliRunner().invoke(main, ["extract", "-u", "mfcc", str(tmp_path / "a.wav"), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 0, result.output
    assert not hf_logging.is_progress_bar_enabled()


def test_unstorable_id_is_reported_and_the_job_goes_on(tmp_path):
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    audio_gen.write_audio(tmp_path / "b.wav", audio_gen.tone(300.0, 0.5, 16000), 16000)
    man = tmp_path / "m.csv"
    man.write_text("path,id\na.wav,fine\nb.wav,nul\x00here\n")
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(main, ["extract", "-u", "fbank", str(man), "-o", str(out), "-q"])
    assert result.exit_code == 3, result.output
    assert "1 extracted" in result.output and "Traceback" not in result.output
    assert f"FAILED {man}: line 3: id 'nul\\x00here' contains a NUL character" in result.output
    assert "\x00" not in result.output


def test_control_characters_in_file_names_cannot_forge_lines(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    audio_gen.write_audio(root / "good.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    forged = "x\naudioembed: all 2 files extracted\r\x1b[2K.wav"
    audio_gen.write_corrupt(root / forged)
    out = tmp_path / "o\nut.h5"
    result = CliRunner().invoke(main, ["extract", "-u", "fbank", str(root), "-o", str(out), "-q"])
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert not any(line.startswith("audioembed: all") for line in lines), lines
    assert "\r" not in result.output and "\x1b" not in result.output
    assert any("x\\naudioembed: all 2 files extracted\\r\\x1b[2K.wav" in line for line in lines)
    assert any(line.startswith(str(tmp_path / "o\\nut.h5") + ": 1 extracted") for line in lines), lines
    inspect = CliRunner().invoke(main, ["inspect", str(out)])
    assert inspect.exit_code == 0, inspect.output
    assert "o\\nut.h5" in inspect.output and "x\\naudioembed" in inspect.output  # the failed input, escaped
    assert not any(line.startswith("audioembed: all") for line in inspect.output.splitlines())
