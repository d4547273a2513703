"""The upstream contract: one interface for every model that turns audio into hidden states.

Everything downstream of an upstream (extraction, the feature store, probes, distillation)
only relies on what is declared here, so a new model family is a new plugin, never a change
to the core. Frame rates and sample rates are explicit attributes because a toolkit that
assumes 16 kHz / 50 Hz silently misaligns MERT-v1 (24 kHz, 75 Hz) and DSP baselines (100 Hz).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

# the registration records live in a torch-free module so listing plugins stays fast;
# they are re-exported here, where plugins have always imported them from
from .specs import TaskSpec, UpstreamError, UpstreamSpec  # noqa: F401


@dataclass
class UpstreamOutput:
    """Hidden states of one batch.

    ``hidden_states[l]`` is ``(B, T', D)``; frames ``>= lengths[b]`` of item ``b`` are padding
    and carry no meaning. For transformer models index 0 is the input to the first layer.
    """

    hidden_states: list[torch.Tensor]
    lengths: torch.Tensor


class Upstream(nn.Module):
    """Base class of all upstreams.

    Subclasses set the declared attributes in ``__init__`` and implement :meth:`forward` and
    :meth:`num_frames`. ``forward`` receives raw mono waveforms at ``self.sample_rate``
    (the core resamples); any model-specific preprocessing (e.g. per-utterance
    normalisation) happens inside ``forward`` and must only look at the valid samples,
    so that an item gives the same hidden states alone and inside a padded batch.
    """

    #: registry name, e.g. ``"hubert"``
    name: str = ""
    #: input sample rate in Hz
    sample_rate: int = 16000
    #: samples between consecutive output frames
    hop_length: int = 320
    #: number of hidden-state tensors ``forward`` returns (layer 0 included)
    num_layers: int = 1
    #: feature dimension D of every hidden state
    hidden_size: int = 0
    #: samples of left/right context given to each window when a long file is processed in
    #: windows. Models without global context declare their exact receptive field here, so
    #: windowed output equals whole-file output; transformers declare a pragmatic amount.
    context_samples: int = 0
    #: hub id or folder the weights came from (``None`` for weight-free upstreams)
    source: str | None = None

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Valid output frames for an input of ``num_samples`` samples (may be <= 0)."""
        raise NotImplementedError

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> UpstreamOutput:  # noqa: D401
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Upstream":
        # Upstreams are feature extractors: dropout/layerdrop must never change the output
        # or the number of layers, whatever a caller does with .train().
        return super().train(False)

    def describe(self) -> dict:
        """Settings that identify the features this upstream produces (stored in files)."""
        return {}

    def weights_hash(self) -> str:
        """Content hash of the parameters and buffers plus :meth:`describe`.

        Used to key feature caches: two files with the same hash were made by the same weights.
        """
        digest = hashlib.sha256()
        digest.update(type(self).__qualname__.encode())
        digest.update(repr(sorted(self.describe().items())).encode())
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            t = tensor.detach().cpu().contiguous()
            digest.update(str(t.dtype).encode())
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()[:16]


def padded_lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean ``(B, max_len)`` mask, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
