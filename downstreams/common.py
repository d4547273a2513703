"""Loader helpers shared by the built-in tasks.

Conventions every loader follows (see ``audioembed.tasks``):

* ids are unique and stable: the POSIX path relative to the data folder, or a manifest's
  ``id`` column (else its ``path`` as written);
* paths are absolute; manifest paths resolve against the manifest's own folder (the rule of
  ``audioembed.inputs``, whose manifest reader is reused here);
* a bad row (missing audio, empty or unknown label, ...) is reported in
  ``TaskData.problems`` as ``"FILE: line N: reason"`` or ``"PATH: reason"`` and skipped;
* a dataset without a single usable example raises :class:`TaskDataError` naming it;
* examples are sorted by id, so the order never depends on the file system.

Heavy modules (scikit-learn, jiwer, mir_eval through ``audioembed.metrics``) are imported
inside the functions that score, never at import time: listing plugins imports every task
module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable, Iterable

from audioembed.errors import AudioEmbedError
from audioembed.audio import AUDIO_EXTENSIONS
from audioembed.inputs import MANIFEST_EXTENSIONS, InputError, manifest_rows, scan_directory
from audioembed.tasks import Example, Task, TaskData, TaskDataError, TaskOption

#: split values accepted in manifests and folder names, mapped to the runner's three splits
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "valid": "dev",
    "validation": "dev",
    "val": "dev",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}

_AUDIO_SUFFIXES = frozenset(AUDIO_EXTENSIONS)

#: how many problems a "no usable example" error quotes
_QUOTED_PROBLEMS = 5


class BadRow(AudioEmbedError, ValueError):
    """One example cannot be used; the message is the reason (without the location)."""


class LoaderTask(Task):
    """A task whose ``load`` re-resolves its options, so direct calls with partial dicts work."""

    def options_for(self, options: dict | None) -> dict:
        # resolve_options is idempotent on already resolved values and fills in defaults.
        return self.resolve_options(dict(options or {}))


# --------------------------------------------------------------------------- small helpers


def require_data(data: Path | str) -> Path:
    """``data`` as an absolute path; ``TaskDataError`` when it does not exist."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(data))))
    if not path.exists():
        raise TaskDataError(f"{path}: no such file or directory")
    return path


def is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS


def is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _AUDIO_SUFFIXES


def scan_audio(root: Path) -> list[tuple[str, str]]:
    """``(id, absolute path)`` of the audio files below ``root``, sorted by id.

    The id is the POSIX path relative to ``root``; hidden files and folders are skipped
    (the folder rule of ``audioembed.inputs``).
    """
    return [(item.id, item.path) for item in scan_directory(os.fspath(root), _AUDIO_SUFFIXES)]


def find_files(root: Path, suffix: str) -> list[Path]:
    """Files below ``root`` whose name ends with ``suffix`` (case-insensitive), sorted.

    Hidden files and folders are skipped.
    """
    found = []
    suffix = suffix.lower()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(suffix):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: PurePath(os.path.relpath(p, root)).as_posix())


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def normalize_split(value: str | None) -> str | None:
    """``"Validation"`` -> ``"dev"``; empty -> None; anything unknown raises :class:`BadRow`."""
    text = (value or "").strip().lower()
    if not text:
        return None
    try:
        return SPLIT_ALIASES[text]
    except KeyError:
        raise BadRow(
            f"unknown split {value.strip()!r} (expected train, dev or test; also accepted: "
            f"{', '.join(sorted(set(SPLIT_ALIASES) - {'train', 'dev', 'test'}))})"
        ) from None


def finish(data: Path, examples: list[Example], problems: list[str], labels: list[str] | None) -> TaskData:
    """Sort the examples by id and check that at least one is usable."""
    if not examples:
        detail = ""
        if problems:
            quoted = "; ".join(problems[:_QUOTED_PROBLEMS])
            more = len(problems) - _QUOTED_PROBLEMS
            detail = f" ({len(problems)} problem(s): {quoted}{f'; and {more} more' if more > 0 else ''})"
        raise TaskDataError(f"{data}: no usable example{detail}")
    examples = sorted(examples, key=lambda e: e.id)
    return TaskData(examples=examples, problems=problems, labels=labels)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ManifestColumns:
    """Which manifest columns a loader reads; empty names are not read."""

    #: the target column; it must exist in the manifest (else TaskDataError)
    target: str
    #: grouping column (speaker, artist); used when present
    group: str = ""
    #: split column; used when present
    split: str = ""


def manifest_columns(task: str, opts: dict, target_option: str) -> ManifestColumns:
    """The columns named by a task's options; an empty target column is an error."""
    target = opts[target_option] or ""
    if not target:
        raise TaskDataError(f"task '{task}': {target_option} must not be empty")
    return ManifestColumns(target, opts.get("group_column") or "", opts.get("split_column") or "")


def read_manifest(
    manifest: Path,
    columns: ManifestColumns,
    parse_target: Callable[[str], object],
    problems: list[str],
) -> list[Example]:
    """Examples of a CSV/TSV/JSONL manifest with a ``path`` column.

    ``parse_target`` turns the target cell (stripped) into the example's target and raises
    :class:`BadRow` for an unusable one (an empty cell is reported before it is called).
    Missing audio, duplicate ids, empty paths and unknown split values are bad rows, reported
    in ``problems``. Columns other than path/id become ``Example.metadata``.
    """
    manifest = Path(manifest)
    base = os.path.dirname(os.fspath(manifest))
    examples: list[Example] = []
    seen_ids: dict[str, str] = {}
    seen_columns: set[str] = set()
    rows = 0
    try:
        for where, row in manifest_rows(os.fspath(manifest)):
            rows += 1
            seen_columns.update(row)
            here = f"{manifest}: {where}"
            raw_path = row.get("path", "").strip()
            if not raw_path:
                problems.append(f"{here}: empty path")
                continue
            path = os.path.normpath(os.path.join(base, os.path.expanduser(raw_path)))
            item_id = row.get("id", "").strip() or raw_path
            if item_id in seen_ids:
                problems.append(f"{here}: duplicate id {item_id!r} (first at {seen_ids[item_id]})")
                continue
            try:
                cell = row.get(columns.target, "").strip()
                if not cell:
                    raise BadRow(f"empty {columns.target!r}")
                target = parse_target(cell)
                split = normalize_split(row.get(columns.split)) if columns.split else None
            except BadRow as err:
                problems.append(f"{here}: {err}")
                continue
            if not os.path.isfile(path):
                problems.append(f"{here}: audio file not found: {path}")
                continue
            group = ((row.get(columns.group) or "").strip() or None) if columns.group else None
            seen_ids[item_id] = where
            metadata = {k: v for k, v in row.items() if k not in ("path", "id")}
            examples.append(Example(id=item_id, path=path, target=target, split=split, group=group, metadata=metadata))
    except InputError as err:
        raise TaskDataError(str(err)) from None
    if rows and columns.target not in seen_columns:
        raise TaskDataError(
            f"{manifest}: no {columns.target!r} column (columns: {', '.join(sorted(seen_columns))}); "
            "name the right one with --task-option"
        )
    return examples


def manifest_options(target: str, target_default: str, group_default: str, what: str) -> tuple[TaskOption, ...]:
    """The column options of a manifest loader: target, group and split column."""
    return (
        TaskOption(target, f"manifest column holding the {what}", target_default),
        TaskOption(
            "group_column",
            f"manifest column used for group-independent folds when present (default {group_default!r}; "
            "empty: no grouping)",
            group_default,
        ),
        TaskOption(
            "split_column",
            "manifest column with train/dev/test (also valid, validation, eval) when present; "
            "empty: no predefined split",
            "split",
        ),
    )


# --------------------------------------------------------------------------- folders


def folder_class_examples(
    root: Path,
    problems: list[str],
    label_of: Callable[[tuple[str, ...]], str] = lambda parts: parts[0],
    where: str = "a class folder",
) -> list[Example]:
    """Examples whose label is a folder name: ``label_of`` gets the folder parts of the id."""
    examples = []
    for item_id, path in scan_audio(root):
        folders = PurePath(item_id).parts[:-1]
        if not folders:
            problems.append(f"{path}: not inside {where}; skipped")
            continue
        label = label_of(tuple(folders)).strip()
        if not label:
            problems.append(f"{path}: empty label folder name")
            continue
        examples.append(Example(id=item_id, path=path, target=label))
    return examples


def sorted_labels(examples: Iterable[Example]) -> list[str]:
    return sorted({str(e.target) for e in examples})


# --------------------------------------------------------------------------- shared metrics


def check_lengths(targets, predictions) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"got {len(targets)} targets but {len(predictions)} predictions")


def classification_metrics(targets, predictions) -> dict[str, float]:
    """``accuracy`` and ``macro_f1`` (over the classes in the targets or the predictions).

    Classes absent from both are left out of the F1 mean: on a small test fold they would
    otherwise count as 0 and the score would depend on the size of the label vocabulary.
    """
    from audioembed.metrics import accuracy, macro_f1

    check_lengths(targets, predictions)
    return {"accuracy": accuracy(list(targets), list(predictions)), "macro_f1": macro_f1(list(targets), list(predictions))}
