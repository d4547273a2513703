"""The teachers of a distillation, loaded and frozen, with their target layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import load_upstream
from ..training.config import ConfigError
from ..upstream import Upstream
from .config import DistillConfig, TeacherSpec, default_target_layers


@dataclass
class Teacher:
    """A teacher as the loop sees it: its spec, target layers, rates, and (online) its model."""

    spec: TeacherSpec
    layers: list[int]
    sample_rate: int
    hop_length: int
    hidden_size: int
    upstream: Upstream | None
    weights_hash: str

    def describe(self) -> dict:
        return {
            "name": self.spec.name,
            "upstream": self.spec.upstream,
            "model": self.spec.model,
            "layers": self.layers,
            "domains": list(self.spec.domains),
            "weight": self.spec.weight,
            "sample_rate": self.sample_rate,
            "frame_rate": self.sample_rate / self.hop_length,
            "hidden_size": self.hidden_size,
            "weights_hash": self.weights_hash,
        }


def load_teachers(config: DistillConfig, device: torch.device) -> list[Teacher]:
    """Every ``[[teachers]]`` upstream on ``device``, in eval mode, without gradients."""
    teachers = []
    for spec in config.teachers:
        upstream = load_upstream(spec.upstream, model=spec.model, device=str(device))
        upstream.eval()
        for p in upstream.parameters():
            p.requires_grad_(False)
        depth = upstream.num_layers - 1
        layers = list(spec.layers) if spec.layers is not None else default_target_layers(depth)
        bad = [i for i in layers if not 0 <= i < upstream.num_layers]
        if bad:
            raise ConfigError(
                f"{config.source}: teacher '{spec.name}' has hidden states 0..{upstream.num_layers - 1}; "
                f"target layers {bad} do not exist"
            )
        teachers.append(
            Teacher(spec, layers, upstream.sample_rate, upstream.hop_length, upstream.hidden_size, upstream, upstream.weights_hash())
        )
    return teachers
