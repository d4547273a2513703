"""Distilled students (DistilHuBERT-style ``HubertModel``) as upstreams.

The folder format (``audioembed_student.json`` next to a ``save_pretrained`` HubertModel) is
defined in the core, :mod:`audioembed.models.student_folder`, since the trainer writes it.

Upstreams: ``student`` (needs ``--ckpt/--model PATH``) and ``unified_student`` (the
speech + music student: ``--ckpt PATH`` if given, else the folder named by the
``AUDIOEMBED_UNIFIED_STUDENT`` environment variable, else a bundled default under
``audioembed_plugins/pretrained/unified_student/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from audioembed.models.student_folder import META_FILE, load_student
from audioembed.upstream import Upstream, UpstreamError

from .bundled import bundled_dir

ENV_UNIFIED = "AUDIOEMBED_UNIFIED_STUDENT"


def bundled_unified_student_dir() -> Path:
    return bundled_dir("unified_student")


def load_student_upstream(source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers as ``student``."""
    if not source:
        raise UpstreamError("upstream 'student' needs --ckpt/--model PATH to a student folder")
    return load_student(source, "student")


def load_unified_student(source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers as ``unified_student``."""
    if source:
        return load_student(source, "unified_student")
    env = os.environ.get(ENV_UNIFIED)
    if env:
        if not Path(os.path.expanduser(env)).is_dir():
            raise UpstreamError(f"{ENV_UNIFIED}={env} is not a folder; point it at a student folder")
        return load_student(env, "unified_student")
    bundled = bundled_unified_student_dir()
    if (bundled / META_FILE).is_file():
        return load_student(str(bundled), "unified_student")
    raise UpstreamError(
        "no bundled unified student yet: train one with `audioembed distill` (docs/distillation.md) "
        f"or pass --ckpt PATH to a student folder (or set {ENV_UNIFIED}=PATH)"
    )
