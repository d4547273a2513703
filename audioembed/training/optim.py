"""AdamW with a linear warm-up and a linear decay to zero, as DistilHuBERT and HuBERT train."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class OptimSettings(Protocol):
    """The ``[optim]`` fields the optimiser reads (both trainers' sections have them)."""

    lr: float
    betas: list[float]
    eps: float
    weight_decay: float
    warmup: float
    max_steps: int


def warmup_steps(optim: OptimSettings) -> int:
    """``warmup`` as a step count: a fraction of ``max_steps`` below 1, else a count."""
    w = optim.warmup
    return int(w) if w >= 1 else int(round(w * optim.max_steps))


def make_optimizer(optim: OptimSettings, model: nn.Module):
    """``(AdamW over the trainable parameters, its LambdaLR schedule)``."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay,
    )
    warm, total = warmup_steps(optim), optim.max_steps

    def factor(step: int) -> float:  # step = optimiser steps taken so far
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
