"""The ``example_energy`` upstream: frame log-energy and zero-crossing rate.

Layer 0 holds the raw frame values, layer 1 the same values smoothed over +-1 frame, so the
upstream has the two hidden states a probe can compare. This module imports torch; the
package's ``__init__`` registers it without importing it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audioembed import Upstream, UpstreamOutput

__all__ = ["EnergyUpstream", "load_energy"]

WIN = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


class EnergyUpstream(Upstream):
    """Frame log-energy and zero-crossing rate (2 dims), 2 layers, 100 frames/s."""

    name = "example_energy"
    sample_rate = 16000
    hop_length = HOP
    num_layers = 2
    hidden_size = 2
    # Frames read [160 t, 160 t + 400); layer 1 also looks one frame either side:
    # left 160, right 160 + 240 = 400 samples, rounded up to a whole hop.
    context_samples = 480
    source = None

    def num_frames(self, num_samples: int) -> int:
        return (num_samples - WIN) // HOP + 1

    def _frame_features(self, wav: torch.Tensor) -> torch.Tensor:  # (n,) -> (T, 2)
        frames = wav.unfold(0, WIN, HOP)
        energy = frames.square().sum(dim=1).clamp_min(1e-10).log()
        signs = torch.signbit(frames)
        zcr = (signs[:, 1:] != signs[:, :-1]).float().mean(dim=1)
        return torch.stack([energy, zcr], dim=1)

    @staticmethod
    def _smooth(feats: torch.Tensor) -> torch.Tensor:  # +-1 frame mean, ends replicated
        padded = F.pad(feats.t().unsqueeze(0), (1, 1), mode="replicate")[0]
        return F.avg_pool1d(padded.unsqueeze(0), kernel_size=3, stride=1)[0].t()

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:
        layers = [[], []]
        for b in range(wavs.shape[0]):
            n = int(lengths[b])
            if self.num_frames(n) <= 0:
                raw = wavs.new_zeros(0, self.hidden_size)
                smooth = raw
            else:
                # only the valid samples: an item gives the same output alone or in a batch
                raw = self._frame_features(wavs[b, :n].float())
                smooth = self._smooth(raw)
            layers[0].append(raw)
            layers[1].append(smooth)
        out_lengths = torch.tensor([f.shape[0] for f in layers[0]], dtype=torch.long)
        max_t = int(out_lengths.max()) if len(out_lengths) else 0
        hidden = []
        for items in layers:
            h = wavs.new_zeros(len(items), max_t, self.hidden_size, dtype=torch.float32)
            for b, f in enumerate(items):
                h[b, : f.shape[0]] = f
            hidden.append(h)
        return UpstreamOutput(hidden_states=hidden, lengths=out_lengths.to(wavs.device))

    def describe(self) -> dict:
        return {"feature": "log_energy+zcr", "win_length": WIN, "hop_length": HOP, "smoothing": 3}


def load_energy(source: str | None) -> Upstream:
    """The loader registered for ``example_energy`` (weight-free, so ``source`` is unused)."""
    return EnergyUpstream()
