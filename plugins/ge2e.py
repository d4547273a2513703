"""Resemblyzer's GE2E speaker encoder as an upstream (``ge2e``).

The network (3-layer LSTM of 256 units + a 256 x 256 linear layer with ReLU, trained with the
GE2E loss on thousands of speakers) and its weights are Resemblyzer 0.1.4's
``resemblyzer/pretrained.pt``; the weights are read from the installed wheel, Resemblyzer's
code is never imported (it needs webrtcvad and librosa at import time).

Front end, as Resemblyzer's ``preprocess_wav`` + ``wav_to_mel_spectrogram``: 16 kHz; volume
raised (never lowered) to -30 dBFS RMS over the item's valid samples; a 40-band mel *power*
spectrogram (no log) from a 400-point FFT with a periodic Hann window, hop 160, centred frames
with zero padding (librosa's defaults), Slaney mel scale and normalisation. Resemblyzer also
removes long silences with WebRTC VAD; this upstream does not, because every output frame
must stay aligned with the input (trim silences first if you need Resemblyzer's exact
utterance embeddings).

Hidden states at 100 Hz (frame ``t`` is centred on sample ``160 t``), all 256-d:

0. the 40 mel bands the LSTM reads, in dims 0-39 (dims 40-255 are zero: every layer of an
   upstream has the same width);
1-3. the outputs of LSTM layers 1, 2 and 3, run over the item from a zero state;
4. the frame embedding: ReLU(linear(layer 3)), L2-normalised; at the last frame of a run
   of 160 frames from a zero state it is Resemblyzer's partial-utterance embedding.

Long files: the LSTM carries state from the first frame, which a windowed run cannot do
across windows. Each window is instead given :data:`CONTEXT_SECONDS` of audio before it
(``context_samples``) and the LSTM restarts there. LSTM layers 1-2 forget their start
within about 2 s, so the mel and layers 1-2 of the kept frames equal a whole-file run (to
1e-4, ``tests/test_ge2e.py``); layer 3 and the frame embedding integrate a speaker state over
much longer (a run started 2 s late still differs by ~0.15 after 20 s), so in windowed files
they are those of a run restarted 4 s before each window (Resemblyzer itself restarts the
LSTM every 0.77 s, on 1.6 s partials). With the default 30 s windows this only concerns
files longer than 30 s.
The volume gain is computed per window segment, so a file whose loudness changes a lot is
normalised piecewise; at or above -30 dBFS the gain is 1 and nothing changes.

:meth:`Ge2eUpstream.utterance_embedding` reproduces ``VoiceEncoder.embed_utterance``
(1.6 s partials at 1.3 per second, each from a zero state, averaged and L2-normalised).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audioembed.upstream import Upstream, UpstreamError, UpstreamOutput, padded_lengths_mask

from .wheel_weights import WheelFile, locate

WEIGHTS = WheelFile(
    distribution="resemblyzer",
    version="0.1.4",
    path="resemblyzer/pretrained.pt",
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
)

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
N_FFT = 400  # 25 ms
NUM_MELS = 40
HIDDEN = 256
NUM_LSTM_LAYERS = 3
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1
PARTIAL_FRAMES = 160  # Resemblyzer's 1.6 s partial utterances
#: audio before each window of a long file; the LSTM state converges well within it
CONTEXT_SECONDS = 4.0


def mel_filterbank() -> torch.Tensor:
    """``(201, 40)`` Slaney mel filters for a 400-point FFT at 16 kHz (librosa's defaults)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=NUM_MELS,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(fb).to(torch.float32)


def volume_gain(wav: torch.Tensor) -> float:
    """Gain that raises ``wav`` to -30 dBFS RMS (1.0 if it is already louder, or silent)."""
    if wav.numel() == 0:
        return 1.0
    rms = math.sqrt(float(torch.mean((wav.double() * INT16_MAX) ** 2)))
    if rms == 0.0:
        return 1.0
    change = TARGET_DBFS - 20.0 * math.log10(rms / INT16_MAX)
    return 1.0 if change < 0 else 10.0 ** (change / 20.0)


def partial_slices(num_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[tuple[int, int]]:
    """Frame ranges of Resemblyzer's partial utterances for an input of ``num_samples``."""
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    num_frames = int(np.ceil((num_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / rate) / HOP))
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a partial step of {step} frames (1..{PARTIAL_FRAMES} allowed)")
    count = max(1, num_frames - PARTIAL_FRAMES + step + 1)
    slices = [(i, i + PARTIAL_FRAMES) for i in range(0, count, step)]
    start = slices[-1][0] * HOP
    coverage = (num_samples - start) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


class Ge2eUpstream(Upstream):
    """GE2E speaker encoder: mel input, three LSTM layers and the frame embedding."""

    name = "ge2e"
    sample_rate = SAMPLE_RATE
    hop_length = HOP
    num_layers = 1 + NUM_LSTM_LAYERS + 1
    hidden_size = HIDDEN
    context_samples = int(CONTEXT_SECONDS * SAMPLE_RATE)

    def __init__(self, state_dict: dict[str, torch.Tensor], source: str | None = None) -> None:
        super().__init__()
        self.source = source
        # one single-layer LSTM per layer, so that every layer's output is available
        self.lstm = nn.ModuleList(
            nn.LSTM(NUM_MELS if i == 0 else HIDDEN, HIDDEN, 1, batch_first=True) for i in range(NUM_LSTM_LAYERS)
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float32), persistent=False)
        self.register_buffer("mel", mel_filterbank(), persistent=False)
        self._load(state_dict)
        self.eval()

    def _load(self, state_dict: dict[str, torch.Tensor]) -> None:
        ours = {}
        for i in range(NUM_LSTM_LAYERS):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours[f"lstm.{i}.{kind}_l0"] = state_dict.get(f"lstm.{kind}_l{i}")
        ours["linear.weight"] = state_dict.get("linear.weight")
        ours["linear.bias"] = state_dict.get("linear.bias")
        missing = sorted(k for k, v in ours.items() if v is None)
        if missing:
            raise UpstreamError(f"ge2e: the checkpoint lacks {', '.join(missing)}")
        self.load_state_dict(ours, strict=True)

    def num_frames(self, num_samples: int) -> int:
        # centred frames: 1 + n // hop (none for an empty input)
        return num_samples // HOP + 1 if num_samples > 0 else 0

    def mel_spectrogram(self, wavs: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` (zero beyond each item's end) -> ``(B, 1 + N // 160, 40)`` mel power."""
        spec = torch.stft(
            wavs,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, 201, T)
        return power.transpose(1, 2) @ self.mel

    def _normalised(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padded_lengths_mask(lengths, wavs.shape[1])
        wavs = torch.where(mask, wavs.to(torch.float32), 0.0)
        gains = [volume_gain(wavs[b, : int(lengths[b])]) for b in range(wavs.shape[0])]
        return wavs * torch.tensor(gains, dtype=torch.float32, device=wavs.device)[:, None]

    def _lstm_layers(self, mel: torch.Tensor) -> list[torch.Tensor]:
        outputs, x = [], mel
        for layer in self.lstm:
            x, _ = layer(x)
            outputs.append(x)
        return outputs

    def frame_embedding(self, last_layer: torch.Tensor) -> torch.Tensor:
        raw = F.relu(self.linear(last_layer))
        return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:
        if wavs.dim() != 2:
            raise ValueError(f"ge2e: expected (B, N) waveforms, got shape {tuple(wavs.shape)}")
        lengths = lengths.to(wavs.device).long()
        mel = self.mel_spectrogram(self._normalised(wavs, lengths))
        out_lengths = torch.tensor([self.num_frames(int(n)) for n in lengths.tolist()], device=wavs.device)
        states = [F.pad(mel, (0, HIDDEN - NUM_MELS))]
        lstm_out = self._lstm_layers(mel)
        states.extend(lstm_out)
        states.append(self.frame_embedding(lstm_out[-1]))
        valid = padded_lengths_mask(out_lengths, mel.shape[1])[..., None]
        return UpstreamOutput(hidden_states=[torch.where(valid, s, 0.0) for s in states], lengths=out_lengths)

    @torch.no_grad()
    def utterance_embedding(
        self, wav: torch.Tensor, rate: float = 1.3, min_coverage: float = 0.75
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Resemblyzer's ``embed_utterance`` on a 16 kHz mono ``wav`` (volume normalised here).

        Returns the L2-normalised utterance embedding ``(256,)``, the partial embeddings
        ``(P, 256)`` and the partials' frame ranges.
        """
        wav = wav.to(torch.float32).flatten()
        wav = wav * volume_gain(wav)
        slices = partial_slices(wav.numel(), rate, min_coverage)
        needed = slices[-1][1] * HOP
        if needed >= wav.numel():
            wav = F.pad(wav, (0, needed - wav.numel()))
        mel = self.mel_spectrogram(wav[None])[0]
        partials = torch.stack([mel[a:b] for a, b in slices])
        last = self._lstm_layers(partials)[-1][:, -1]
        partial_embeds = self.frame_embedding(last)
        raw = partial_embeds.mean(dim=0)
        return raw / raw.norm(), partial_embeds, slices

    def describe(self) -> dict:
        return {
            "model": "resemblyzer-0.1.4-ge2e",
            "weights_sha256": WEIGHTS.sha256,
            "sample_rate": SAMPLE_RATE,
            "volume": f"raised to {TARGET_DBFS} dBFS RMS, never lowered",
            "mel": "40 bands, Slaney, power, n_fft 400, periodic hann, hop 160, centred, zero padding",
            "layers": "mel (dims 0-39, zero padded to 256), lstm1, lstm2, lstm3, relu(linear(lstm3)) L2-normalised",
            "vad_trimming": False,
        }


def load_ge2e(source: str | None) -> Ge2eUpstream:
    if source:
        raise UpstreamError(
            f"upstream 'ge2e' reads the weights of the installed resemblyzer wheel and takes no --model (got '{source}')"
        )
    path = locate(WEIGHTS, "ge2e")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model_state"), dict):
        raise UpstreamError(f"ge2e: {path} has no 'model_state' dictionary")
    return Ge2eUpstream(checkpoint["model_state"], source=f"{WEIGHTS.distribution}=={WEIGHTS.version}:{WEIGHTS.path}")
