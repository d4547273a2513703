"""Turning command-line inputs (folders, manifests, files) into an explicit list of items.

Every item gets a stable, collision-free id because the id is the key features are stored
under: two files that map to the same id would silently overwrite each other, so this is an
error here, long before any model runs. Manifest paths are resolved against the manifest's
own folder, never the current directory, so a manifest means the same thing wherever a job
is launched from.
"""

from __future__ import annotations

import csv
import json
import operator
import os
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Iterator, Sequence

from .errors import AudioEmbedError
from .audio import AUDIO_EXTENSIONS
from .messages import printable
from .store import unstorable_reason

#: suffixes (lower case) of manifest files and their column delimiter (None: JSON lines)
MANIFEST_EXTENSIONS: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".jsonl": None}


class InputError(AudioEmbedError, ValueError):
    """The inputs cannot be turned into a list of items; the message names the culprit."""


@dataclass(frozen=True)
class InputItem:
    """One utterance to process."""

    #: stable, collision-free utterance id (the key features are stored under)
    id: str
    #: absolute path of the audio file (it may not exist; the extractor reports it)
    path: str
    #: extra manifest columns, as strings
    metadata: dict = field(default_factory=dict, compare=False)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def scan_directory(root: str, extensions: frozenset[str]) -> list[InputItem]:
    """Audio files below ``root``; hidden files and folders (``.*``) are skipped."""
    items = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        # Hidden entries are tool droppings (e.g. macOS "._x.wav" resource forks), not audio.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or _suffix(name) not in extensions:
                continue
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):  # dangling link, socket, ...
                continue
            rel = PurePath(os.path.relpath(full, root)).as_posix()
            items.append(InputItem(id=rel, path=os.path.abspath(full)))
    items.sort(key=lambda item: item.id)
    return items


def _to_str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def manifest_rows(manifest: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` pairs of a ``.csv``/``.tsv``/``.jsonl`` manifest, every value a string;
    ``where`` names the line for error messages. Task loaders read their own columns with it."""
    delimiter = MANIFEST_EXTENSIONS[_suffix(manifest)]
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark
        with open(manifest, encoding="utf-8-sig", newline="") as f:
            if delimiter is None:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise InputError(
                            f"{printable(manifest)}: line {lineno}: malformed JSON ({err.msg})"
                        ) from None
                    if not isinstance(row, dict):
                        raise InputError(
                            f"{printable(manifest)}: line {lineno}: expected a JSON object, "
                            f"got {type(row).__name__}"
                        )
                    if "path" not in row:
                        raise InputError(f"{printable(manifest)}: line {lineno}: no 'path' field")
                    yield f"line {lineno}", {str(k): _to_str(v) for k, v in row.items()}
            else:
                reader = csv.reader(f, delimiter=delimiter)
                header = next(reader, None)
                if header is None:
                    raise InputError(f"{printable(manifest)}: empty manifest (no header line)")
                header = [name.strip() for name in header]
                if "path" not in header:
                    raise InputError(
                        f"{printable(manifest)}: no 'path' column in the header (columns: "
                        f"{', '.join(map(repr, header))})"
                    )
                for fields in reader:
                    lineno = reader.line_num
                    if not any(v.strip() for v in fields):
                        continue
                    if len(fields) > len(header):
                        raise InputError(
                            f"{printable(manifest)}: line {lineno}: {len(fields)} fields but the header "
                            f"has {len(header)} columns"
                        )
                    fields = fields + [""] * (len(header) - len(fields))
                    yield f"line {lineno}", dict(zip(header, fields))
    except UnicodeDecodeError as err:
        raise InputError(f"{printable(manifest)}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise InputError(f"{printable(manifest)}: malformed {_suffix(manifest)[1:].upper()} ({err})") from None
    except OSError as err:
        raise InputError(f"{printable(manifest)}: cannot read ({err.strerror or err})") from None


def _read_manifest(manifest: str) -> list[tuple[InputItem, str]]:
    """Items of a manifest, each with where it came from (file and line) for messages."""
    base = os.path.dirname(manifest)
    items = []
    for where, row in manifest_rows(manifest):
        raw_path = row["path"].strip()
        if not raw_path:
            raise InputError(f"{printable(manifest)}: {where}: empty path")
        path = os.path.normpath(os.path.join(base, os.path.expanduser(raw_path)))
        item_id = row.get("id", "").strip() or raw_path
        metadata = {k: v for k, v in row.items() if k not in ("path", "id")}
        items.append((InputItem(id=item_id, path=path, metadata=metadata), f"{printable(manifest)}: {where}"))
    return items


def storage_problem(item: InputItem) -> str | None:
    """Why the feature store could not hold this item's id or path, or None."""
    reason = unstorable_reason(item.id)
    if reason:
        return f"id {printable(repr(item.id))} {reason}"
    reason = unstorable_reason(item.path)
    if reason:
        return f"path {reason}"
    return None


def collect_inputs(
    inputs: Sequence[str | os.PathLike],
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    rejected: list[tuple[str, str]] | None = None,
) -> list[InputItem]:
    """The items named by ``inputs``, in the inputs' order.

    Each input is a folder (searched recursively; id = POSIX path relative to it), a
    manifest (``.csv``/``.tsv``/``.jsonl`` with a ``path`` and optional ``id`` column; other
    columns become metadata) or an audio file (id = its file name). Manifest rows whose
    audio does not exist are kept: the extractor reports them per file.

    An id (or path) the feature store cannot hold (a NUL character, bytes that are not
    UTF-8) raises InputError naming the manifest row or file; when a ``rejected`` list is
    given, the item is left out and ``(id, message)`` appended to it instead, so that the
    rest of the job can go on.
    """
    # A lone path is not a sequence of one-character inputs.
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    located: list[tuple[InputItem, str]] = []  # (item, where it came from)
    for arg in inputs:
        arg = os.fspath(arg)
        full = os.path.abspath(os.path.expanduser(arg))
        if not os.path.exists(full):
            raise InputError(f"{printable(arg)}: no such file or directory")
        if os.path.isdir(full):
            located.extend((item, printable(item.path)) for item in scan_directory(full, exts))
        elif _suffix(full) in MANIFEST_EXTENSIONS:
            located.extend(_read_manifest(full))
        elif _suffix(full) in exts:
            located.append((InputItem(id=os.path.basename(full), path=full), printable(full)))
        else:
            raise InputError(
                f"{printable(arg)}: neither a folder, a manifest ({', '.join(MANIFEST_EXTENSIONS)}) nor an "
                f"audio file with a known extension ({', '.join(sorted(exts))})"
            )
    items: list[InputItem] = []
    for item, where in located:
        problem = storage_problem(item)
        if problem is None:
            items.append(item)
        elif rejected is None:
            raise InputError(f"{where}: {problem}")
        else:
            rejected.append((item.id, f"{where}: {problem}"))
    if not items and not located:
        shown = ", ".join(printable(os.fspath(a)) for a in inputs) or "(no inputs given)"
        raise InputError(f"no audio files found in {shown}")
    first_path: dict[str, str] = {}
    for item in items:
        other = first_path.get(item.id)
        if other is None:
            first_path[item.id] = item.path
        else:
            raise InputError(
                f"duplicate id {printable(repr(item.id))}: {printable(other)} and {printable(item.path)}; ids must be unique, "
                "e.g. list the files in a manifest (.csv/.tsv/.jsonl) with an 'id' column"
            )
    return items


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # accepts numpy integers, refuses 1.5 and "1"
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def shard_items(items: Sequence[InputItem], index: int, count: int) -> list[InputItem]:
    """Shard ``index`` of ``count``: the items at positions ``i % count == index`` in id order.

    Sorting by id first makes the split independent of argument order, so parallel jobs
    launched with different input orders still cover every item exactly once.
    """
    count = _as_int(count, "shard count")
    index = _as_int(index, "shard index")
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    ordered = sorted(items, key=lambda item: item.id)
    return ordered[index::count]
