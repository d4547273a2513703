"""Spotify's Basic Pitch (ICASSP 2022) as an upstream (``basic_pitch``), reimplemented in torch.

The network and its weights are those of basic-pitch 0.4.0's
``basic_pitch/saved_models/icassp_2022/nmp.onnx``. The weights are read as ONNX initializers
with the ``onnx`` package (basic-pitch's code, which wants tensorflow, is never imported);
the computation is written here in torch, following that graph operation for operation:

* **CQT** (nnAudio's CQT2010v2 as basic-pitch ports it): 309 bins, 36 per octave from
  27.5 Hz, hop 256 at 22.05 kHz. The top octave is computed with 36 complex 256-tap kernels
  (reflect padding 128, stride 256); each lower octave reuses them on the signal low-passed and
  decimated by 2 once more (256-tap filter, zero padding 127), with half the hop; magnitudes
  are scaled by the square root of each bin's filter length (librosa's normalisation).
* **Normalised log**: ``10 log10(|CQT|^2 + 1e-10)``, minus its minimum and divided by its
  maximum **over the whole model window** (2 s), then a batch-norm affine map.
* **Harmonic stacking**: the bins shifted by round(36 log2 h) for h = 0.5, 1, 2, ..., 7,
  the first 264 bins kept (88 piano keys x 3): 8 channels x 264.
* **CNN**: contour branch (conv 8 x (3, 39) + ReLU, conv 1 x (5, 5) + sigmoid = the contour
  posteriorgram, 264 bins); note branch on the contour (conv 32 x (7, 7), stride 3 in
  frequency, ReLU; conv 1 x (7, 3) + sigmoid = notes, 88 keys); onset branch (conv 32 x (5, 5),
  stride 3, ReLU on the stack, concatenated with the notes, conv 1 x (3, 3) + sigmoid =
  onsets). Batch norms are folded into the convolutions, as in the ONNX file.

Windows: the model reads fixed windows of 43844 samples (2 s minus one hop) and gives 172
frames. As basic-pitch's ``run_inference``, an item is zero-padded by 3840 samples in front and
cut into windows whose outer 15 frames on each side are dropped. Unlike ``run_inference``,
whose windows advance by 36164 samples while keeping 142 frames (36352 samples), so that its
frame times drift by 188 samples per window, the windows here advance by exactly 142 hops:
frame ``t`` is centred on sample ``256 t`` everywhere, and there are ``ceil(n / 256)``
frames (``run_inference`` gives ``floor(n * 86 / 22050)``). The first window, i.e. the
first 142 frames, is identical to ``run_inference``'s. Because of the per-window
normalisation, a frame depends on the whole 2 s window around it, so long files extracted
in windows (``context_samples`` = one model window) match a whole-file run only up to that
normalisation.

Hidden states at 22050 / 256 = 86.13 frames/s, each 264 wide (88-bin layers zero-padded):

0. the normalised log-CQT (harmonic h = 1 of the stack, 264 bins);
1. the contour branch's 8 ReLU maps, averaged over the channels (264);
2. the contour posteriorgram (264);
3. the note branch's 32 ReLU maps, averaged over the channels (88);
4. the note posteriorgram (88);
5. the onset branch's 32 ReLU maps, averaged over the channels (88);
6. the onset posteriorgram (88).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audioembed.upstream import Upstream, UpstreamError, UpstreamOutput, padded_lengths_mask

from .wheel_weights import WheelFile, locate

WEIGHTS = WheelFile(
    distribution="basic-pitch",
    version="0.4.0",
    path="basic_pitch/saved_models/icassp_2022/nmp.onnx",
    sha256="2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
)

SAMPLE_RATE = 22050
HOP = 256
WINDOW = 2 * SAMPLE_RATE - HOP  # 43844 samples per model window
WINDOW_FRAMES = 172
EDGE_FRAMES = 15  # dropped on each side of a window (run_inference's 30 overlapping frames)
KEPT_FRAMES = WINDOW_FRAMES - 2 * EDGE_FRAMES  # 142
FRONT_PAD = EDGE_FRAMES * HOP  # 3840
N_OCTAVES = 9
N_BINS = 309
CONTOUR_BINS = 264
NOTE_BINS = 88
HARMONIC_SHIFTS = (-36, 0, 36, 57, 72, 84, 93, 101)  # round(36 log2 h), h = 0.5, 1, ..., 7
CQT_PAD = 128
LOWPASS_PAD = 127

#: ONNX initializers of nmp.onnx (the file is pinned by its SHA-256, so its names are too)
CQT_REAL = "const_fold_opt__655"
CQT_IMAG = "const_fold_opt__664"  # the graph negates this convolution's output
LOWPASS = "const_fold_opt__734"
CQT_SCALE = "model_1/cq_t2010v2_1/Sqrt;model_1/cq_t2010v2_1/Sqrt"
BN_SCALE = "model_1/batch_normalization/FusedBatchNormV3;model_1/batch_normalization/FusedBatchNormV3"
BN_SHIFT = "model_1/batch_normalization/FusedBatchNormV3;model_1/batch_normalization/FusedBatchNormV31"
#: our layer name -> (ONNX weight, stride, padding (time, frequency))
CONVS = {
    "contour_conv": ("const_fold_opt__727", (1, 1), (1, 19)),
    "contour_out": ("const_fold_opt__710", (1, 1), (2, 2)),
    "note_conv": ("const_fold_opt__738", (1, 3), (3, 2)),
    "note_out": ("const_fold_opt__702", (1, 1), (3, 1)),
    "onset_conv": ("const_fold_opt__707", (1, 3), (2, 1)),
    "onset_out": ("const_fold_opt__680", (1, 1), (1, 1)),
}


def read_onnx_weights(path) -> dict[str, torch.Tensor]:
    """The initializers the network needs, plus each convolution's bias, from ``nmp.onnx``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UpstreamError("upstream 'basic_pitch' reads its weights with the onnx package: pip install onnx") from None
    model = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    biases = {n.input[1]: n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2}
    conv_weights = [w for w, _, _ in CONVS.values()]
    wanted = [CQT_REAL, CQT_IMAG, LOWPASS, CQT_SCALE, BN_SCALE, BN_SHIFT] + conv_weights
    missing = [name for name in wanted if name not in arrays]
    missing += [f"bias of {w}" for w in conv_weights if w not in biases or biases[w] not in arrays]
    if missing:
        raise UpstreamError(f"basic_pitch: {path} lacks the initializers {', '.join(missing[:4])}")
    out = {name: torch.from_numpy(arrays[name].copy()).to(torch.float32) for name in wanted}
    for weight, _, _ in CONVS.values():
        out[weight + ":bias"] = torch.from_numpy(arrays[biases[weight]].copy()).to(torch.float32).reshape(-1)
    return out


class BasicPitchUpstream(Upstream):
    """Basic Pitch: log-CQT, branch feature maps and the contour, note and onset posteriorgrams."""

    name = "basic_pitch"
    sample_rate = SAMPLE_RATE
    hop_length = HOP
    num_layers = 7
    hidden_size = CONTOUR_BINS
    context_samples = WINDOW

    def __init__(self, weights: dict[str, torch.Tensor], source: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.register_buffer("cqt_real", weights[CQT_REAL].reshape(36, 1, 256))
        self.register_buffer("cqt_imag", weights[CQT_IMAG].reshape(36, 1, 256))
        self.register_buffer("lowpass", weights[LOWPASS].reshape(1, 1, 256))
        self.register_buffer("cqt_scale", weights[CQT_SCALE].reshape(N_BINS, 1))
        self.register_buffer("bn", torch.cat([weights[BN_SCALE].reshape(1), weights[BN_SHIFT].reshape(1)]))
        self.convs = nn.ModuleDict()
        for name, (weight, stride, padding) in CONVS.items():
            w = weights[weight]
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(weights[weight + ":bias"])
            self.convs[name] = conv
        self.eval()

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // HOP) if num_samples > 0 else 0

    def cqt(self, windows: torch.Tensor) -> torch.Tensor:
        """``(W, 43844)`` -> CQT magnitude ``(W, 172, 309)``, low octaves first."""
        x = windows[:, None, :]
        octaves = []
        hop = HOP
        for octave in range(N_OCTAVES):
            if octave:
                x = F.conv1d(F.pad(x, (LOWPASS_PAD, LOWPASS_PAD)), self.lowpass, stride=2)
                hop //= 2
            padded = F.pad(x, (CQT_PAD, CQT_PAD), mode="reflect")
            real = F.conv1d(padded, self.cqt_real, stride=hop)
            imag = -F.conv1d(padded, self.cqt_imag, stride=hop)
            octaves.insert(0, torch.stack([real, imag], dim=-1))  # (W, 36, 172, 2)
        spec = torch.cat(octaves, dim=1)[:, -N_BINS:] * self.cqt_scale[None, :, :, None]
        return torch.sqrt((spec * spec).sum(dim=-1)).transpose(1, 2)

    def window_maps(self, windows: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states of whole model windows ``(W, 43844)``: seven ``(W, 172, F)`` maps."""
        mag = self.cqt(windows)
        power = mag * mag
        log_power = torch.log(power + 1e-10) * 0.4342944622039795 * 10.0
        offset = log_power - log_power.amin(dim=(1, 2), keepdim=True)
        top = offset.amax(dim=(1, 2), keepdim=True)
        normalised = torch.where(top == 0, torch.zeros_like(offset), offset / top)
        normalised = normalised * self.bn[0] + self.bn[1]  # (W, T, 309)
        stack = []
        for shift in HARMONIC_SHIFTS:
            if shift > 0:
                shifted = F.pad(normalised[:, :, shift:], (0, shift))
            elif shift < 0:
                shifted = F.pad(normalised[:, :, :shift], (-shift, 0))
            else:
                shifted = normalised
            stack.append(shifted[:, :, :CONTOUR_BINS])
        stacked = torch.stack(stack, dim=1)  # (W, 8, T, 264)
        contour_maps = F.relu(self.convs["contour_conv"](stacked))
        contour = torch.sigmoid(self.convs["contour_out"](contour_maps))  # (W, 1, T, 264)
        note_maps = F.relu(self.convs["note_conv"](contour))
        note = torch.sigmoid(self.convs["note_out"](note_maps))  # (W, 1, T, 88)
        onset_maps = F.relu(self.convs["onset_conv"](stacked))
        onset = torch.sigmoid(self.convs["onset_out"](torch.cat([note, onset_maps], dim=1)))
        return [
            stacked[:, 1],
            contour_maps.mean(dim=1),
            contour[:, 0],
            note_maps.mean(dim=1),
            note[:, 0],
            onset_maps.mean(dim=1),
            onset[:, 0],
        ]

    def windows(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """The model windows of one item: front padding, then one window per 142 frames."""
        count = max(1, math.ceil(frames / KEPT_FRAMES))
        padded = F.pad(wav, (FRONT_PAD, 0))
        need = (count - 1) * KEPT_FRAMES * HOP + WINDOW
        padded = F.pad(padded, (0, max(0, need - padded.numel())))
        return padded.unfold(0, WINDOW, KEPT_FRAMES * HOP)[:count]

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:
        if wavs.dim() != 2:
            raise ValueError(f"basic_pitch: expected (B, N) waveforms, got shape {tuple(wavs.shape)}")
        lengths = lengths.to(wavs.device).long()
        mask = padded_lengths_mask(lengths, wavs.shape[1])
        wavs = torch.where(mask, wavs.to(torch.float32), 0.0)
        frames = [self.num_frames(int(n)) for n in lengths.tolist()]
        max_frames = max(frames) if frames else 0
        hidden = [wavs.new_zeros(wavs.shape[0], max_frames, CONTOUR_BINS) for _ in range(self.num_layers)]
        for b, count in enumerate(frames):
            if count == 0:
                continue
            maps = self.window_maps(self.windows(wavs[b, : int(lengths[b])], count))
            for layer, m in enumerate(maps):
                kept = m[:, EDGE_FRAMES : EDGE_FRAMES + KEPT_FRAMES].reshape(-1, m.shape[-1])[:count]
                hidden[layer][b, :count, : m.shape[-1]] = kept
        out_lengths = torch.tensor(frames, dtype=torch.long, device=wavs.device)
        return UpstreamOutput(hidden_states=hidden, lengths=out_lengths)

    def describe(self) -> dict:
        return {
            "model": "basic-pitch-0.4.0-icassp_2022-nmp",
            "weights_sha256": WEIGHTS.sha256,
            "sample_rate": SAMPLE_RATE,
            "hop_length": HOP,
            "windows": f"{WINDOW} samples, {FRONT_PAD} zeros in front, {EDGE_FRAMES} edge frames dropped, advance {KEPT_FRAMES} hops",
            "layers": "log-CQT h=1, contour maps (channel mean), contour, note maps (mean), note, onset maps (mean), onset",
        }


def load_basic_pitch(source: str | None) -> BasicPitchUpstream:
    if source:
        raise UpstreamError(
            f"upstream 'basic_pitch' reads the weights of the installed basic-pitch wheel and takes no --model (got '{source}')"
        )
    path = locate(WEIGHTS, "basic_pitch")
    return BasicPitchUpstream(read_onnx_weights(path), source=f"basic-pitch==0.4.0:{WEIGHTS.path}")
