"""Weight-free DSP baselines: Kaldi-style fbank, log-mel spectrogram and MFCC (+deltas).

Each upstream has one "layer", takes 16 kHz audio and produces one frame every 10 ms
(hop 160). They serve as sanity baselines for probes and as cheap, deterministic test
fixtures for the core: no weights, no dither, no randomness.

Every item of a batch is computed on its own valid samples only, so an item gives exactly
the same features alone and inside a padded batch.

``context_samples`` is the receptive-field margin, rounded up to a multiple of the hop so
that a segment that starts ``context_samples`` before a window still starts on a frame
boundary. With it, processing a long file in windows (each window given that much context
on both sides, clipped at the file ends) reproduces the whole-file features:

* ``fbank`` (snip edges): frame ``t`` reads samples ``[160 t, 160 t + 400)``. The last frame of
  a window ``[s, s + W)`` is ``t = (s + W) / 160 - 1`` and reads up to ``s + W + 240``; the
  first reads nothing before ``s``. Margin 240 -> **320**.
* ``logmel`` (centred, 400-sample Hann window inside a 512-point frame): frame ``t`` reads
  ``[160 t - 200, 160 t + 200)`` (the zero-padded ends of the 512 frame are multiplied by
  zeros). The first frame of a window needs 200 samples before ``s``, the last 40 after
  ``s + W``; with that margin reflect padding at a segment edge only touches discarded
  frames. Margin 200 -> **320**.
* ``mfcc`` (snip edges + delta + delta-delta, each a +-2 frame regression with edge
  replication): delta-delta at frame ``t`` depends on base frames ``t - 4 .. t + 4``, and
  the replication at a segment edge must only affect discarded frames. Left: 4 frames =
  640 samples; right: frame ``t + 4`` of the last frame reads up to
  ``s + W - 160 + 4*160 + 400 = s + W + 880``. Margin 880 -> **960**.

At the real file ends the segments are clipped to the file, so the edge handling
(snipping, reflect padding, delta edge replication) happens exactly where it does for the
whole file.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from audioembed.upstream import Upstream, UpstreamError, UpstreamOutput

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512


def _ceil_to_hop(samples: int) -> int:
    return int(math.ceil(samples / HOP) * HOP)


def _mel_matrix(num_mel: int, *, low: float, high: float, norm: str | None, mel_scale: str, triangularize: bool) -> torch.Tensor:
    """``(n_fft // 2 + 1, num_mel)`` mel filter bank from transformers (float32)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=num_mel,
        min_frequency=low,
        max_frequency=high,
        sampling_rate=SAMPLE_RATE,
        norm=norm,
        mel_scale=mel_scale,
        triangularize_in_mel_space=triangularize,
    )
    return torch.from_numpy(fb).to(torch.float32)


def _dct_matrix(num_in: int, num_out: int) -> torch.Tensor:
    """``(num_in, num_out)`` matrix ``M`` with ``x @ M == scipy.fft.dct(x, norm="ortho")[..., :num_out]``."""
    import numpy as np
    from scipy.fft import dct

    basis = dct(np.eye(num_in), type=2, norm="ortho", axis=-1)  # row i = DCT of unit vector e_i
    return torch.from_numpy(basis[:, :num_out].copy()).to(torch.float32)


def _kaldi_window(kind: str) -> torch.Tensor:
    if kind == "povey":
        return torch.hann_window(WIN, periodic=False, dtype=torch.float64).pow(0.85).to(torch.float32)
    if kind == "hamming":
        return torch.hamming_window(WIN, periodic=False, dtype=torch.float32)
    raise ValueError(f"unknown window '{kind}' (povey or hamming)")


def _replicate_delta(feats: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression delta over +-``width`` frames of ``(T, D)`` features, ends replicated."""
    if feats.shape[0] == 0:
        return feats.clone()
    padded = F.pad(feats.t().unsqueeze(0), (width, width), mode="replicate")[0].t()  # (T + 2w, D)
    T = feats.shape[0]
    denom = 2 * sum(k * k for k in range(1, width + 1))
    out = torch.zeros_like(feats)
    for k in range(1, width + 1):
        out = out + k * (padded[width + k : width + k + T] - padded[width - k : width - k + T])
    return out / denom


class _DspUpstream(Upstream):
    """Shared batching: per-item feature computation on the valid samples, zero padding."""

    sample_rate = SAMPLE_RATE
    hop_length = HOP
    num_layers = 1
    source = None

    def _features(self, wav: torch.Tensor) -> torch.Tensor:  # (n,) -> (T, D)
        raise NotImplementedError

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:
        if wavs.dim() != 2:
            raise ValueError(f"{self.name}: expected (B, N) waveforms, got shape {tuple(wavs.shape)}")
        lengths = lengths.to("cpu").long()
        feats = []
        for b in range(wavs.shape[0]):
            n = int(lengths[b])
            x = wavs[b, :n].to(torch.float32)
            f = self._features(x) if self.num_frames(n) > 0 else x.new_zeros(0, self.hidden_size)
            feats.append(f)
        out_lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        max_t = int(out_lengths.max()) if len(feats) else 0
        hidden = wavs.new_zeros(len(feats), max_t, self.hidden_size, dtype=torch.float32)
        for b, f in enumerate(feats):
            hidden[b, : f.shape[0]] = f
        return UpstreamOutput(hidden_states=[hidden], lengths=out_lengths.to(wavs.device))


class _KaldiFrames(_DspUpstream):
    """Kaldi framing: snip edges, no dither, remove DC, pre-emphasis, window, power spectrum."""

    preemphasis = 0.97

    def __init__(self, window: str = "povey") -> None:
        super().__init__()
        self.window_type = window
        self.register_buffer("window", _kaldi_window(window), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return (num_samples - WIN) // HOP + 1

    def _power_spectrum(self, wav: torch.Tensor) -> torch.Tensor:  # (n,) -> (T, 257)
        frames = wav.unfold(0, WIN, HOP)  # (T, 400), snip edges
        frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC offset
        # pre-emphasis as in Kaldi: x[i] -= 0.97 x[i-1], x[0] -= 0.97 x[0]
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - self.preemphasis * prev) * self.window
        spec = torch.fft.rfft(frames, n=N_FFT, dim=1)
        return spec.real.square() + spec.imag.square()

    def _framing(self) -> dict:
        return {
            "sample_rate": SAMPLE_RATE,
            "win_length": WIN,
            "hop_length": HOP,
            "n_fft": N_FFT,
            "window": self.window_type,
            "preemphasis": self.preemphasis,
            "remove_dc_offset": True,
            "dither": 0.0,
            "snip_edges": True,
            "low_freq": 20.0,
            "high_freq": SAMPLE_RATE / 2,
            "mel_scale": "kaldi",
        }

    def _log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self._power_spectrum(wav) @ self.mel
        return torch.clamp_min(mel, torch.finfo(torch.float32).eps).log()


class FbankUpstream(_KaldiFrames):
    """Kaldi-style 80-dim log mel filterbank (25 ms / 10 ms, snip edges)."""

    name = "fbank"
    hidden_size = 80
    context_samples = _ceil_to_hop(WIN - HOP)  # 240 -> 320

    def __init__(self, window: str = "povey", num_mel_bins: int = 80) -> None:
        super().__init__(window)
        self.hidden_size = num_mel_bins
        self.register_buffer(
            "mel",
            _mel_matrix(num_mel_bins, low=20.0, high=SAMPLE_RATE / 2, norm=None, mel_scale="kaldi", triangularize=True),
            persistent=False,
        )

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        return self._log_mel(wav)

    def describe(self) -> dict:
        return {
            "feature": "kaldi_fbank",
            "num_mel_bins": self.hidden_size,
            **self._framing(),
            "log": "log(max(x, float32 eps))",
        }


class MfccUpstream(_KaldiFrames):
    """13 MFCCs from 40 Kaldi-style log-mel bands, plus delta and delta-delta (39 dims)."""

    name = "mfcc"
    num_ceps = 13
    num_mel_bins = 40
    delta_window = 2
    hidden_size = 3 * 13
    # delta-delta sees +-4 base frames: left 4 hops, right 4 hops + (WIN - HOP)
    context_samples = _ceil_to_hop(2 * delta_window * HOP + WIN - HOP)  # 880 -> 960

    def __init__(self, window: str = "povey") -> None:
        super().__init__(window)
        self.register_buffer(
            "mel",
            _mel_matrix(self.num_mel_bins, low=20.0, high=SAMPLE_RATE / 2, norm=None, mel_scale="kaldi", triangularize=True),
            persistent=False,
        )
        self.register_buffer("dct", _dct_matrix(self.num_mel_bins, self.num_ceps), persistent=False)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        ceps = self._log_mel(wav) @ self.dct
        delta = _replicate_delta(ceps, self.delta_window)
        delta2 = _replicate_delta(delta, self.delta_window)
        return torch.cat([ceps, delta, delta2], dim=1)

    def describe(self) -> dict:
        return {
            "feature": "mfcc",
            "num_ceps": self.num_ceps,
            "num_mel_bins": self.num_mel_bins,
            "deltas": "delta, delta-delta (+-2 frame regression, edge replication)",
            **self._framing(),
            "dct": "type-II, ortho",
            "lifter": 0,
        }


class LogMelUpstream(_DspUpstream):
    """128-bin log-mel power spectrogram, centred frames (reflect padding)."""

    name = "logmel"
    hidden_size = 128
    # first kept frame of a window reads 200 samples to its left (right: 40)
    context_samples = _ceil_to_hop(WIN // 2)  # 200 -> 320

    def __init__(self, num_mel_bins: int = 128) -> None:
        super().__init__()
        self.hidden_size = num_mel_bins
        self.register_buffer("window", torch.hann_window(WIN, periodic=True, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "mel",
            _mel_matrix(num_mel_bins, low=0.0, high=SAMPLE_RATE / 2, norm="slaney", mel_scale="slaney", triangularize=False),
            persistent=False,
        )

    def num_frames(self, num_samples: int) -> int:
        return num_samples // HOP + 1

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        pad = N_FFT // 2
        # torch's reflect padding needs more samples than the pad; short inputs use zeros
        mode = "reflect" if wav.shape[0] > pad else "constant"
        padded = F.pad(wav[None, None], (pad, pad), mode=mode)[0, 0]
        spec = torch.stft(
            padded,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=WIN,
            window=self.window,
            center=False,
            return_complex=True,
        )  # (257, T)
        power = spec.real.square() + spec.imag.square()
        return (power.t() @ self.mel + 1e-6).log()

    def describe(self) -> dict:
        return {
            "feature": "logmel",
            "sample_rate": SAMPLE_RATE,
            "num_mel_bins": self.hidden_size,
            "win_length": WIN,
            "hop_length": HOP,
            "n_fft": N_FFT,
            "window": "hann",
            "center": True,
            "pad_mode": "reflect (constant when shorter than n_fft // 2 + 1)",
            "power": 2.0,
            "mel_scale": "slaney",
            "mel_norm": "slaney",
            "f_min": 0.0,
            "f_max": SAMPLE_RATE / 2,
            "log": "log(x + 1e-6)",
        }


UPSTREAMS: dict[str, type[_DspUpstream]] = {"fbank": FbankUpstream, "logmel": LogMelUpstream, "mfcc": MfccUpstream}


def load_dsp(name: str, source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers for each of :data:`UPSTREAMS`."""
    if source:
        raise UpstreamError(f"upstream '{name}' is weight-free and takes no --model (got '{source}')")
    return UPSTREAMS[name]()
