"""Config files of the trainers and the recipe: one TOML or YAML file plus ``--set`` overrides.

Why a file: a training run has too many knobs for flags, and the file is copied into the
run folder so every model records exactly how it was made. ``--set data.batch_size=8``
overrides any field; values are parsed as TOML literals (``8``, ``2e-4``, ``true``,
``["speech"]``), anything unparsable is taken as a string. Relative paths in the file are
resolved against the file's folder, never the current directory.

Each config is a dataclass of section dataclasses; :func:`build_section` checks names and
types against the dataclass, and a section's own ``validate(where)`` checks its values, so
the rules sit next to the fields they constrain.
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


def build_section(cls, values: Any, where: str, *, loose_ints: tuple[str, ...] = ()):
    """``cls(**values)`` after checking names and the types the defaults imply.

    A field whose default is a bool, int or float only takes that type (an int is accepted
    for a float and converted); ``loose_ints`` names int fields that also take other values
    (their section's ``validate`` checks them).
    """
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
                if name not in loose_ints:
                    raise ConfigError(f"{where}.{name}: expected an integer, got {value!r}")
        kwargs[name] = value
    section = cls(**kwargs)
    validate = getattr(section, "validate", None)
    if validate is not None:
        validate(where)
    return section


def resolve_path(path: str, base: Path | None) -> str:
    """``path`` with ``~`` expanded, relative to ``base`` (the config file's folder)."""
    path = os.path.expanduser(str(path))
    if base is not None and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base, path))
    return path


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


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_literal(str(k))} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(values: Mapping[str, Any]) -> str:
    """A config's ``as_dict()`` as TOML: top-level values first, lists of tables as
    ``[[name]]`` blocks, then one ``[section]`` per table; ``None`` fields are left out."""
    scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping) and not _is_table_list(v)}
    lines = [f"{k} = {toml_literal(v)}" for k, v in scalars.items() if v is not None]
    if lines:
        lines.append("")
    for name, value in values.items():
        if _is_table_list(value):
            for entry in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {toml_literal(v)}" for k, v in entry.items() if v is not None]
                lines.append("")
    for name, value in values.items():
        if isinstance(value, Mapping):
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_literal(v)}" for k, v in value.items() if v is not None]
            lines.append("")
    return "\n".join(lines)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def config_identity(config_dict: dict, resumable: set[str]) -> dict:
    """``config_dict`` without the ``[run]`` fields that may change between a run and its resumption."""
    d = dict(config_dict)
    d["run"] = {k: v for k, v in d["run"].items() if k not in resumable}
    return d


class TrainerConfig:
    """What the configs of the trainers (``DistillConfig``, ``PretrainConfig``) share.

    A subclass is a dataclass with a ``source`` field (the file it came from, for messages; no
    part of the config) and a ``run`` section whose ``RESUMABLE`` fields may change between a
    run and its resumption.
    """

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out

    def identity(self) -> dict:
        """What makes two configs the same run (``as_dict`` without resumable run settings)."""
        return config_identity(self.as_dict(), self.run.RESUMABLE)


def config_differences(a: dict, b: dict) -> list[str]:
    """Names of the fields (``section.field``, or a top-level name) where two config dicts differ."""
    diffs = [s for s in b if not isinstance(b[s], dict) and a.get(s) != b[s]]
    diffs += [f"{s}.{k}" for s in b if isinstance(b[s], dict) for k in b[s] if (a.get(s) or {}).get(k) != b[s][k]]
    return diffs


@dataclass
class CropDataSection:
    """The ``[data]`` fields every trainer reads: audio from manifests, cut into random crops.

    Each trainer's ``DataSection`` derives from it, sets its own defaults and says how it uses
    crops (the distillation drops shorter items, pretraining pads them).
    """

    #: corpus manifests (.csv/.tsv/.jsonl with a path column, optionally id and domain) or folders
    manifests: list[str] = field(default_factory=list)
    #: domain of items whose manifest has no 'domain' column
    default_domain: str = "speech"
    #: length of a training crop
    crop_seconds: float = 4.0
    #: shorter items are skipped
    min_seconds: float = 1.0
    #: items per optimiser step
    batch_size: int = 8

    def validate(self, where: str) -> None:
        if isinstance(self.manifests, str):
            self.manifests = [self.manifests]
        if self.batch_size < 1:
            raise ConfigError(f"{where} batch_size must be >= 1")
        if self.crop_seconds <= 0 or self.min_seconds <= 0 or self.min_seconds > self.crop_seconds:
            raise ConfigError(f"{where} need 0 < min_seconds <= crop_seconds")
