"""What plugins register: upstream and task specs, without importing torch.

Kept apart from :mod:`audioembed.upstream` (the ``nn.Module`` contract) so that discovering
plugins, listing them and ``--help`` never pay for importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from .errors import AudioEmbedError


class UpstreamError(AudioEmbedError, RuntimeError):
    """An upstream cannot be built or loaded; the message says what to do."""


class PluginImportError(AudioEmbedError, ImportError):
    """The module a :class:`LazyImport` names cannot be imported (e.g. an optional dependency is missing)."""


class LazyImport:
    """A callable named ``"package.module:attribute"``, imported only when it is first called.

    Plugins register ``UpstreamSpec(load=LazyImport(...))`` and ``TaskSpec(build=LazyImport(...))``
    so that discovering and listing plugins imports none of their implementation (torch,
    transformers, onnx, ...): ``audioembed plugins`` then starts in a fraction of a second.
    Leading ``args`` are bound like :func:`functools.partial`, so one loader can serve a family
    (``LazyImport("pkg.models:load_family", "small")(source)`` calls ``load_family("small", source)``).
    """

    __slots__ = ("target", "args")

    def __init__(self, target: str, *args: object) -> None:
        module, sep, attribute = target.partition(":")
        if not sep or not module or not all(part.isidentifier() for part in (*module.split("."), attribute)):
            raise ValueError(f"LazyImport target must read 'package.module:attribute', got {target!r}")
        self.target = target
        self.args = args

    def resolve(self) -> Callable:
        """The named callable; importing its module happens here, once (Python caches modules)."""
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginImportError(f"cannot import {module_name} (for {self.target}): {exc}") from exc
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise PluginImportError(f"{module_name} has no '{attribute}' (for {self.target})") from None

    def __call__(self, *args, **kwargs):
        return self.resolve()(*self.args, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LazyImport) and (self.target, self.args) == (other.target, other.args)

    def __hash__(self) -> int:
        return hash((self.target, self.args))

    def __repr__(self) -> str:
        bound = "".join(f", {arg!r}" for arg in self.args)
        return f"LazyImport({self.target!r}{bound})"


@dataclass(frozen=True)
class UpstreamSpec:
    """What a plugin registers for one upstream name.

    ``load(source)`` builds the upstream; ``source`` is the ``--model``/``--ckpt`` value
    (hub id or path) or ``None``.
    """

    name: str
    load: Callable[[str | None], Upstream]
    summary: str
    #: True when ``load`` cannot work without a ``source``
    requires_source: bool = False
    #: example source shown in help texts
    example_source: str | None = None
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class TaskSpec:
    """What a plugin registers for one downstream task.

    ``build()`` returns the task object; its interface is defined by the downstream runner.
    """

    name: str
    build: Callable[[], object]
    summary: str
