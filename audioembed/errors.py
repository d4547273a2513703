"""The project's error base and the one mapping from errors to what a user sees.

Every error the project raises on purpose derives from :class:`AudioEmbedError`; its message is
written for the user and fits on one line. The command line catches the base class once
(``audioembed.cli``) and asks :func:`user_message` for the line and exit code, so commands never
list the exception types of the modules they call. Module-specific subclasses also keep their
historical built-in base (``ValueError``, ``RuntimeError``), so code that caught those still works.
"""

from __future__ import annotations

import errno
import os

#: exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130
#: exit code of an error the user can fix (bad input, missing data, unwritable output)
EXIT_ERROR = 1

INTERRUPTED_MESSAGE = "interrupted: finished work is kept; rerun the same command to resume"


class AudioEmbedError(Exception):
    """Base of every error the project raises for the user; the message is one line."""

    #: process exit code when this error ends a command
    exit_code: int = EXIT_ERROR


class OutputPathError(AudioEmbedError, OSError):
    """An output path cannot be written (impossible place, a parent that is a file, read-only)."""


_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent of this path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENOENT: "no such file or folder",
}


def one_line(text: str) -> str:
    """Collapse a message to one line: newlines inside names must not forge extra output lines."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "(no message)"


def user_message(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an error that ends a command.

    Project errors carry their own message. Operating-system errors (a full disk, an
    unwritable or impossible path) are named by their file and reason instead of a traceback.
    Anything else is a bug and is not mapped (the caller lets it propagate).
    """
    if isinstance(exc, AudioEmbedError):
        return one_line(str(exc)), exc.exit_code
    if isinstance(exc, OSError):
        reason = _OS_REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
        where = exc.filename if exc.filename is not None else None
        text = f"{os.fsdecode(where)!r}: {reason}" if where is not None else reason
        return one_line(text), EXIT_ERROR
    raise TypeError(f"not a user-facing error: {type(exc).__name__}")
