"""The distillation config: one TOML or YAML file, overridable from the command line.

The file format, ``--set`` syntax and path rules are the training layer's
(:mod:`audioembed.training.config`); this module declares the sections and their checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..training.config import ConfigError, CropDataSection, TrainerConfig, apply_overrides, build_section, read_raw, resolve_path
from ..training.config import dump_toml as dump_config_toml


def default_target_layers(num_transformer_layers: int, count: int = 3) -> list[int]:
    """Teacher hidden states to predict: 4, 8, 12 for 12 layers, spread evenly otherwise.

    Index 0 is the input to the first transformer layer, so the last layer is
    ``num_transformer_layers``.
    """
    if num_transformer_layers < 1:
        raise ConfigError(f"a teacher needs at least one transformer layer, got {num_transformer_layers}")
    count = max(1, min(count, num_transformer_layers))
    return sorted({max(1, round(num_transformer_layers * (k + 1) / count)) for k in range(count)})


@dataclass
class TeacherSpec:
    """One teacher: an upstream, its target layers, its domains and its loss weight."""

    #: short label used in logs, heads and cache files, e.g. "speech"
    name: str
    #: registry name of the upstream, e.g. "hubert", "mert", "wavlm"
    upstream: str
    #: hub id or folder (``--model`` of the upstream); None for weight-free upstreams
    model: str | None = None
    #: hidden-state indices to predict; None = :func:`default_target_layers`
    layers: list[int] | None = None
    #: sample domains this teacher supervises when ``loss.domain_separated``; [] = all
    domains: list[str] = field(default_factory=list)
    #: weight of this teacher's loss in the sum over teachers
    weight: float = 1.0

    def validate(self, where: str) -> None:
        if self.layers is not None and (not isinstance(self.layers, list) or not all(isinstance(x, int) for x in self.layers)):
            raise ConfigError(f"{where}.layers: expected a list of integers, got {self.layers!r}")
        if isinstance(self.domains, str):
            self.domains = [self.domains]


@dataclass
class DataSection(CropDataSection):
    #: longest training crop; DistilHuBERT: 250,000 samples at 16 kHz
    crop_seconds: float = 15.625
    #: shorter items (or last windows) are dropped
    min_seconds: float = 1.0
    #: global batch size (all processes together, before gradient accumulation)
    batch_size: int = 24
    #: sampling probability per domain (normalised); {} = in proportion to the data
    domain_weights: dict[str, float] = field(default_factory=dict)
    #: teacher target cache folder (``audioembed distill-cache``); "" = run teachers online
    cache_dir: str = ""
    #: crops per item in the cache: "cover" tiles each item, an integer draws that many
    cache_crops: str | int = "cover"

    def validate(self, where: str) -> None:
        super().validate(where)
        if not (self.cache_crops == "cover" or (isinstance(self.cache_crops, int) and self.cache_crops >= 1)):
            raise ConfigError(f"{where} cache_crops must be \"cover\" or a positive integer")
        if self.domain_weights and any((not isinstance(v, (int, float))) or v < 0 for v in self.domain_weights.values()):
            raise ConfigError(f"{where} domain_weights must be non-negative numbers")


@dataclass
class StudentSection:
    #: "random", "teacher:NAME", "average:NAME,NAME" or a student folder (e.g. a shared init)
    init: str = "random"
    #: HubertConfig overrides, e.g. {num_hidden_layers = 2, hidden_size = 384}
    arch: dict[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    #: per-sample zero-mean unit-variance input normalisation
    normalize: bool = False
    #: "mlp", "lightconv", "shared", or a table teacher -> "mlp"/"lightconv" (hybrid)
    head: str | dict[str, str] = "mlp"

    def validate(self, where: str) -> None:
        if isinstance(self.head, str) and self.head not in ("mlp", "lightconv", "shared"):
            raise ConfigError(f"{where} head must be mlp, lightconv, shared or a table, got {self.head!r}")

    def check_teachers(self, names: list[str], where: str) -> None:
        """The fields that name teachers (``head`` table, ``init``) must name real ones."""
        if isinstance(self.head, Mapping):
            missing = sorted(set(names) - set(self.head))
            bad = sorted(k for k, v in self.head.items() if v not in ("mlp", "lightconv"))
            if missing or bad or set(self.head) - set(names):
                raise ConfigError(f"{where} head table must give mlp or lightconv for each teacher {names}")
        if self.init.startswith("teacher:") and self.init[len("teacher:"):] not in names:
            raise ConfigError(f"{where} init {self.init!r} names no teacher (teachers: {', '.join(names)})")
        if self.init.startswith("average:"):
            pair = [p.strip() for p in self.init[len("average:"):].split(",")]
            if len(pair) != 2 or any(p not in names for p in pair):
                raise ConfigError(f"{where} init 'average:A,B' needs two teacher names from {names}")


@dataclass
class LossSection:
    #: lambda of L1 - lambda * log sigmoid(cos)
    cos_weight: float = 1.0
    #: each teacher only supervises samples of its own domains
    domain_separated: bool = False
    #: project conflicting per-teacher gradients (PCGrad)
    pcgrad: bool = False


@dataclass
class OptimSection:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-6
    #: warm-up fraction of max_steps (or a step count if >= 1)
    warmup: float = 0.07
    max_steps: int = 200_000
    grad_clip: float = 5.0
    #: micro-batches per optimiser step
    accumulate: int = 1
    #: "fp32", "bf16" or "fp16" (autocast; CUDA only, fp32 elsewhere)
    precision: str = "fp32"

    def validate(self, where: str) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{where} precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("max_steps", "accumulate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where} {name} must be >= 1")


@dataclass
class RunSection:
    #: fields that may change between a run and its resumption
    RESUMABLE = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "tensorboard", "device", "workers"})

    #: run folder: checkpoints, logs, final student
    output_dir: str = "runs/distill"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    device: str = "auto"
    #: audio decoding threads feeding the loop
    workers: int = 1


@dataclass
class DistillConfig(TrainerConfig):
    teachers: list[TeacherSpec] = field(default_factory=list)
    data: DataSection = field(default_factory=DataSection)
    student: StudentSection = field(default_factory=StudentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    #: the file this came from (for messages); not part of the config
    source: str = field(default="<dict>", compare=False)


SECTIONS = {"data": DataSection, "student": StudentSection, "loss": LossSection, "optim": OptimSection, "run": RunSection}


def config_from_dict(raw: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<dict>") -> DistillConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`DistillConfig`."""
    raw = dict(raw)
    unknown = sorted(set(raw) - set(SECTIONS) - {"teachers"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: teachers, {', '.join(SECTIONS)}")
    teachers_raw = raw.get("teachers") or []
    if not isinstance(teachers_raw, list) or not teachers_raw:
        raise ConfigError(f"{source}: no [[teachers]] given; a distillation needs at least one teacher")
    teachers = []
    for i, t in enumerate(teachers_raw):
        where = f"{source}: teachers[{i}]"
        if not isinstance(t, Mapping) or "name" not in t or "upstream" not in t:
            raise ConfigError(f"{where}: every teacher needs 'name' and 'upstream'")
        teachers.append(build_section(TeacherSpec, t, where))
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: teacher names must be unique, got {names}")
    base = Path(base_dir) if base_dir is not None else None
    sections = {}
    for name, cls in SECTIONS.items():
        loose = ("cache_crops",) if name == "data" else ()
        sections[name] = build_section(cls, raw.get(name) or {}, f"{source}: [{name}]", loose_ints=loose)
    data, student, run = sections["data"], sections["student"], sections["run"]
    data.manifests = [resolve_path(m, base) for m in data.manifests]
    if data.cache_dir:
        data.cache_dir = resolve_path(data.cache_dir, base)
    run.output_dir = resolve_path(run.output_dir, base)
    if student.init not in ("random",) and not student.init.startswith(("teacher:", "average:")):
        student.init = resolve_path(student.init, base)
    student.check_teachers(names, f"{source}: [student]")
    return DistillConfig(teachers=teachers, source=source, **sections)


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> DistillConfig:
    """Read a ``.toml`` / ``.yaml`` config (or none: overrides only) and apply ``--set`` overrides."""
    raw, base_dir, source = read_raw(path)
    raw = apply_overrides(raw, list(overrides))
    return config_from_dict(raw, base_dir, source)


def dump_toml(config: DistillConfig) -> str:
    """The resolved config as TOML (written into the run folder for the record)."""
    return dump_config_toml(config.as_dict())
