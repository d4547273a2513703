"""DistilHuBERT's loss, L1 - lambda * log sigmoid(cos), kept per sample and per target layer.

Why per sample: the trainer averages samples with a global count, which makes data-parallel
training (and micro-batching) exactly equal to one process with the same global batch; a
mean over all frames of a padded batch would weight samples by length and depend on the split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_terms(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and -log sigmoid(cos) terms, each ``(B, K)``, averaged over each sample's valid frames.

    Computed in float32 whatever the input dtype (fp16 sums over long crops lose precision);
    padding frames are excluded with ``where`` so even NaN/inf there cannot leak; an empty
    sample gives 0.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must both be (B, K, T, D); got {tuple(pred.shape)} and {tuple(target.shape)}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t = pred.float(), target.float()
        frames = p.shape[2]
        lengths = lengths.to(p.device).clamp(0, frames)
        valid = (torch.arange(frames, device=p.device)[None, :] < lengths[:, None])[:, None, :]  # (B,1,T)
        denom = lengths.clamp(min=1).to(torch.float32)[:, None]  # (B,1)
        l1 = torch.where(valid, (p - t).abs().mean(dim=-1), 0.0).sum(dim=-1) / denom
        cos = -F.logsigmoid(F.cosine_similarity(p, t, dim=-1))
        cos = torch.where(valid, cos, 0.0).sum(dim=-1) / denom
    return l1, cos


def combine(l1: torch.Tensor, cos: torch.Tensor, cos_weight: float = 1.0) -> torch.Tensor:
    """Per-sample loss ``(B,)``: target layers are summed, as in DistilHuBERT."""
    return (l1 + cos_weight * cos).sum(dim=-1)
