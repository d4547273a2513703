"""Music tasks: genre classification (``genre``), key detection (``key``) and auto-tagging
(``tagging``).

``genre`` (accuracy, macro F1)
    GTZAN layout: ``[genres/]<genre>/<file>.wav`` anywhere below ``--data``; the label is the
    folder that directly holds the file (files directly in ``--data`` are reported and
    skipped). Or a manifest with ``path`` and a label column (``label_column``, default
    ``label``), an optional ``group_column`` (default ``artist``) and ``split_column``.
``key`` (MIREX weighted score, accuracy; 24 labels, ``audioembed.metrics.KEY_LABELS``)
    GiantSteps layout: audio files anywhere below ``--data`` and ``.key`` annotation files
    with the same stem anywhere below ``--data`` (``audio/123.LOFI.mp3`` +
    ``annotations/key/123.LOFI.key`` holding e.g. ``Eb minor``). Or a manifest with a key
    column (``label_column``, default ``key``). Keys are normalised with
    ``normalize_key`` ("Eb minor" -> "D# minor"); an unrecognised key, audio without an
    annotation and an annotation without audio are reported and skipped.
``tagging`` (macro ROC-AUC, macro PR-AUC)
    MagnaTagATune: ``annotations_final.csv`` (tab-separated; ``clip_id``, one 0/1 column per
    tag, ``mp3_path``), given as the file or found below the ``--data`` folder. ``mp3_path``
    is relative to ``audio_root`` (default: the csv's folder or its ``mp3/`` sub-folder,
    whichever holds more of the listed files; a relative ``audio_root`` is taken from the
    current directory, like ``--data``). The group is the track (the file name without its
    ``-<start>-<end>`` segment suffix), so clips of one song never straddle folds. Or a
    manifest with a tag column (``tag_column``, default ``tags``; tags separated by
    ``tag_separator``, default ``;``). Only the ``top_n`` most frequent tags (default 50;
    0 = all; ties broken by name) are kept, in that order; clips left without a tag are
    dropped and counted in one problem line.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from pathlib import Path, PurePath

import numpy as np

from audioembed.tasks import Example, TaskData, TaskDataError, TaskKind, TaskOption

from .common import (
    BadRow,
    LoaderTask,
    manifest_columns,
    check_lengths,
    classification_metrics,
    find_files,
    finish,
    folder_class_examples,
    is_manifest,
    manifest_options,
    read_manifest,
    require_data,
    scan_audio,
    sorted_labels,
)

__all__ = ["GenreTask", "KeyTask", "TaggingTask"]


def _not_a_manifest(data: Path, layout: str) -> TaskDataError:
    return TaskDataError(f"{data}: neither a manifest (.csv, .tsv, .jsonl) nor a folder in the {layout} layout")


# --------------------------------------------------------------------------- genre


class GenreTask(LoaderTask):
    name = "genre"
    kind = TaskKind.CLASSIFICATION
    primary_metric = "accuracy"
    chunk_seconds = 10.0
    options = manifest_options("label_column", "label", "artist", "genre")

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        data = require_data(data)
        problems: list[str] = []
        if is_manifest(data):
            examples = read_manifest(data, manifest_columns(self.name, opts, "label_column"), str, problems)
        elif data.is_dir():
            examples = folder_class_examples(data, problems, label_of=lambda parts: parts[-1], where="a genre folder")
        else:
            raise _not_a_manifest(data, "GTZAN")
        return finish(data, examples, problems, sorted_labels(examples))

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        return classification_metrics(targets, predictions)


# --------------------------------------------------------------------------- key


def _parse_key(text: str) -> str:
    from audioembed.metrics import normalize_key

    try:
        return normalize_key(text)
    except ValueError:
        raise BadRow(f"unrecognised key {text!r}") from None


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise BadRow(f"cannot read ({getattr(err, 'strerror', None) or err})") from None
    if not text:
        raise BadRow("empty key annotation")
    return _parse_key(text)


def _giantsteps(data: Path, problems: list[str]) -> list[Example]:
    key_files = find_files(data, ".key")
    if not key_files:
        raise TaskDataError(
            f"{data}: no '.key' annotation files (GiantSteps layout) below this folder; "
            "pass a manifest with a key column instead"
        )
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in key_files:
        by_stem[path.name[: -len(".key")]].append(path)
    audio_by_stem: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item_id, path in scan_audio(data):
        audio_by_stem[os.path.splitext(PurePath(item_id).name)[0]].append((item_id, path))

    keys: dict[str, str] = {}
    for stem, paths in sorted(by_stem.items()):
        if stem not in audio_by_stem:
            for path in paths:
                problems.append(f"{path}: no audio file named {stem}.* below {data}")
            continue
        parsed: dict[Path, str] = {}
        for path in paths:
            try:
                parsed[path] = _read_key_file(path)
            except BadRow as err:
                problems.append(f"{path}: {err}")
        if len(set(parsed.values())) > 1:
            listing = ", ".join(f"{p} ({k})" for p, k in parsed.items())
            problems.append(f"{stem}: annotations disagree: {listing}; skipped")
        elif parsed:
            keys[stem] = next(iter(parsed.values()))

    examples = []
    for stem, items in sorted(audio_by_stem.items()):
        for item_id, path in items:
            if stem not in by_stem:
                problems.append(f"{path}: no {stem}.key annotation below {data}")
            elif stem in keys:
                examples.append(Example(id=item_id, path=path, target=keys[stem]))
    return examples


class KeyTask(LoaderTask):
    name = "key"
    kind = TaskKind.CLASSIFICATION
    primary_metric = "mirex"
    options = manifest_options("label_column", "key", "artist", "key (e.g. 'C minor', 'Eb major')")

    def load(self, data: Path, options: dict) -> TaskData:
        from audioembed.metrics import KEY_LABELS

        opts = self.options_for(options)
        data = require_data(data)
        problems: list[str] = []
        if is_manifest(data):
            examples = read_manifest(data, manifest_columns(self.name, opts, "label_column"), _parse_key, problems)
        elif data.is_dir():
            examples = _giantsteps(data, problems)
        else:
            raise _not_a_manifest(data, "GiantSteps")
        return finish(data, examples, problems, list(KEY_LABELS))

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        from audioembed.metrics import accuracy, mirex_key_score

        check_lengths(targets, predictions)
        targets, predictions = list(targets), list(predictions)
        return {"mirex": mirex_key_score(targets, predictions), "accuracy": accuracy(targets, predictions)}


# --------------------------------------------------------------------------- tagging

_MTAT_NAME = "annotations_final.csv"
_SEGMENT_SUFFIX = re.compile(r"-\d+-\d+$")


def _top_tags(counts: Counter, top_n: int) -> list[str]:
    ranked = sorted((tag for tag, n in counts.items() if n > 0), key=lambda t: (-counts[t], t))
    return ranked if top_n == 0 else ranked[:top_n]


def _looks_like_mtat(path: Path) -> bool:
    if path.name == _MTAT_NAME:
        return True
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    names = [c.strip().strip('"') for c in first.split("\t")]
    return "clip_id" in names and "mp3_path" in names


def _read_mtat(csv_path: Path) -> tuple[list[str], list[tuple[str, dict[str, str]]], list[str]]:
    """(tag columns, [(where, row)], problems) of an annotations_final.csv."""
    problems = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise TaskDataError(f"{csv_path}: empty file (no header line)")
            header = [h.strip() for h in header]
            missing = [c for c in ("clip_id", "mp3_path") if c not in header]
            if missing:
                raise TaskDataError(
                    f"{csv_path}: not a MagnaTagATune annotations file: no {' or '.join(missing)} column "
                    "(expected tab-separated clip_id, tag columns, mp3_path)"
                )
            tags = [h for h in header if h not in ("clip_id", "mp3_path") and h]
            rows = []
            for fields in reader:
                if not any(v.strip() for v in fields):
                    continue
                where = f"line {reader.line_num}"
                if len(fields) != len(header):
                    problems.append(f"{csv_path}: {where}: {len(fields)} fields but the header has {len(header)}")
                    continue
                rows.append((where, dict(zip(header, (v.strip() for v in fields)))))
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{csv_path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise TaskDataError(f"{csv_path}: malformed tab-separated file ({err})") from None
    except OSError as err:
        raise TaskDataError(f"{csv_path}: cannot read ({err.strerror or err})") from None
    return tags, rows, problems


def _mtat(csv_path: Path, opts: dict, problems: list[str]) -> tuple[list[Example], list[str]]:
    tag_columns, rows, row_problems = _read_mtat(csv_path)
    problems.extend(row_problems)
    if not tag_columns:
        raise TaskDataError(f"{csv_path}: no tag columns between clip_id and mp3_path")
    valid = []
    for where, row in rows:
        here = f"{csv_path}: {where}"
        if not row["mp3_path"]:
            problems.append(f"{here}: empty mp3_path")
            continue
        bad = next((t for t in tag_columns if row[t] not in ("0", "1")), None)
        if bad is not None:
            problems.append(f"{here}: tag {bad!r} is {row[bad]!r}, not 0 or 1")
            continue
        valid.append((here, row))
    counts = Counter({t: sum(row[t] == "1" for _, row in valid) for t in tag_columns})
    labels = _top_tags(counts, opts["top_n"])

    if opts["audio_root"]:
        root = Path(os.path.abspath(os.path.expanduser(opts["audio_root"])))
        if not root.is_dir():
            raise TaskDataError(f"task option audio_root: {root}: no such folder")
    else:
        candidates = [csv_path.parent, csv_path.parent / "mp3"]
        found = [sum(os.path.isfile(c / row["mp3_path"]) for _, row in valid) for c in candidates]
        root = candidates[int(np.argmax(found))]

    examples, untagged = [], 0
    seen: dict[str, str] = {}
    for here, row in valid:
        tags = tuple(t for t in labels if row[t] == "1")
        if not tags:
            untagged += 1
            continue
        item_id = PurePath(row["mp3_path"]).as_posix()
        if item_id in seen:
            problems.append(f"{here}: duplicate mp3_path {item_id!r} (first at {seen[item_id]})")
            continue
        path = os.path.normpath(os.path.join(root, row["mp3_path"]))
        if not os.path.isfile(path):
            problems.append(f"{here}: audio file not found: {path}")
            continue
        seen[item_id] = here
        stem = os.path.splitext(PurePath(item_id).name)[0]
        examples.append(
            Example(id=item_id, path=path, target=tags, group=_SEGMENT_SUFFIX.sub("", stem),
                    metadata={"clip_id": row["clip_id"]})
        )
    if untagged:
        problems.append(f"{csv_path}: {untagged} clip(s) have none of the top-{len(labels)} tags; skipped")
    return examples, labels


def _tag_manifest(manifest: Path, opts: dict, problems: list[str]) -> tuple[list[Example], list[str]]:
    separator = opts["tag_separator"]
    if not separator:
        raise TaskDataError("task option tag_separator must not be empty")

    def parse(cell: str) -> tuple[str, ...]:
        tags = tuple(dict.fromkeys(t.strip() for t in cell.split(separator) if t.strip()))
        if not tags:
            raise BadRow(f"no tag in {cell!r}")
        return tags

    parsed = read_manifest(manifest, manifest_columns("tagging", opts, "tag_column"), parse, problems)
    counts = Counter(t for e in parsed for t in e.target)
    labels = _top_tags(counts, opts["top_n"])
    order = {t: i for i, t in enumerate(labels)}
    examples, untagged = [], 0
    for e in parsed:
        tags = tuple(sorted((t for t in e.target if t in order), key=order.__getitem__))
        if not tags:
            untagged += 1
            continue
        examples.append(Example(id=e.id, path=e.path, target=tags, split=e.split, group=e.group, metadata=e.metadata))
    if untagged:
        problems.append(f"{manifest}: {untagged} row(s) have none of the top-{len(labels)} tags; skipped")
    return examples, labels


class TaggingTask(LoaderTask):
    name = "tagging"
    kind = TaskKind.MULTILABEL
    primary_metric = "roc_auc"
    chunk_seconds = 10.0
    options = (
        TaskOption("top_n", "keep the N most frequent tags (ties by name); 0 = all", 50, int),
        TaskOption(
            "audio_root",
            "MagnaTagATune: folder the mp3_path entries are relative to "
            "(default: the csv's folder or its mp3/ sub-folder)",
            None,
        ),
        TaskOption("tag_column", "manifest column holding the tags", "tags"),
        TaskOption("tag_separator", "separator between the tags of a manifest cell", ";"),
        *manifest_options("tag_column", "tags", "artist", "tags")[1:],
    )

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        if opts["top_n"] < 0:
            raise TaskDataError(f"task option top_n must be >= 0 (0 = all tags), got {opts['top_n']}")
        data = require_data(data)
        problems: list[str] = []
        if data.is_dir():
            found = sorted(
                (p for p in find_files(data, _MTAT_NAME) if p.name == _MTAT_NAME),
                key=lambda p: (len(p.relative_to(data).parts), p.as_posix()),
            )
            if not found:
                raise TaskDataError(
                    f"{data}: no {_MTAT_NAME} (MagnaTagATune) below this folder; "
                    "pass it, or a manifest with a tags column"
                )
            examples, labels = _mtat(found[0], opts, problems)
        elif data.suffix.lower() in (".csv", ".tsv") and _looks_like_mtat(data):
            examples, labels = _mtat(data, opts, problems)
        elif is_manifest(data):
            examples, labels = _tag_manifest(data, opts, problems)
        else:
            raise TaskDataError(f"{data}: neither {_MTAT_NAME}, a folder holding it, nor a manifest (.csv, .tsv, .jsonl)")
        return finish(data, examples, problems, labels)

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        from audioembed.metrics import macro_average_precision, macro_roc_auc

        check_lengths(targets, predictions)
        if labels is None:
            labels = sorted({t for tags in targets for t in tags})
        index = {t: i for i, t in enumerate(labels)}
        y_true = _indicator(targets, index)
        if scores is None:  # hard predictions only: a degenerate but defined ranking
            scores = _indicator(predictions, index)
        scores = np.asarray(scores, dtype=float)
        return {"roc_auc": macro_roc_auc(y_true, scores), "pr_auc": macro_average_precision(y_true, scores)}


def _indicator(tag_lists, index: dict[str, int]) -> np.ndarray:
    y = np.zeros((len(tag_lists), len(index)), dtype=int)
    for row, tags in enumerate(tag_lists):
        for tag in tags:
            if tag not in index:
                raise ValueError(f"tag {tag!r} is not in the label vocabulary")
            y[row, index[tag]] = 1
    return y
