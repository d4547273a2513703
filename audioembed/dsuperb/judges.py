"""Pluggable answer judges for ``audioembed dsuperb score --judge NAME``.

The paper grades answers with an LLM judge; that needs a model or an API this toolkit should
not depend on, so judges come from plugins through the ``audioembed_dsuperb_judges`` hook (see
``audioembed.hookspecs``), discovered like upstreams: a plugin whose hook raises is reported
and skipped, the others stay usable. Example plugin module::

    from audioembed import hookimpl
    from audioembed.dsuperb.judges import JudgeSpec

    def _judge(instruction, label, response):
        ...  # ask an LLM; return 1.0 / 0.0, a graded score in [0, 1], or None (N/A)

    @hookimpl
    def audioembed_dsuperb_judges():
        return [JudgeSpec("gpt-judge", _judge, "LLM judge with the paper's prompt")]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from ..registry import PluginWarning, get_registry

HOOK_NAME = "audioembed_dsuperb_judges"


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    #: ``judge(instruction, label, response) -> float in [0, 1] | None``
    judge: Callable[[str, str, str], float | None]
    summary: str = ""


def available_judges() -> dict[str, JudgeSpec]:
    """Judges of every installed plugin by name (the first registration of a name wins)."""
    manager = get_registry().manager
    hook = getattr(manager.hook, HOOK_NAME, None)
    judges: dict[str, JudgeSpec] = {}
    if hook is None:  # pragma: no cover - the hookspec ships with audioembed
        return judges
    for impl in hook.get_hookimpls():
        try:
            specs = impl.function()
        except Exception as exc:  # one broken plugin must not hide the other judges
            warnings.warn(f"dsuperb judge plugin '{impl.plugin_name}' failed and is skipped: "
                          f"{type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
            continue
        for spec in specs or []:
            if not isinstance(spec, JudgeSpec) or not callable(spec.judge):
                warnings.warn(f"dsuperb judge plugin '{impl.plugin_name}' returned {spec!r}, not a JudgeSpec; "
                              "ignored", PluginWarning, stacklevel=2)
                continue
            judges.setdefault(spec.name, spec)
    return judges


def get_judge(name: str) -> JudgeSpec:
    judges = available_judges()
    if name not in judges:
        known = ", ".join(sorted(judges)) or "none installed"
        raise KeyError(f"unknown judge '{name}' (available: {known}); judges come from plugins implementing "
                       f"the {HOOK_NAME} hook")
    return judges[name]
