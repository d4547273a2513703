"""What plugins register: upstream and task specs, without importing torch.

Kept apart from :mod:`audioembed.upstream` (the ``nn.Module`` contract) so that discovering
plugins, listing them and ``--help`` never pay for importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import AudioEmbedError


class UpstreamError(AudioEmbedError, RuntimeError):
    """An upstream cannot be built or loaded; the message says what to do."""


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
