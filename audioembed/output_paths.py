"""Checks that an output path can be written, before any work is done.

A run that computes for minutes and then fails to open its output (``-o /proc/x.h5``, a parent
that is a file, a read-only place) wastes the work and shows a traceback; these checks say in
one line what is wrong with the path instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputPathError


def _first_existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(path.anchor or ".")


def _check_parent(path: Path, what: str) -> None:
    parent = _first_existing_parent(path)
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {str(path)!r}: cannot create files in {str(parent)!r} (read-only or no permission)")
    probe = parent / f".audioembed-write-test-{os.getpid()}"
    try:  # os.access says yes on read-only mounts and pseudo file systems such as /proc
        probe.mkdir()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(f"{what} {str(path)!r}: cannot create files in {str(parent)!r} ({reason})") from None
    probe.rmdir()


def check_output_file(path: str | os.PathLike, what: str = "output") -> None:
    """Raise :class:`OutputPathError` unless ``path`` is, or can become, a writable file."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a folder; give a file name, e.g. {str(path / 'features.h5')!r}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{what} {str(path)!r} is not writable")
        return
    _check_parent(path, what)


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """Raise :class:`OutputPathError` unless ``path`` is, or can become, a writable folder."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{what} {str(path)!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {str(path)!r} is not writable")
        return
    _check_parent(path, what)
