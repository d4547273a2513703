"""Prediction heads: student frames -> predictions of a teacher's target layers.

Heads only exist to give the distillation loss something to compare; they are dropped after
training (task vectors ignore them too). Designs follow METHODS.md sections 1-2: the
DistilHuBERT "expand-last" MLP, paper A's light-conv head, a per-teacher hybrid of the two,
and one head shared by all teachers.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

KINDS = ("mlp", "lightconv")


def _valid_mask(lengths: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    return torch.arange(frames, device=device)[None, :] < lengths.to(device)[:, None]


class PredictionHead(nn.Module):
    """One head predicting ``num_targets`` layers of one teacher; output ``(B, K, T, Dt)``."""

    def __init__(self, student_dim: int, teacher_dim: int, num_targets: int, kind: str = "mlp"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"head kind must be one of {KINDS}, got {kind!r}")
        if num_targets < 1:
            raise ValueError(f"a head needs at least one target layer, got {num_targets}")
        self.kind = kind
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.num_targets = num_targets
        if kind == "mlp":
            # DistilHuBERT: expand once, then one small linear per target layer on its own chunk
            self.expand = nn.Linear(student_dim, student_dim * num_targets)
            self.act = nn.GELU()
            self.outputs = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(num_targets))
        else:
            self.proj = nn.Linear(student_dim, student_dim)
            self.act = nn.GELU()
            self.norm = nn.LayerNorm(student_dim)
            self.conv = nn.Conv1d(student_dim, student_dim, kernel_size=3, padding=1)
            self.relu = nn.ReLU()
            self.out = nn.Linear(student_dim, teacher_dim * num_targets)
            self.out_norm = nn.LayerNorm(teacher_dim * num_targets)
            self.out_act = nn.GELU()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        k = self.num_targets
        if self.kind == "mlp":
            # frame-local: padding cannot leak, so lengths are not needed
            h = self.act(self.expand(x)).view(b, t, k, self.student_dim)
            return torch.stack([layer(h[:, :, i]) for i, layer in enumerate(self.outputs)], dim=1)
        h = self.norm(self.act(self.proj(x)))
        if lengths is not None:
            # the conv is the only op mixing frames: zero padding so a padded batch sees exactly
            # what the conv's own zero padding gives an item run alone
            h = h.masked_fill(~_valid_mask(lengths, t, h.device)[:, :, None], 0.0)
        h = self.relu(self.conv(h.transpose(1, 2)).transpose(1, 2))
        h = self.out_act(self.out_norm(self.out(h)))
        return h.view(b, t, k, self.teacher_dim).permute(0, 2, 1, 3)


class PredictionHeads(nn.Module):
    """All teachers' heads under one module, so the trainer saves/loads them as one state dict."""

    def __init__(self, student_dim: int, teachers: Mapping[str, tuple[int, int]], design: str | Mapping[str, str] = "mlp"):
        super().__init__()
        if not teachers:
            raise ValueError("PredictionHeads needs at least one teacher")
        for name in teachers:
            if not name or "." in name:
                raise ValueError(f"teacher name {name!r} cannot key a head (empty or contains '.')")
        self.teachers = {name: (int(dim), int(k)) for name, (dim, k) in teachers.items()}
        names = list(self.teachers)
        self.heads = nn.ModuleDict()
        if isinstance(design, str) and design == "shared":
            specs = set(self.teachers.values())
            if len(specs) != 1:
                got = ", ".join(f"{n}=(dim {d}, {k} targets)" for n, (d, k) in self.teachers.items())
                raise ValueError(f"a shared head needs every teacher to have the same dim and number of target layers; got {got}")
            dim, k = specs.pop()
            self.design: str | dict[str, str] = "shared"
            self.heads["shared"] = PredictionHead(student_dim, dim, k, "mlp")
            return
        if isinstance(design, str):
            if design not in KINDS:
                raise ValueError(f"head design must be 'mlp', 'lightconv', 'shared' or a dict teacher -> kind, got {design!r}")
            kinds = {name: design for name in names}
        elif isinstance(design, Mapping):
            missing = [n for n in names if n not in design]
            extra = [n for n in design if n not in self.teachers]
            bad = {n: v for n, v in design.items() if v not in KINDS}
            if missing or extra or bad:
                raise ValueError(
                    f"hybrid head design must give 'mlp' or 'lightconv' for each teacher {names}; "
                    f"missing {missing}, unknown {extra}, bad kinds {bad}"
                )
            kinds = {name: design[name] for name in names}
        else:
            raise ValueError(f"head design must be a string or a dict teacher -> kind, got {type(design).__name__}")
        self.design = kinds
        for name, (dim, k) in self.teachers.items():
            self.heads[name] = PredictionHead(student_dim, dim, k, kinds[name])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.design == "shared":
            out = self.heads["shared"](x, lengths)
            return {name: out for name in self.teachers}
        return {name: self.heads[name](x, lengths) for name in self.teachers}
