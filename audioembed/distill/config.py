"""The distillation config: one TOML or YAML file, overridable from the command line.

Why a file: a training run has too many knobs for flags, and the file is copied into the
run folder so every student records exactly how it was made. ``--set data.batch_size=8``
overrides any field; values are parsed as TOML literals (``8``, ``2e-4``, ``true``,
``["speech"]``), anything unparsable is taken as a string. Relative paths in the file are
resolved against the file's folder, never the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import AudioEmbedError


class ConfigError(AudioEmbedError, ValueError):
    """The config cannot be used; the message names the file and the field."""


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


@dataclass
class DataConfig:
    #: corpus manifests (.csv/.tsv/.jsonl with path[, id, domain]) or folders
    manifests: list[str] = field(default_factory=list)
    #: domain of items whose manifest has no 'domain' column
    default_domain: str = "speech"
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


@dataclass
class StudentConfig:
    #: "random", "teacher:NAME", "average:NAME,NAME" or a student folder (e.g. a shared init)
    init: str = "random"
    #: HubertConfig overrides, e.g. {num_hidden_layers = 2, hidden_size = 384}
    arch: dict[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    #: per-sample zero-mean unit-variance input normalisation
    normalize: bool = False
    #: "mlp", "lightconv", "shared", or a table teacher -> "mlp"/"lightconv" (hybrid)
    head: str | dict[str, str] = "mlp"


@dataclass
class LossConfig:
    #: lambda of L1 - lambda * log sigmoid(cos)
    cos_weight: float = 1.0
    #: each teacher only supervises samples of its own domains
    domain_separated: bool = False
    #: project conflicting per-teacher gradients (PCGrad)
    pcgrad: bool = False


@dataclass
class OptimConfig:
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


@dataclass
class RunConfig:
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
class DistillConfig:
    teachers: list[TeacherSpec] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: the file this came from (for messages); not part of the config
    source: str = field(default="<dict>", compare=False)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


_SECTIONS = {"data": DataConfig, "student": StudentConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}
_PATH_FIELDS = {("data", "manifests"), ("data", "cache_dir"), ("run", "output_dir")}


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses as one, else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.field=value`` strings (``teachers.0.weight=0.3`` indexes the list)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {item!r}: no list entry {part!r} in {'.'.join(parts[:i]) or 'config'}") from None
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a table")
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = parse_value(text)
            except (ValueError, IndexError):
                raise ConfigError(f"--set {item!r}: no list entry {last!r}") from None
        else:
            node[last] = parse_value(text)
    return raw


def _build(cls, values: Any, where: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        default = known[name].default
        if default is not dataclasses.MISSING and default is not None and value is not None:
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{where}.{name}: expected true or false, got {value!r}")
            if isinstance(default, float) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{where}.{name}: expected a number, got {value!r}")
                value = float(value)
            if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
                if not (isinstance(default, int) and name == "cache_crops"):
                    raise ConfigError(f"{where}.{name}: expected an integer, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _resolve(path: str, base: Path | None) -> str:
    path = os.path.expanduser(str(path))
    if base is not None and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base, path))
    return path


def config_from_dict(raw: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<dict>") -> DistillConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`DistillConfig`."""
    raw = dict(raw)
    unknown = sorted(set(raw) - set(_SECTIONS) - {"teachers"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: teachers, {', '.join(_SECTIONS)}")
    teachers_raw = raw.get("teachers") or []
    if not isinstance(teachers_raw, list) or not teachers_raw:
        raise ConfigError(f"{source}: no [[teachers]] given; a distillation needs at least one teacher")
    teachers = []
    for i, t in enumerate(teachers_raw):
        where = f"{source}: teachers[{i}]"
        if not isinstance(t, Mapping) or "name" not in t or "upstream" not in t:
            raise ConfigError(f"{where}: every teacher needs 'name' and 'upstream'")
        spec = _build(TeacherSpec, t, where)
        if spec.layers is not None and (not isinstance(spec.layers, list) or not all(isinstance(x, int) for x in spec.layers)):
            raise ConfigError(f"{where}.layers: expected a list of integers, got {spec.layers!r}")
        if isinstance(spec.domains, str):
            spec.domains = [spec.domains]
        teachers.append(spec)
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: teacher names must be unique, got {names}")
    base = Path(base_dir) if base_dir is not None else None
    sections = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _build(cls, raw.get(name) or {}, f"{source}: [{name}]")
    data, student, optim, run = sections["data"], sections["student"], sections["optim"], sections["run"]
    if isinstance(data.manifests, str):
        data.manifests = [data.manifests]
    data.manifests = [_resolve(m, base) for m in data.manifests]
    if data.cache_dir:
        data.cache_dir = _resolve(data.cache_dir, base)
    run.output_dir = _resolve(run.output_dir, base)
    if student.init not in ("random",) and not student.init.startswith(("teacher:", "average:")):
        student.init = _resolve(student.init, base)
    if optim.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"{source}: [optim] precision must be fp32, bf16 or fp16, got {optim.precision!r}")
    for field_name in ("max_steps", "accumulate"):
        if getattr(optim, field_name) < 1:
            raise ConfigError(f"{source}: [optim] {field_name} must be >= 1")
    if data.batch_size < 1:
        raise ConfigError(f"{source}: [data] batch_size must be >= 1")
    if data.crop_seconds <= 0 or data.min_seconds <= 0 or data.min_seconds > data.crop_seconds:
        raise ConfigError(f"{source}: [data] need 0 < min_seconds <= crop_seconds")
    if not (data.cache_crops == "cover" or (isinstance(data.cache_crops, int) and data.cache_crops >= 1)):
        raise ConfigError(f"{source}: [data] cache_crops must be \"cover\" or a positive integer")
    heads = student.head
    if isinstance(heads, str) and heads not in ("mlp", "lightconv", "shared"):
        raise ConfigError(f"{source}: [student] head must be mlp, lightconv, shared or a table, got {heads!r}")
    if isinstance(heads, Mapping):
        missing = sorted(set(names) - set(heads))
        bad = sorted(k for k, v in heads.items() if v not in ("mlp", "lightconv"))
        if missing or bad or set(heads) - set(names):
            raise ConfigError(f"{source}: [student] head table must give mlp or lightconv for each teacher {names}")
    if student.init.startswith("teacher:") and student.init[len("teacher:"):] not in names:
        raise ConfigError(f"{source}: [student] init {student.init!r} names no teacher (teachers: {', '.join(names)})")
    if student.init.startswith("average:"):
        pair = [p.strip() for p in student.init[len("average:"):].split(",")]
        if len(pair) != 2 or any(p not in names for p in pair):
            raise ConfigError(f"{source}: [student] init 'average:A,B' needs two teacher names from {names}")
    if data.domain_weights and any((not isinstance(v, (int, float))) or v < 0 for v in data.domain_weights.values()):
        raise ConfigError(f"{source}: [data] domain_weights must be non-negative numbers")
    return DistillConfig(teachers=teachers, source=source, **sections)


def read_raw(path: str | os.PathLike | None) -> tuple[dict, Path, str]:
    """``(raw mapping, base folder for relative paths, source name)`` of a config file (or none).

    Without a file, paths typed on the command line mean what the shell means: the base is
    the current folder.
    """
    if path is None:
        return {}, Path.cwd(), "<command line>"
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    else:
        raise ConfigError(f"{path}: config must be .toml, .yaml or .yml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a table")
    return raw, path.parent, str(path)


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> DistillConfig:
    """Read a ``.toml`` / ``.yaml`` config (or none: overrides only) and apply ``--set`` overrides."""
    raw, base_dir, source = read_raw(path)
    raw = apply_overrides(raw, list(overrides))
    return config_from_dict(raw, base_dir, source)


def dump_toml(config: DistillConfig) -> str:
    """The resolved config as TOML (written into the run folder for the record)."""

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
    lines = []
    for teacher in d.pop("teachers"):
        lines.append("[[teachers]]")
        lines += [f"{k} = {literal(v)}" for k, v in teacher.items() if v is not None]
        lines.append("")
    for section, values in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {literal(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
