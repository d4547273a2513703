"""A Hub id on a machine without network: one line that says so, without minutes of retries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import audio_gen

from audioembed import hub


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_only_when_something_listens(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable(timeout=2.0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert not hub.hub_reachable(timeout=2.0)


def test_hub_id_without_network_is_one_line(tmp_path):
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(200.0, 0.5, 16000), 16000)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run([shutil.which("audioembed"), "extract", "-u", "hubert", "-m", "facebook/hubert-base-ls960",
                          str(tmp_path), "-o", str(tmp_path / "x.h5"), "-q"], env=env, capture_output=True, text=True)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "no network" in lines[0] and "facebook/hubert-base-ls960" in lines[0] and "--model PATH" in lines[0]
