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
