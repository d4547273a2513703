"""Frame-level pretraining targets: MFCC, log-mel, chroma and CQT-like bands, and k-means units.

Everything is computed with numpy/scipy from the waveform the model sees, on the model's own
frame grid, so a target frame and a model frame always describe the same audio:

* The model's CNN turns ``n`` samples into ``conv_output_length(n)`` frames; frame ``t``
  reads samples ``[hop*t, hop*t + R)`` (``hop`` = product of the strides, ``R`` = receptive
  field: 320 and 400 for HuBERT's CNN). Each feature frame is an analysis window of ``win``
  samples centred on ``hop*t + R/2``, zero-padded past the ends of the signal. The number
  of feature frames is therefore the model's frame count by construction, at any sample
  rate (50 Hz at 16 kHz, 75 Hz at 24 kHz): nothing is trimmed or padded afterwards.
* ``mfcc``: HuBERT iteration-1 style, like Kaldi's recipe without dither: pre-emphasis 0.97,
  Hann window, power spectrum, 23 mel bands, log, DCT-II (orthonormal), 13 coefficients, plus
  delta and delta-delta (+-2 frame regression, ends replicated): 39 values per frame.
* ``logmel``: log power in ``n_mels`` mel bands (HTK mel scale, triangular filters).
* ``chroma``: power of each STFT bin in [fmin, fmax] summed into its nearest pitch class
  (C = 0 ... B = 11, A4 = 440 Hz), normalised to sum 1 per frame.
* ``cqt``: **an approximation of a constant-Q transform**: log energies of log-spaced bands
  (``bands_per_octave`` per octave from ``fmin``) taken from the STFT with triangular weights
  in log-frequency. Low bands narrower than the STFT's bin spacing fall back to
  interpolating the two nearest bins, so they are smoother than a true CQT's.

Units are nearest centroids of a :class:`Codebook` fitted with scikit-learn's
``MiniBatchKMeans`` (seeded) on standardised features. Codebooks are stored as plain arrays
in an ``.npz`` file (no pickle).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.fft import dct

from ..errors import AudioEmbedError
from .config import TargetsSection

#: the features :func:`frame_features` computes
FEATURES = ("mfcc", "logmel", "chroma", "cqt")
LOG_FLOOR = 1e-10
PREEMPHASIS = 0.97


class TargetError(AudioEmbedError, ValueError):
    """A target feature or codebook cannot be computed as asked."""


# --------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameGrid:
    """Where the model's frames lie in the waveform: ``hop``, receptive field and CNN."""

    #: ``(kernel, stride)`` of each conv layer of the model's CNN
    geometry: tuple[tuple[int, int], ...]

    @property
    def hop(self) -> int:
        return int(math.prod(s for _, s in self.geometry))

    @property
    def receptive_field(self) -> int:
        r = 1
        for kernel, stride in reversed(self.geometry):
            r = (r - 1) * stride + kernel
        return r

    def num_frames(self, num_samples: int) -> int:
        """Frames the CNN gives for ``num_samples`` (transformers' formula; 0 if too short)."""
        n = int(num_samples)
        for kernel, stride in self.geometry:
            n = (n - kernel) // stride + 1
            if n <= 0:
                return 0
        return n

    @classmethod
    def from_config(cls, config) -> "FrameGrid":
        return cls(tuple((int(k), int(s)) for k, s in zip(config.conv_kernel, config.conv_stride)))


#: HuBERT's / MERT's CNN: hop 320, receptive field 400
HUBERT_GRID = FrameGrid(((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)))


def frame_signal(x: np.ndarray, grid: FrameGrid, win: int) -> np.ndarray:
    """``(T, win)`` analysis frames centred on the model's frames (zeros past the ends)."""
    x = np.asarray(x, dtype=np.float64)
    frames = grid.num_frames(len(x))
    if frames <= 0:
        return np.zeros((0, win))
    starts = grid.hop * np.arange(frames) + grid.receptive_field // 2 - win // 2
    left = max(0, -int(starts[0]))
    right = max(0, int(starts[-1]) + win - len(x))
    padded = np.pad(x, (left, right))
    index = (starts + left)[:, None] + np.arange(win)[None, :]
    return padded[index]


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def power_spectrum(x: np.ndarray, grid: FrameGrid, win: int, preemphasis: float = 0.0) -> np.ndarray:
    """``(T, n_fft // 2 + 1)`` power spectrum of Hann-windowed frames (``n_fft`` = next power of 2)."""
    frames = frame_signal(x, grid, win)
    if preemphasis:
        frames = frames - frames.mean(axis=1, keepdims=True)  # per-frame DC removal, as Kaldi does
        frames = np.concatenate([frames[:, :1] * (1 - preemphasis), frames[:, 1:] - preemphasis * frames[:, :-1]], axis=1)
    window = np.hanning(win + 2)[1:-1]  # symmetric Hann without its zero end points
    spec = np.fft.rfft(frames * window, n=next_pow2(win), axis=1)
    return spec.real**2 + spec.imag**2


# --------------------------------------------------------------------------------------
# filter banks
# --------------------------------------------------------------------------------------


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def fft_frequencies(n_fft: int, sample_rate: int) -> np.ndarray:
    return np.arange(n_fft // 2 + 1) * sample_rate / n_fft


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters, equally spaced on the HTK mel scale.

    Triangles are evaluated in mel space at each bin's frequency; a filter narrower than the
    bin spacing keeps at least its nearest bin, so no band is ever empty.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise TargetError(f"mel bands need 0 <= fmin < fmax <= {sample_rate / 2:g} Hz, got {fmin:g}..{fmax:g}")
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    bins = hz_to_mel(fft_frequencies(n_fft, sample_rate))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None, :] - lo) / (mid - lo)
    down = (hi - bins[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    for i in np.flatnonzero(fb.sum(axis=1) == 0):
        fb[i, int(np.argmin(np.abs(bins - edges[i + 1])))] = 1.0
    return fb


def band_centres(fmin: float, bands: int, bands_per_octave: int) -> np.ndarray:
    return fmin * 2.0 ** (np.arange(bands) / bands_per_octave)


def log_band_filterbank(
    n_fft: int, sample_rate: int, fmin: float, bands: int, bands_per_octave: int
) -> np.ndarray:
    """``(bands, n_fft // 2 + 1)`` weights of CQT-like log-frequency bands (rows sum to 1).

    Band ``b`` is centred on ``fmin * 2**(b / bands_per_octave)``; its triangle spans one
    band on either side in log-frequency. Bands with no bin under their triangle (narrower
    than the bin spacing, at low frequencies) interpolate linearly between the two nearest
    bins instead.
    """
    centres = band_centres(fmin, bands, bands_per_octave)
    if centres[-1] * 2 ** (1 / bands_per_octave) > sample_rate / 2:
        raise TargetError(
            f"{bands} bands of 1/{bands_per_octave} octave from {fmin:g} Hz reach "
            f"{centres[-1]:.0f} Hz, past the Nyquist frequency of {sample_rate} Hz audio"
        )
    freqs = fft_frequencies(n_fft, sample_rate)
    with np.errstate(divide="ignore"):
        logf = np.log2(np.where(freqs > 0, freqs, np.nan))
    dist = np.abs(logf[None, :] - np.log2(centres)[:, None]) * bands_per_octave
    fb = np.nan_to_num(np.maximum(0.0, 1.0 - dist))
    step = sample_rate / n_fft
    for b in np.flatnonzero(fb.sum(axis=1) <= 0):
        pos = centres[b] / step
        k = int(math.floor(pos))
        frac = pos - k
        fb[b, k] += 1 - frac
        if k + 1 < fb.shape[1]:
            fb[b, k + 1] += frac
    return fb / fb.sum(axis=1, keepdims=True)


def chroma_filterbank(n_fft: int, sample_rate: int, fmin: float = 55.0, fmax: float = 5000.0) -> np.ndarray:
    """``(12, n_fft // 2 + 1)``: each bin in [fmin, fmax] goes to its nearest pitch class (C = 0)."""
    freqs = fft_frequencies(n_fft, sample_rate)
    fb = np.zeros((12, len(freqs)))
    use = (freqs >= fmin) & (freqs <= min(fmax, sample_rate / 2))
    midi = 69.0 + 12.0 * np.log2(freqs[use] / 440.0)
    pitch_class = np.mod(np.rint(midi).astype(np.int64), 12)
    fb[pitch_class, np.flatnonzero(use)] = 1.0
    return fb


def deltas(feats: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-``width`` frames of ``(T, D)`` features (ends replicated)."""
    if len(feats) == 0:
        return feats.copy()
    padded = np.pad(feats, ((width, width), (0, 0)), mode="edge")
    T = len(feats)
    out = np.zeros_like(feats)
    for k in range(1, width + 1):
        out += k * (padded[width + k : width + k + T] - padded[width - k : width - k + T])
    return out / (2 * sum(k * k for k in range(1, width + 1)))


# --------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """How the target features are computed at one sample rate on one frame grid."""

    sample_rate: int
    grid: FrameGrid = HUBERT_GRID
    # the settings of the config's [targets] section, with its defaults (stated once, there)
    #: analysis window (samples at ``sample_rate``); the FFT size is the next power of two
    win: int = TargetsSection.win
    n_mels: int = TargetsSection.n_mels
    mfcc_mels: int = TargetsSection.mfcc_mels
    mfcc_coefficients: int = TargetsSection.mfcc_coefficients
    chroma_fmin: float = TargetsSection.chroma_fmin
    chroma_fmax: float = TargetsSection.chroma_fmax
    cqt_fmin: float = TargetsSection.cqt_fmin  # C1
    cqt_bands: int = TargetsSection.cqt_bands
    cqt_bands_per_octave: int = TargetsSection.cqt_bands_per_octave

    @property
    def n_fft(self) -> int:
        return next_pow2(self.win)

    def dim(self, name: str) -> int:
        return {
            "mfcc": 3 * self.mfcc_coefficients,
            "logmel": self.n_mels,
            "chroma": 12,
            "cqt": self.cqt_bands,
        }[check_feature(name)]


def check_feature(name: str) -> str:
    if name not in FEATURES:
        raise TargetError(f"unknown target feature {name!r}; known: {', '.join(FEATURES)}")
    return name


class FeatureExtractor:
    """Computes :data:`FEATURES` of one waveform on the model's frames (filter banks cached)."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        n_fft, sr = spec.n_fft, spec.sample_rate
        self._banks: dict[str, np.ndarray] = {}
        self._builders = {
            "mfcc": lambda: mel_filterbank(spec.mfcc_mels, n_fft, sr, 20.0, sr / 2),
            "logmel": lambda: mel_filterbank(spec.n_mels, n_fft, sr, 0.0, sr / 2),
            "chroma": lambda: chroma_filterbank(n_fft, sr, spec.chroma_fmin, spec.chroma_fmax),
            "cqt": lambda: log_band_filterbank(n_fft, sr, spec.cqt_fmin, spec.cqt_bands, spec.cqt_bands_per_octave),
        }

    def bank(self, name: str) -> np.ndarray:
        if name not in self._banks:
            self._banks[name] = self._builders[check_feature(name)]()
        return self._banks[name]

    def __call__(self, wav: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``{name: (T, dim) float32}`` for ``names``; ``T`` = the model's frame count."""
        spec = self.spec
        out: dict[str, np.ndarray] = {}
        plain = None
        for name in names:
            check_feature(name)
            if name == "mfcc":
                power = power_spectrum(wav, spec.grid, spec.win, PREEMPHASIS)
                logmel = np.log(np.maximum(power @ self.bank("mfcc").T, LOG_FLOOR))
                ceps = dct(logmel, type=2, norm="ortho", axis=1)[:, : spec.mfcc_coefficients]
                d1 = deltas(ceps)
                feats = np.concatenate([ceps, d1, deltas(d1)], axis=1)
            else:
                if plain is None:
                    plain = power_spectrum(wav, spec.grid, spec.win)
                energy = plain @ self.bank(name).T
                if name == "chroma":
                    feats = energy / np.maximum(energy.sum(axis=1, keepdims=True), LOG_FLOOR)
                else:
                    feats = np.log(np.maximum(energy, LOG_FLOOR))
            out[name] = feats.astype(np.float32)
        return out


# --------------------------------------------------------------------------------------
# codebooks
# --------------------------------------------------------------------------------------


@dataclass
class Codebook:
    """k-means centroids in standardised feature space: unit = nearest centroid."""

    name: str
    mean: np.ndarray
    std: np.ndarray
    centroids: np.ndarray

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    def units(self, feats: np.ndarray) -> np.ndarray:
        """``(T,)`` int64 unit of each ``(T, D)`` feature frame."""
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.std
        c = self.centroids.astype(np.float64)
        dist = (c * c).sum(axis=1)[None, :] - 2.0 * z @ c.T
        return np.argmin(dist, axis=1).astype(np.int64)


def standardisation(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and (floored) standard deviation of ``(N, D)`` features."""
    feats = np.asarray(feats, dtype=np.float64)
    mean = feats.mean(axis=0)
    std = np.maximum(feats.std(axis=0), 1e-5)
    return mean, std


def fit_codebook(name: str, feats: np.ndarray, k: int, seed: int, batch_size: int = 4096, max_iter: int = 100) -> Codebook:
    """Fit ``k`` centroids to ``(N, D)`` features with seeded ``MiniBatchKMeans``."""
    from sklearn.cluster import MiniBatchKMeans

    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < k:
        raise TargetError(
            f"k-means for {name!r}: {len(feats)} feature frames cannot give {k} clusters; "
            "use more audio (units.fit_seconds) or fewer clusters (units.k)"
        )
    mean, std = standardisation(feats)
    z = (feats - mean) / std
    km = MiniBatchKMeans(
        n_clusters=int(k), random_state=int(seed), batch_size=int(batch_size), n_init=3, max_iter=int(max_iter)
    )
    km.fit(z)
    return Codebook(name, mean, std, km.cluster_centers_.astype(np.float64))


def save_codebooks(path: str | os.PathLike, codebooks: Sequence[Codebook], stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                   meta: dict | None = None) -> Path:
    """Write codebooks (and ``{name: (mean, std)}`` statistics of regression targets) atomically."""
    import json

    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for cb in codebooks:
        arrays[f"codebook/{cb.name}/mean"] = cb.mean
        arrays[f"codebook/{cb.name}/std"] = cb.std
        arrays[f"codebook/{cb.name}/centroids"] = cb.centroids
    for name, (mean, std) in (stats or {}).items():
        arrays[f"stats/{name}/mean"] = np.asarray(mean)
        arrays[f"stats/{name}/std"] = np.asarray(std)
    arrays["meta"] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_codebooks(path: str | os.PathLike) -> tuple[dict[str, Codebook], dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """``(codebooks, stats, meta)`` as written by :func:`save_codebooks`."""
    import json

    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        books: dict[str, Codebook] = {}
        stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key in keys:
            parts = key.split("/")
            if parts[0] == "codebook" and parts[2] == "centroids":
                n = parts[1]
                books[n] = Codebook(n, data[f"codebook/{n}/mean"], data[f"codebook/{n}/std"], data[key])
            elif parts[0] == "stats" and parts[2] == "mean":
                n = parts[1]
                stats[n] = (data[key], data[f"stats/{n}/std"])
        meta = json.loads(bytes(data["meta"]).decode()) if "meta" in keys else {}
    return books, stats, meta
