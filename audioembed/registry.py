"""Discovers upstream and task plugins from installed entry points.

Only installed entry points are trusted as plugin sources: no paths, no string ``eval``.
A plugin that fails to import is reported by name and skipped; the others keep working.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .specs import TaskSpec, UpstreamError, UpstreamSpec


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered something invalid."""


@dataclass(frozen=True)
class Registered:
    spec: UpstreamSpec | TaskSpec
    plugin: str  # entry-point name
    distribution: str  # distribution that provides the entry point


class Registry:
    """Upstreams and tasks of every installed plugin."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.upstreams: dict[str, Registered] = {}
        self.tasks: dict[str, Registered] = {}
        self.failed: dict[str, str] = {}
        self._load_entry_points()

    def _load_entry_points(self) -> None:
        for ep in sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            key = f"{dist}:{ep.name}"
            if self.manager.has_plugin(key):  # the same distribution visible twice on sys.path
                continue
            try:
                self.manager.register(ep.load(), name=key)
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(key, exc)
        # Call each implementation separately so every spec is attributed to its plugin and
        # one raising hook does not hide the others.
        for hook_name, table, kind in (
            ("audioembed_upstreams", self.upstreams, UpstreamSpec),
            ("audioembed_tasks", self.tasks, TaskSpec),
        ):
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                try:
                    specs = impl.function()
                except Exception as exc:
                    self._fail(impl.plugin_name, exc)
                    continue
                dist, _, plugin = impl.plugin_name.partition(":")
                self._add(table, specs, kind, plugin, dist)

    def _fail(self, key: str, exc: Exception) -> None:
        dist, _, plugin = key.partition(":")
        self.failed[key] = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"audioembed plugin '{plugin}' from distribution '{dist}' failed to load "
            f"and is skipped: {type(exc).__name__}: {exc}",
            PluginWarning,
            stacklevel=3,
        )

    @staticmethod
    def _add(table: dict, specs, kind: type, plugin: str, dist: str) -> None:
        for spec in specs or []:
            if not isinstance(spec, kind):
                warnings.warn(
                    f"audioembed plugin '{plugin}' ({dist}) returned {spec!r}, not a {kind.__name__}; ignored",
                    PluginWarning,
                    stacklevel=3,
                )
                continue
            for name in (spec.name, *getattr(spec, "aliases", ())):
                if name in table:
                    other = table[name]
                    warnings.warn(
                        f"{kind.__name__} '{name}' from '{plugin}' ({dist}) is already provided by "
                        f"'{other.plugin}' ({other.distribution}); keeping the first",
                        PluginWarning,
                        stacklevel=3,
                    )
                    continue
                table[name] = Registered(spec, plugin, dist)

    def upstream_spec(self, name: str) -> UpstreamSpec:
        """The spec registered as ``name``; ``unified-student`` finds ``unified_student``.

        Result files and reports spell names as registered, but users also type the dashed form
        that file names use, so both are accepted.
        """
        try:
            return self.upstreams[canonical_name(name, self.upstreams)].spec  # type: ignore[return-value]
        except KeyError:
            known = ", ".join(sorted(self.upstreams)) or "none"
            hint = ""
            if self.failed:
                hint = f"; plugins that failed to load: {', '.join(sorted(self.failed))}"
            raise UpstreamError(f"unknown upstream '{name}' (available: {known}){hint}") from None

    def task_spec(self, name: str) -> TaskSpec:
        try:
            return self.tasks[canonical_name(name, self.tasks)].spec  # type: ignore[return-value]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise KeyError(f"unknown task '{name}' (available: {known})") from None


def canonical_name(name: str, table) -> str:
    """``name`` as registered in ``table``: dashes and underscores are interchangeable."""
    if name in table:
        return name
    for candidate in (name.replace("-", "_"), name.replace("_", "-")):
        if candidate in table:
            return candidate
    return name


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    return Registry()


def load_upstream(name: str, model: str | None = None, device: str | None = "cpu") -> "Upstream":  # noqa: F821
    """Build the upstream registered as ``name`` from ``model`` (hub id or path), in eval mode.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
    """
    from .upstream import Upstream

    spec = check_upstream(name, model)
    upstream = spec.load(model)
    if not isinstance(upstream, Upstream):
        raise UpstreamError(f"upstream '{name}' loader returned {type(upstream).__name__}, not an Upstream")
    # the registered name, not the family's: files and reports must say `small_mert`, not `mert`
    upstream.name = spec.name
    upstream.eval()
    upstream.requires_grad_(False)
    return upstream.to(resolve_device(device))


def check_upstream(name: str, model: str | None = None) -> UpstreamSpec:
    """The spec of ``name``, or the error ``load_upstream`` would give, without loading weights."""
    spec = get_registry().upstream_spec(name)
    if spec.requires_source and not model:
        example = f" (e.g. --model {spec.example_source})" if spec.example_source else ""
        raise UpstreamError(f"upstream '{name}' needs --model ID|PATH{example}")
    return spec


def resolve_device(device: str | None) -> "torch.device":  # noqa: F821
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UpstreamError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return dev
