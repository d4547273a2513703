"""Layer-weighted features: the SUPERB way of reading a frozen upstream.

A learnable softmax-weighted sum over the selected hidden states, with weights initialised
to zero (uniform). The learned weights say which layers a task uses, so they are saved with
every result and can be plotted.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Featurizer(nn.Module):
    """``(L, ..., D)`` stacked layer features -> ``(..., D)`` weighted sum.

    ``layer_norm=True`` normalises each layer (no affine) before weighting; it matters for
    pre-LN models whose intermediate states are un-normalised and differ in scale by layer.
    Works the same on cached pooled features ``(L, B, D)``, cached frames ``(L, B, T, D)``
    and a live upstream's ``hidden_states`` list (see :meth:`from_hidden_states`).
    """

    def __init__(self, layers: Sequence[int], layer_norm: bool = False):
        super().__init__()
        self.layers = [int(x) for x in layers]
        self.layer_norm = layer_norm
        self.weights = nn.Parameter(torch.zeros(len(self.layers)))

    def normalized_weights(self) -> torch.Tensor:
        return F.softmax(self.weights, dim=0)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        if stacked.shape[0] != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} layers in dim 0, got {stacked.shape[0]}")
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:])
        w = self.normalized_weights().to(stacked.dtype)
        return torch.tensordot(w, stacked, dims=([0], [0]))

    def from_hidden_states(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum of a live upstream's output (``hidden_states[l]`` for l in ``layers``)."""
        return self(torch.stack([hidden_states[layer] for layer in self.layers]))

    def layer_weights(self) -> list[float]:
        """Softmax weights in ``self.layers`` order (what results files store)."""
        return [float(w) for w in self.normalized_weights().detach().cpu()]
