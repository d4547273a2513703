"""A run killed with SIGKILL at any moment leaves a readable store; rerunning completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

import audio_gen
from conftest import cli_env
from tiny_models import make_tiny_hf

from audioembed import FeatureReader, extract
from audioembed.store import parts_dir


def _cli(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "audioembed.cli", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    model = make_tiny_hf(tmp_path / "hubert", kind="hubert", feat_extract_norm="group")
    corpus = tmp_path / "audio"
    audio_gen.make_corpus(corpus, n=20, seed=7, min_s=0.5, max_s=4.0)
    reference = tmp_path / "ref.h5"
    extract(corpus, "hubert", reference, model=str(model), pooling="none", progress=False)

    out = tmp_path / "killed.h5"
    args = ["extract", "-u", "hubert", "-m", str(model), str(corpus), "-o", str(out), "--pool", "none",
            "--checkpoint-seconds", "0", "-q"]
    # Kill at several moments: as soon as the file exists, after some parts are sealed, later.
    seen_counts = []
    for wait_for_parts in (0, 3, 10):
        proc = _cli(args)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list(parts_dir(out).glob("part-*.h5")) if parts_dir(out).exists() else []
            if out.exists() and len(parts) >= wait_for_parts:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        # the killed store is readable and everything in it is intact
        with FeatureReader(out) as got, FeatureReader(reference) as ref:
            seen_counts.append(len(got))
            assert set(got.ids) <= set(ref.ids)
            for uid in got.ids:
                for layer in ref.layers:
                    np.testing.assert_allclose(got.get(uid, layer), ref.get(uid, layer), atol=1e-5)

    # the kills really interrupted work in progress
    assert any(0 < n < 20 for n in seen_counts), seen_counts
    proc = _cli(args)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()
    assert "already done" in stdout.decode()
    assert not parts_dir(out).exists()
    with FeatureReader(out) as got, FeatureReader(reference) as ref:
        assert got.ids == ref.ids
        for uid in ref.ids:
            for layer in ref.layers:
                np.testing.assert_allclose(got.get(uid, layer), ref.get(uid, layer), atol=1e-5)
