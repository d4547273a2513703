"""Text from outside (file names, utterance ids) made safe to put into a message line.

A file name may contain a newline, a carriage return or a terminal escape: printed raw it
can forge an ``audioembed:`` line of its own or hide the real one, and a name that is not
valid UTF-8 (decoded by Python into lone surrogates) crashes ``print``. Every message that
shows a path or an id passes it through :func:`printable` first.
"""

from __future__ import annotations

import os
import re

# C0 and C1 controls, DEL, Unicode line/paragraph separators, bidirectional overrides
# (which can make a line read differently from what it holds) and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: str | os.PathLike | bytes) -> str:
    """``value`` with every control or invisible-direction character escaped, on one line."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return _UNSAFE.sub(_escape, text)
