"""Deterministic test audio written to disk (plain helpers, no pytest fixtures).

Tests exercise the real decoders on real files, in the formats, rates and channel layouts
users have, instead of mocking the I/O layer. Everything is derived from explicit seeds so a
failure reproduces exactly.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import soundfile as sf

#: file extension -> (libsndfile format, default subtype)
_FORMATS: dict[str, tuple[str, str | None]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "oga": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aif": ("AIFF", "PCM_16"),
    "aiff": ("AIFF", "PCM_16"),
    "au": ("AU", "PCM_16"),
    "w64": ("W64", "PCM_16"),
    "caf": ("CAF", "PCM_16"),
}


def _times(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(round(seconds * sr)), dtype=np.float64) / sr


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """A sine at ``freq`` Hz, float32 mono."""
    return (amp * np.sin(2 * np.pi * freq * _times(seconds, sr))).astype(np.float32)


def chirp(
    f0: float, f1: float, seconds: float, sr: int, amp: float = 0.5
) -> np.ndarray:
    """A linear sweep from ``f0`` to ``f1`` Hz, float32 mono."""
    t = _times(seconds, sr)
    k = (f1 - f0) / max(seconds, 1e-12)
    return (amp * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))).astype(np.float32)


def noise(seconds: float, sr: int, seed: int, amp: float = 0.1) -> np.ndarray:
    """Gaussian noise with standard deviation ``amp``, clipped to [-1, 1], float32 mono."""
    rng = np.random.default_rng(seed)
    x = amp * rng.standard_normal(int(round(seconds * sr)))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_audio(
    path: str | os.PathLike, samples: np.ndarray, sr: int, subtype: str | None = None
) -> str:
    """Write ``samples`` (``(N,)`` or ``(N, C)``) to ``path``; the format follows the suffix.

    Parent folders are created. Returns the path as a string.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in _FORMATS:
        raise ValueError(f"unsupported test format {ext!r} ({path})")
    fmt, default_subtype = _FORMATS[ext]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(path, np.asarray(samples), int(sr), format=fmt, subtype=subtype or default_subtype)
    return path


def make_corpus(
    dir: str | os.PathLike,
    n: int,
    seed: int,
    min_s: float = 0.5,
    max_s: float = 2.0,
    sample_rates: Sequence[int] = (8000, 16000, 22050, 44100),
    formats: Sequence[str] = ("wav", "flac", "ogg"),
    stereo_every: int = 3,
) -> list[str]:
    """``n`` files ``utt000.<fmt>`` ... in ``dir`` with varied durations, rates and formats.

    Rates and formats cycle through the given lists (so every combination appears once
    ``n`` is large enough); durations are uniform in ``[min_s, max_s]``; every
    ``stereo_every``-th file (``i % stereo_every == stereo_every - 1``; 0: none) is stereo
    with different content on each channel. Content is a tone plus a little noise.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sr = int(sample_rates[i % len(sample_rates)])
        fmt = formats[(i // len(sample_rates) + i) % len(formats)]
        seconds = float(rng.uniform(min_s, max_s))
        freq = float(rng.uniform(100.0, min(2000.0, sr / 4)))
        x = tone(freq, seconds, sr, amp=0.4) + noise(seconds, sr, seed=int(rng.integers(2**31)))
        if stereo_every and i % stereo_every == stereo_every - 1:
            right = tone(freq * 1.5, seconds, sr, amp=0.3)
            x = np.stack([x, right], axis=1)
        paths.append(write_audio(os.path.join(os.fspath(dir), f"utt{i:03d}.{fmt}"), x, sr))
    return paths


def write_corrupt(path: str | os.PathLike, seed: int = 0, size: int = 4096) -> str:
    """Garbage bytes under an audio suffix (libsndfile cannot recognise a format)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = np.random.default_rng(seed).bytes(size)
    with open(path, "wb") as f:
        f.write(b"\x00GARBAGE" + data)
    return path


def write_empty(path: str | os.PathLike, sr: int = 16000) -> str:
    """A valid file with a header but 0 samples."""
    return write_audio(path, np.zeros(0, dtype=np.float32), sr)


def write_too_short(path: str | os.PathLike, sr: int, n_samples: int = 50) -> str:
    """A valid file of only ``n_samples`` samples (shorter than any model's first frame)."""
    return write_audio(path, tone(440.0, n_samples / sr, sr)[:n_samples], sr)


def write_nan(path: str | os.PathLike, sr: int, value: float = float("nan")) -> str:
    """A float WAV with one bad sample (``value``: NaN by default, or ``inf``) mid-file."""
    x = tone(440.0, 0.5, sr)
    x[len(x) // 2] = value
    return write_audio(path, x, sr, subtype="FLOAT")
