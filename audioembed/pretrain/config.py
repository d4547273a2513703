"""The pretraining config: one TOML or YAML file plus ``--set`` overrides.

The file format, ``--set`` syntax and path rules are the training layer's
(:mod:`audioembed.training.config`), shared with the distillation config. ``kind`` picks the
defaults: ``"hubert"`` (speech, 16 kHz, MFCC units) or ``"mert"`` (music, 24 kHz, log-mel and
chroma units plus CQT reconstruction). A field left out takes its kind's default; a
field given explicitly always wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..training.config import ConfigError, CropDataSection, TrainerConfig, apply_overrides, build_section, read_raw, resolve_path
from ..training.config import dump_toml as dump_config_toml

KINDS = ("hubert", "mert")

#: the small teacher of the pilot: 4 x 256, 4 heads, FFN 1024, 7-layer CNN of 128 channels
#: with HuBERT's kernels and strides (hop 320), positional conv 64 / 16 groups
SMALL_TEACHER: dict[str, Any] = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    conv_dim=[128] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    feat_proj_layer_norm=True,
    num_conv_pos_embeddings=64,
    num_conv_pos_embedding_groups=16,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.0,
    feat_proj_dropout=0.1,
    final_dropout=0.0,
    layerdrop=0.0,
)

#: per-kind defaults of fields whose right value depends on the domain
KIND_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "hubert": {
        "data": {"default_domain": "speech"},
        "model": {"sample_rate": 16000, "normalize": False},
        "units": {"features": ["mfcc"], "k": 50},
        "targets": {"win": 400},  # 25 ms at 16 kHz
        "loss": {"cqt_weight": 0.0},
    },
    "mert": {
        "data": {"default_domain": "music"},
        "model": {"sample_rate": 24000, "normalize": True},
        "units": {"features": ["logmel", "chroma"], "k": 100},
        "targets": {"win": 2048},  # 85 ms at 24 kHz: semitone resolution for chroma / CQT bands
        "loss": {"cqt_weight": 1.0},
    },
}


@dataclass
class DataSection(CropDataSection):
    """The shared crop fields (``default_domain`` is informational here); crops are random
    windows of ``crop_seconds``, and shorter items are used whole, zero-padded."""


@dataclass
class ModelSection:
    #: HubertConfig overrides of :data:`SMALL_TEACHER`, e.g. {num_hidden_layers = 6}
    arch: dict[str, Any] = field(default_factory=dict)
    #: 16000 for the speech teacher, 24000 for the music teacher
    sample_rate: int = 16000
    #: per-utterance zero-mean unit-variance input (written as do_normalize)
    normalize: bool = False

    def validate(self, where: str) -> None:
        if self.sample_rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
            raise ConfigError(f"{where} sample_rate {self.sample_rate} is not a usual audio rate")
        if not isinstance(self.arch, Mapping):
            raise ConfigError(f"{where} arch must be a table of HubertConfig fields")


@dataclass
class UnitsSection:
    #: 1: k-means of DSP features; 2: k-means of a previous teacher's hidden states
    iteration: int = 1
    #: iteration 1: one codebook (and one prediction head) per feature: mfcc, logmel, chroma
    features: list[str] = field(default_factory=lambda: ["mfcc"])
    #: clusters per codebook
    k: int = 50
    #: seconds of audio (random crops, seeded) the k-means and target statistics are fitted on
    fit_seconds: float = 600.0
    #: iteration 2: the teacher folder (a `hubert` or `mert` upstream folder)
    teacher: str = ""
    #: iteration 2: hidden state of the teacher to cluster (0 = CNN + projection, N = last)
    layer: int = -1

    def validate(self, where: str) -> None:
        from .targets import FEATURES

        if isinstance(self.features, str):
            self.features = [self.features]
        if self.iteration not in (1, 2):
            raise ConfigError(f"{where} iteration must be 1 or 2")
        if self.iteration == 1:
            bad = [f for f in self.features if f not in FEATURES or f == "cqt"]
            if not self.features or bad:
                raise ConfigError(f"{where} features must be a non-empty list of mfcc, logmel, chroma (got {self.features})")
            if len(set(self.features)) != len(self.features):
                raise ConfigError(f"{where} features repeats a feature: {self.features}")
        else:
            if not self.teacher:
                raise ConfigError(f"{where} iteration 2 needs teacher = the folder of an iteration-1 teacher")
            if self.layer < 0:
                raise ConfigError(f"{where} iteration 2 needs layer = the teacher hidden state to cluster (>= 0)")
        if self.k < 2:
            raise ConfigError(f"{where} k must be >= 2")
        if self.fit_seconds <= 0:
            raise ConfigError(f"{where} fit_seconds must be > 0")


@dataclass
class TargetsSection:
    #: analysis window in samples at the model's rate, centred on each model frame
    win: int = 400
    n_mels: int = 64
    mfcc_mels: int = 23
    mfcc_coefficients: int = 13
    chroma_fmin: float = 55.0
    chroma_fmax: float = 5000.0
    #: CQT-like band energies (log, standardised): lowest centre (C1) and layout
    cqt_fmin: float = 32.70319566257483
    cqt_bands: int = 84
    cqt_bands_per_octave: int = 12

    def validate(self, where: str) -> None:
        if self.win < 16:
            raise ConfigError(f"{where} win must be at least 16 samples")


@dataclass
class MaskSection:
    #: HuBERT / transformers convention: prob / length of the valid frames start a span
    #: (0.8 / 10 = 8 % starts, about half of the frames masked after overlaps)
    prob: float = 0.8
    length: int = 10
    min_masks: int = 2

    def validate(self, where: str) -> None:
        if not 0 < self.prob <= 1 or self.length < 1 or self.min_masks < 0:
            raise ConfigError(f"{where} need 0 < prob <= 1, length >= 1, min_masks >= 0")


@dataclass
class LossSection:
    #: weight of the prediction loss on unmasked frames (HuBERT Base: 0)
    unmasked_weight: float = 0.0
    #: cosine-similarity logits are divided by this (HuBERT: 0.1)
    temperature: float = 0.1
    #: dimension of the projection and of the unit embeddings (HuBERT: final_dim)
    embed_dim: int = 256
    #: weight of the MSE reconstruction of CQT-like bands on masked frames (0 = off)
    cqt_weight: float = 0.0

    def validate(self, where: str) -> None:
        if self.temperature <= 0 or self.embed_dim < 1 or self.cqt_weight < 0 or self.unmasked_weight < 0:
            raise ConfigError(f"{where} need temperature > 0, embed_dim >= 1, non-negative weights")


@dataclass
class OptimSection:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    #: warm-up fraction of max_steps (or a step count if >= 1)
    warmup: float = 0.08
    max_steps: int = 1500
    grad_clip: float = 10.0

    def validate(self, where: str) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"{where} max_steps must be >= 1")
        if not isinstance(self.betas, list) or len(self.betas) != 2:
            raise ConfigError(f"{where} betas must be a list of two numbers")


@dataclass
class RunSection:
    #: fields that may change between a run and its resumption
    RESUMABLE = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "device", "workers"})

    output_dir: str = "runs/pretrain"
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    #: audio decoding threads feeding the loop
    workers: int = 1

    def validate(self, where: str) -> None:
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError(f"{where} checkpoint_every and log_every must be >= 1")


@dataclass
class PretrainConfig(TrainerConfig):
    kind: str = "hubert"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    units: UnitsSection = field(default_factory=UnitsSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    mask: MaskSection = field(default_factory=MaskSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    source: str = field(default="<dict>", compare=False)

    def arch(self) -> dict[str, Any]:
        """The full HubertConfig architecture: :data:`SMALL_TEACHER` with ``model.arch`` on top."""
        return {**SMALL_TEACHER, **self.model.arch}

    @property
    def unit_features(self) -> list[str]:
        """Codebook names: the DSP features (iteration 1) or ``["layerL"]`` (iteration 2)."""
        if self.units.iteration == 2:
            return [f"layer{self.units.layer}"]
        return list(self.units.features)


SECTIONS = {
    "data": DataSection,
    "model": ModelSection,
    "units": UnitsSection,
    "targets": TargetsSection,
    "mask": MaskSection,
    "loss": LossSection,
    "optim": OptimSection,
    "run": RunSection,
}


def config_from_dict(raw: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<dict>") -> PretrainConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`PretrainConfig`."""
    raw = dict(raw)
    unknown = sorted(set(raw) - set(SECTIONS) - {"kind"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: kind, {', '.join(SECTIONS)}")
    kind = raw.get("kind", "hubert")
    if kind not in KINDS:
        raise ConfigError(f"{source}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table")
        merged = {**KIND_DEFAULTS[kind].get(name, {}), **values}
        sections[name] = build_section(cls, merged, f"{source}: [{name}]")
    cfg = PretrainConfig(kind=kind, source=source, **sections)
    base = Path(base_dir) if base_dir is not None else None
    cfg.data.manifests = [resolve_path(p, base) for p in cfg.data.manifests]
    cfg.run.output_dir = resolve_path(cfg.run.output_dir, base)
    if cfg.units.teacher:
        cfg.units.teacher = resolve_path(cfg.units.teacher, base)
    return cfg


def load_config(path: str | os.PathLike | None, overrides: list[str] = (), preset: Mapping | None = None) -> PretrainConfig:
    """Read a config file (or none) and apply ``section.field=value`` overrides.

    ``preset`` (``{"kind": ..., "data": {"manifests": [...]}}``, from command-line flags)
    replaces fields of the file before the overrides are applied.

    As in the distillation config, relative paths (also those given with ``--set``) are
    relative to the file's folder, or to the current folder without a file.
    """
    raw, base, source = read_raw(path)
    for key, value in (preset or {}).items():
        if isinstance(value, Mapping):
            section = raw.setdefault(key, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            section.update(value)
        else:
            raw[key] = value
    raw = apply_overrides(raw, list(overrides))
    return config_from_dict(raw, base, source)


def dump_toml(config: PretrainConfig) -> str:
    """The resolved config as TOML (written to ``OUT/config.toml`` for the record and resume)."""
    return dump_config_toml(config.as_dict())
