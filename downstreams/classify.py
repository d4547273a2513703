"""Generic utterance classification (``classify``) and speaker identification (``speaker_id``).

Data, ``--data`` is either

* a manifest (``.csv``/``.tsv``/``.jsonl``) with a ``path`` column (relative paths resolve
  against the manifest's folder), an optional ``id`` column and a label column
  (``label_column``); a ``group_column`` (default ``speaker``) makes the folds
  group-independent and a ``split_column`` (default ``split``: train/dev/test, also
  valid/validation/eval) gives a predefined split, each only when the column exists; or
* a folder with one sub-folder per class (``<label>/.../*.wav``: the label is the top-level
  folder below ``--data``; files directly in ``--data`` are reported and skipped).

``speaker_id`` is the same loader with the speaker as the label (``label_column`` default
``speaker``) and no grouping, since grouping by the label would leave every class out of
the training folds.
"""

from __future__ import annotations

from pathlib import Path

from audioembed.tasks import TaskData, TaskDataError, TaskKind, TaskOption

from .common import (
    LoaderTask,
    manifest_columns,
    classification_metrics,
    finish,
    folder_class_examples,
    is_manifest,
    manifest_options,
    read_manifest,
    require_data,
    sorted_labels,
)

__all__ = ["ClassifyTask", "SpeakerIdTask"]


class ClassifyTask(LoaderTask):
    name = "classify"
    kind = TaskKind.CLASSIFICATION
    primary_metric = "accuracy"
    options = manifest_options("label_column", "label", "speaker", "class label")

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        data = require_data(data)
        problems: list[str] = []
        if is_manifest(data):
            columns = manifest_columns(self.name, opts, "label_column")
            examples = read_manifest(data, columns, str, problems)
        elif data.is_dir():
            examples = folder_class_examples(data, problems)
        else:
            raise TaskDataError(f"{data}: neither a manifest (.csv, .tsv, .jsonl) nor a folder of class folders")
        return finish(data, examples, problems, sorted_labels(examples))

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        return classification_metrics(targets, predictions)


class SpeakerIdTask(ClassifyTask):
    name = "speaker_id"
    options = (
        TaskOption("label_column", "manifest column holding the speaker", "speaker"),
        TaskOption(
            "split_column",
            "manifest column with train/dev/test (also valid, validation, eval) when present; "
            "empty: no predefined split",
            "split",
        ),
    )
