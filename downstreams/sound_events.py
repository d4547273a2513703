"""Environmental sound classification with the datasets' own folds (``sound_events``).

Scores from random k-fold on these sets are inflated: several clips are cut from one source
recording, and the published folds keep such siblings together. The loader therefore sets
every example's official fold, and the runner tests on each fold in turn (protocol
"official folds (column fold, N folds)" in the result).

``--data`` is the dataset folder or its metadata file:

``ESC-50`` / ``ESC-10``
    ``meta/esc50.csv`` (columns ``filename``, ``fold`` 1-5, ``category``, ``esc10``,
    ``src_file``, ...) with the clips in ``audio/``. Option ``subset=esc10`` keeps the rows
    whose ``esc10`` is true (ESC-10, same 5 folds). The group is ``src_file``.
``UrbanSound8K``
    ``metadata/UrbanSound8K.csv`` (``slice_file_name``, ``fsID``, ``fold`` 1-10, ``class``)
    with the clips in ``audio/fold<N>/``. The group is ``fsID`` (the source recording).

For any other manifest with a fold column use ``audioembed downstream classify --fold-column NAME``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from audioembed.tasks import Example, TaskData, TaskDataError, TaskKind, TaskOption

from .common import LoaderTask, classification_metrics, finish, require_data, sorted_labels

__all__ = ["SoundEventsTask"]

ESC50_META = "esc50.csv"
URBANSOUND_META = "UrbanSound8K.csv"
SUBSETS = ("esc50", "esc10")


def _find_meta(data: Path) -> Path:
    if data.is_file():
        if data.name in (ESC50_META, URBANSOUND_META):
            return data
        raise TaskDataError(f"{data}: not {ESC50_META} (ESC-50) or {URBANSOUND_META} (UrbanSound8K); for another "
                            "manifest with a fold column use the classify task with --fold-column NAME")
    for candidate in (data / "meta" / ESC50_META, data / ESC50_META, data / "metadata" / URBANSOUND_META,
                      data / URBANSOUND_META):
        if candidate.is_file():
            return candidate
    raise TaskDataError(f"{data}: no meta/{ESC50_META} (ESC-50) or metadata/{URBANSOUND_META} (UrbanSound8K) "
                        "below this folder")


def _rows(meta: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    try:
        with open(meta, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise TaskDataError(f"{meta}: missing column(s) {', '.join(missing)}")
            return [(number, row) for number, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskDataError(f"{meta}: cannot read ({exc})") from None


def _example(meta: Path, number: int, audio: Path, label: str, fold: str, group: str, problems: list[str]):
    where = f"{meta}: line {number}"
    if not label or not fold:
        problems.append(f"{where}: empty class or fold")
        return None
    if not audio.is_file():
        problems.append(f"{where}: audio file not found: {audio}")
        return None
    item_id = audio.relative_to(meta.parent.parent).as_posix()
    return Example(id=item_id, path=str(audio), target=label, group=group or None, fold=fold)


class SoundEventsTask(LoaderTask):
    name = "sound_events"
    kind = TaskKind.CLASSIFICATION
    primary_metric = "accuracy"
    options = (TaskOption("subset", "ESC-50 only: esc50 (all 50 classes) or esc10", "esc50"),)

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        if opts["subset"] not in SUBSETS:
            raise TaskDataError(f"task option subset: expected one of {', '.join(SUBSETS)}, got '{opts['subset']}'")
        data = require_data(data)
        meta = _find_meta(data)
        problems: list[str] = []
        examples = []
        if meta.name == ESC50_META:
            for number, row in _rows(meta, ("filename", "fold", "category")):
                if opts["subset"] == "esc10" and str(row.get("esc10", "")).strip().lower() not in ("true", "1"):
                    continue
                audio = meta.parent.parent / "audio" / row["filename"].strip()
                example = _example(meta, number, audio, row["category"].strip(), row["fold"].strip(),
                                   str(row.get("src_file", "")).strip(), problems)
                if example:
                    examples.append(example)
        else:
            for number, row in _rows(meta, ("slice_file_name", "fold", "class")):
                fold = row["fold"].strip()
                audio = meta.parent.parent / "audio" / f"fold{fold}" / row["slice_file_name"].strip()
                example = _example(meta, number, audio, row["class"].strip(), fold,
                                   str(row.get("fsID", "")).strip(), problems)
                if example:
                    examples.append(example)
        result = finish(data, examples, problems, sorted_labels(examples))
        result.fold_column = f"fold of {meta.name}"
        return result

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        return classification_metrics(targets, predictions)
