"""The thread policy: explicit counts win, small work gets one thread, busy cores are not counted."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import audio_gen

from audioembed import threads
from audioembed.cli import main


def test_explicit_count_wins_over_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.choose_threads(None, parameters=10, seconds=1.0).threads == 3
    assert threads.choose_threads(2, parameters=10, seconds=1.0).threads == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_environment_value_is_one_clear_error(monkeypatch, bad):
    monkeypatch.setenv(threads.ENV_VAR, bad)
    with pytest.raises(threads.ThreadsError, match=threads.ENV_VAR):
        threads.choose_threads(None)


@pytest.fixture(autouse=True)
def _no_thread_variables(monkeypatch):
    # the suite runs under OMP_NUM_THREADS=1, which the policy honours as a request
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)


def test_omp_num_threads_is_honoured_after_our_variable(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(None, parameters=10, seconds=1.0) == threads.ThreadChoice(3, "requested")
    monkeypatch.setenv(threads.ENV_VAR, "2")
    assert threads.choose_threads(None).threads == 2


def test_small_work_gets_one_thread_even_on_idle_cores(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.choose_threads(None, parameters=2_000_000, seconds=30.0).threads == 1
    assert threads.choose_threads(None, parameters=94_000_000, seconds=30.0).threads == 8


def test_busy_cores_are_not_counted(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    choice = threads.choose_threads(None, parameters=94_000_000, seconds=30.0)
    assert choice.threads == 1 and "idle" in choice.reason
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert threads.choose_threads(None, parameters=94_000_000, seconds=30.0).threads == 2


def test_compute_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with threads.compute_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_extract_uses_and_reports_the_requested_threads_then_restores(tmp_path, monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    result = CliRunner().invoke(main, ["extract", "-u", "mfcc", str(tmp_path / "a.wav"), "-o", str(tmp_path / "x.h5"),
                                       "-q", "--threads", "3"])
    assert result.exit_code == 0, result.output
    assert "3 CPU threads" in result.output
    assert 3 in seen and torch.get_num_threads() == before


def test_environment_variable_reaches_extract(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    result = CliRunner().invoke(main, ["extract", "-u", "mfcc", str(tmp_path / "a.wav"), "-o", str(tmp_path / "x.h5"), "-q"])
    assert result.exit_code == 0 and "2 CPU threads" in result.output, result.output


def test_passive_waiting_is_a_default_only(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.prefer_passive_waiting()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.prefer_passive_waiting()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


# --- --threads on the commands that train or run a pipeline -------------------------------------

class _Reached(Exception):
    """Raised by the stand-ins below once they have recorded the thread settings they ran under."""


def _recorder(seen: list, error: type[Exception]):
    """A stand-in for a command's work: records torch's count and $AUDIOEMBED_THREADS, then stops
    the command with ``error`` (one of the errors the command turns into a message)."""
    import os

    def work(*args, **kwargs):
        seen.append((torch.get_num_threads(), os.environ.get(threads.ENV_VAR)))
        raise error("stand-in stopped here")

    return work


def _command_cases(tmp_path, monkeypatch, seen):
    """(arguments of a command, with the work it would do replaced by a recorder)."""
    from audioembed.distill import cache, trainer
    from audioembed.distill.data import DataError
    from audioembed.dsuperb import evaluate
    from audioembed.offline import pipeline
    from audioembed.pretrain import trainer as pretrain_trainer

    config = tmp_path / "distill.toml"
    config.write_text('[[teachers]]\nname = "t"\nupstream = "mfcc"\n')
    monkeypatch.setattr(trainer, "Trainer", _recorder(seen, trainer.DistillError))
    monkeypatch.setattr(cache, "prepare_teacher_cache", _recorder(seen, DataError))
    monkeypatch.setattr(pretrain_trainer, "PretrainTrainer", _recorder(seen, pretrain_trainer.PretrainError))
    monkeypatch.setattr(pipeline, "load_recipe", lambda path, overrides: type("Ctx", (), {})())
    monkeypatch.setattr(pipeline, "run_recipe", _recorder(seen, pipeline.ReproduceError))
    monkeypatch.setattr(evaluate, "run_eval", _recorder(seen, evaluate.DsuperbError))
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    return {
        "distill": ["distill", "-c", str(config)],
        "distill-cache": ["distill-cache", "-c", str(config), "-o", str(tmp_path / "cache")],
        "pretrain": ["pretrain", "-d", str(tmp_path / "a.wav"), "-o", str(tmp_path / "run")],
        "reproduce": ["reproduce", "-c", str(config)],
        "dsuperb eval": ["dsuperb", "eval", "-u", "mfcc", "--tasks", "all"],
    }


@pytest.mark.parametrize("command", ["distill", "distill-cache", "pretrain", "reproduce", "dsuperb eval"])
def test_threads_option_and_variable_reach_the_commands_that_train(command, tmp_path, monkeypatch):
    import os

    seen: list = []
    args = _command_cases(tmp_path, monkeypatch, seen)[command]
    before = torch.get_num_threads()
    result = CliRunner().invoke(main, [*args, "--threads", "3", "-q"])
    assert "stand-in stopped here" in result.output and result.exit_code == 1, result.output
    assert seen == [(3, "3")]  # torch's count, and the count every step below it chooses from
    assert torch.get_num_threads() == before and threads.ENV_VAR not in os.environ

    monkeypatch.setenv(threads.ENV_VAR, "2")
    result = CliRunner().invoke(main, [*args, "-q"])
    assert "stand-in stopped here" in result.output, result.output
    assert seen[-1] == (2, "2") and os.environ[threads.ENV_VAR] == "2"


def test_command_threads_without_a_request_takes_the_idle_cores_and_exports_nothing(monkeypatch):
    import os

    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    with threads.command_threads(None) as count:
        assert count == 3 == torch.get_num_threads()
        assert threads.ENV_VAR not in os.environ
