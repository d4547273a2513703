"""The pretraining config: one TOML or YAML file plus ``--set`` overrides.

The file format, ``--set`` syntax and validation messages are those of the distillation
config (:mod:`audioembed.distill.config`, whose helpers are reused). ``kind`` picks the
defaults: ``"hubert"`` (speech, 16 kHz, MFCC units) or ``"mert"`` (music, 24 kHz, log-mel and
chroma units plus CQT reconstruction). A field left out takes its kind's default; a
field given explicitly always wins.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..distill.config import ConfigError, _build, apply_overrides, read_raw

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
class DataConfig:
    #: corpus manifests (.csv/.tsv/.jsonl with a path column) or folders
    manifests: list[str] = field(default_factory=list)
    #: domain recorded for items without a 'domain' column (informational)
    default_domain: str = "speech"
    #: random training crops of this length (shorter items are used whole, zero-padded)
    crop_seconds: float = 4.0
    #: shorter items are skipped
    min_seconds: float = 1.0
    batch_size: int = 8


@dataclass
class ModelConfig:
    #: HubertConfig overrides of :data:`SMALL_TEACHER`, e.g. {num_hidden_layers = 6}
    arch: dict[str, Any] = field(default_factory=dict)
    #: 16000 for the speech teacher, 24000 for the music teacher
    sample_rate: int = 16000
    #: per-utterance zero-mean unit-variance input (written as do_normalize)
    normalize: bool = False


@dataclass
class UnitsConfig:
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


@dataclass
class TargetsConfig:
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


@dataclass
class MaskConfig:
    #: HuBERT / transformers convention: prob / length of the valid frames start a span
    #: (0.8 / 10 = 8 % starts, about half of the frames masked after overlaps)
    prob: float = 0.8
    length: int = 10
    min_masks: int = 2


@dataclass
class LossConfig:
    #: weight of the prediction loss on unmasked frames (HuBERT Base: 0)
    unmasked_weight: float = 0.0
    #: cosine-similarity logits are divided by this (HuBERT: 0.1)
    temperature: float = 0.1
    #: dimension of the projection and of the unit embeddings (HuBERT: final_dim)
    embed_dim: int = 256
    #: weight of the MSE reconstruction of CQT-like bands on masked frames (0 = off)
    cqt_weight: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    #: warm-up fraction of max_steps (or a step count if >= 1)
    warmup: float = 0.08
    max_steps: int = 1500
    grad_clip: float = 10.0


@dataclass
class RunConfig:
    output_dir: str = "runs/pretrain"
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    #: audio decoding threads feeding the loop
    workers: int = 1


@dataclass
class PretrainConfig:
    kind: str = "hubert"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    units: UnitsConfig = field(default_factory=UnitsConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    source: str = field(default="<dict>", compare=False)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out

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
    "data": DataConfig,
    "model": ModelConfig,
    "units": UnitsConfig,
    "targets": TargetsConfig,
    "mask": MaskConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


def _resolve(path: str, base: Path | None) -> str:
    path = os.path.expanduser(str(path))
    if base is not None and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base, path))
    return path


def config_from_dict(raw: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<dict>") -> PretrainConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`PretrainConfig`."""
    from .targets import FEATURES

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
        sections[name] = _build(cls, merged, f"{source}: [{name}]")
    cfg = PretrainConfig(kind=kind, source=source, **sections)
    base = Path(base_dir) if base_dir is not None else None
    d, u, m, o, r = cfg.data, cfg.units, cfg.model, cfg.optim, cfg.run
    if isinstance(d.manifests, str):
        d.manifests = [d.manifests]
    d.manifests = [_resolve(p, base) for p in d.manifests]
    r.output_dir = _resolve(r.output_dir, base)
    if u.teacher:
        u.teacher = _resolve(u.teacher, base)
    if isinstance(u.features, str):
        u.features = [u.features]
    if d.batch_size < 1:
        raise ConfigError(f"{source}: [data] batch_size must be >= 1")
    if d.crop_seconds <= 0 or d.min_seconds <= 0 or d.min_seconds > d.crop_seconds:
        raise ConfigError(f"{source}: [data] need 0 < min_seconds <= crop_seconds")
    if m.sample_rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        raise ConfigError(f"{source}: [model] sample_rate {m.sample_rate} is not a usual audio rate")
    if not isinstance(m.arch, Mapping):
        raise ConfigError(f"{source}: [model] arch must be a table of HubertConfig fields")
    if u.iteration not in (1, 2):
        raise ConfigError(f"{source}: [units] iteration must be 1 or 2")
    if u.iteration == 1:
        bad = [f for f in u.features if f not in FEATURES or f == "cqt"]
        if not u.features or bad:
            raise ConfigError(f"{source}: [units] features must be a non-empty list of mfcc, logmel, chroma (got {u.features})")
        if len(set(u.features)) != len(u.features):
            raise ConfigError(f"{source}: [units] features repeats a feature: {u.features}")
    else:
        if not u.teacher:
            raise ConfigError(f"{source}: [units] iteration 2 needs teacher = the folder of an iteration-1 teacher")
        if u.layer < 0:
            raise ConfigError(f"{source}: [units] iteration 2 needs layer = the teacher hidden state to cluster (>= 0)")
    if u.k < 2:
        raise ConfigError(f"{source}: [units] k must be >= 2")
    if u.fit_seconds <= 0:
        raise ConfigError(f"{source}: [units] fit_seconds must be > 0")
    if not 0 < cfg.mask.prob <= 1 or cfg.mask.length < 1 or cfg.mask.min_masks < 0:
        raise ConfigError(f"{source}: [mask] need 0 < prob <= 1, length >= 1, min_masks >= 0")
    if cfg.loss.temperature <= 0 or cfg.loss.embed_dim < 1 or cfg.loss.cqt_weight < 0 or cfg.loss.unmasked_weight < 0:
        raise ConfigError(f"{source}: [loss] need temperature > 0, embed_dim >= 1, non-negative weights")
    if o.max_steps < 1:
        raise ConfigError(f"{source}: [optim] max_steps must be >= 1")
    if not isinstance(o.betas, list) or len(o.betas) != 2:
        raise ConfigError(f"{source}: [optim] betas must be a list of two numbers")
    if r.checkpoint_every < 1 or r.log_every < 1:
        raise ConfigError(f"{source}: [run] checkpoint_every and log_every must be >= 1")
    if cfg.targets.win < 16:
        raise ConfigError(f"{source}: [targets] win must be at least 16 samples")
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

    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{literal(str(k))} = {literal(v)}" for k, v in value.items()) + "}"
        raise TypeError(f"cannot write {value!r} as TOML")

    d = config.as_dict()
    lines = [f"kind = {literal(d.pop('kind'))}", ""]
    for section, values in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {literal(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
