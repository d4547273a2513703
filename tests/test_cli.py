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
