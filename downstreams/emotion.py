"""Speech emotion recognition (``emotion``): accuracy and unweighted average recall (UAR).

``--data`` is a manifest or a folder; option ``layout`` says which convention it follows
(default ``auto``):

``manifest``
    ``.csv``/``.tsv``/``.jsonl`` with ``path``, a label column (``label_column``, default
    ``label``) and, when present, a speaker column (``group_column``, default ``speaker``)
    and a split column (``split_column``, default ``split``).
``folders``
    one folder per class: ``<label>/.../*.wav`` (the top-level folder below ``--data`` is the
    label); the speaker is unknown.
``emodb``
    Berlin EmoDB names such as ``03a01Fa.wav``: speaker = the first two digits, emotion =
    the letter at index 5: W anger, L boredom, E disgust, A fear, F happiness, T sadness,
    N neutral.
``ravdess``
    RAVDESS names such as ``03-01-06-01-02-01-12.wav`` (modality-channel-emotion-intensity-
    statement-repetition-actor): emotion 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
    06 fearful, 07 disgust, 08 surprised; speaker = the actor. Every audio file is used
    (speech and song, any modality; the video-only files are not audio and never listed).
``cremad``
    CREMA-D names such as ``1001_DFA_ANG_XX.wav`` (actor_sentence_emotion_level): ANG anger,
    DIS disgust, FEA fear, HAP happy, NEU neutral, SAD sad; speaker = the actor.

Each dataset keeps the emotion names of its own documentation (RAVDESS "angry", EmoDB and
CREMA-D "anger", ...): results are only ever compared within one dataset, and renaming
would hide that RAVDESS has "calm" and EmoDB "boredom". ``auto`` picks ``manifest`` for a
file; for a folder, the file-name convention that *every* audio file follows, else
``folders`` when every file is in a class folder. A folder where most, but not all, files
follow a convention is refused with a message (name the layout to skip the others), so a
stray file cannot silently turn EmoDB's ``wav/`` folder into a one-class dataset.

The group is the speaker whenever known, so the runner's folds are speaker-independent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable

from audioembed.tasks import Example, TaskData, TaskDataError, TaskKind, TaskOption

from .common import (
    BadRow,
    LoaderTask,
    manifest_columns,
    check_lengths,
    finish,
    folder_class_examples,
    is_manifest,
    manifest_options,
    read_manifest,
    require_data,
    scan_audio,
    sorted_labels,
)

__all__ = ["EMODB_EMOTIONS", "RAVDESS_EMOTIONS", "CREMAD_EMOTIONS", "EmotionTask", "LAYOUTS"]

EMODB_EMOTIONS = {
    "W": "anger",  # Ärger (Wut)
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
CREMAD_EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


@dataclass(frozen=True)
class _Convention:
    name: str
    title: str
    example: str
    pattern: re.Pattern
    #: match -> (label, speaker, metadata); raises BadRow for an unknown emotion code
    parse: Callable[[re.Match], tuple[str, str, dict]]


def _emodb(m: re.Match) -> tuple[str, str, dict]:
    speaker, text, code, version = m.groups()
    if code not in EMODB_EMOTIONS:
        raise BadRow(f"unknown EmoDB emotion letter {code!r} (known: {', '.join(EMODB_EMOTIONS)})")
    return EMODB_EMOTIONS[code], speaker, {"text": text, "version": version}


def _ravdess(m: re.Match) -> tuple[str, str, dict]:
    modality, channel, code, intensity, statement, repetition, actor = m.groups()
    if code not in RAVDESS_EMOTIONS:
        raise BadRow(f"unknown RAVDESS emotion code {code!r} (known: {', '.join(RAVDESS_EMOTIONS)})")
    meta = {"modality": modality, "vocal_channel": channel, "intensity": intensity,
            "statement": statement, "repetition": repetition}
    return RAVDESS_EMOTIONS[code], actor, meta


def _cremad(m: re.Match) -> tuple[str, str, dict]:
    actor, sentence, code, level = m.groups()
    if code not in CREMAD_EMOTIONS:
        raise BadRow(f"unknown CREMA-D emotion code {code!r} (known: {', '.join(CREMAD_EMOTIONS)})")
    return CREMAD_EMOTIONS[code], actor, {"sentence": sentence, "level": level}


_CONVENTIONS = {
    c.name: c
    for c in (
        _Convention("emodb", "EmoDB", "03a01Fa.wav", re.compile(r"^(\d{2})([a-z]\d{2})([A-Z])([a-z]?)$"), _emodb),
        _Convention("ravdess", "RAVDESS", "03-01-06-01-02-01-12.wav", re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$"), _ravdess),
        _Convention("cremad", "CREMA-D", "1001_DFA_ANG_XX.wav", re.compile(r"^(\d{4})_([A-Z0-9]{3})_([A-Z]{3})_([A-Z]{2})$"), _cremad),
    )
}

LAYOUTS = ("auto", "manifest", "folders", *_CONVENTIONS)


def _stem(item_id: str) -> str:
    return os.path.splitext(PurePath(item_id).name)[0]


def _convention_examples(files: list[tuple[str, str]], convention: _Convention, problems: list[str]) -> list[Example]:
    examples = []
    for item_id, path in files:
        m = convention.pattern.match(_stem(item_id))
        if m is None:
            problems.append(f"{path}: not named like {convention.title} files (e.g. {convention.example}); skipped")
            continue
        try:
            label, speaker, meta = convention.parse(m)
        except BadRow as err:
            problems.append(f"{path}: {err}")
            continue
        examples.append(Example(id=item_id, path=path, target=label, group=speaker, metadata=meta))
    return examples


def _detect(data: Path, files: list[tuple[str, str]]) -> str:
    counts = {name: sum(bool(c.pattern.match(_stem(i))) for i, _ in files) for name, c in _CONVENTIONS.items()}
    for name, count in counts.items():
        if count == len(files):
            return name
    best = max(counts, key=lambda n: counts[n])
    if counts[best] * 2 > len(files):
        convention = _CONVENTIONS[best]
        odd = next(path for i, path in files if not convention.pattern.match(_stem(i)))
        raise TaskDataError(
            f"{data}: {counts[best]} of {len(files)} audio files are named like {convention.title} "
            f"files but the others are not (e.g. {odd}); pass --task-option layout={best} to use "
            "the matching files and report the others, or layout=folders for class folders"
        )
    if all(len(PurePath(i).parts) > 1 for i, _ in files):
        return "folders"
    loose = next(path for i, path in files if len(PurePath(i).parts) == 1)
    raise TaskDataError(
        f"{data}: cannot tell the layout: the file names follow none of the EmoDB, RAVDESS or "
        f"CREMA-D conventions and not every file is in a class folder (e.g. {loose}); "
        f"pass --task-option layout=... ({', '.join(LAYOUTS[1:])}) or a manifest"
    )


class EmotionTask(LoaderTask):
    name = "emotion"
    kind = TaskKind.CLASSIFICATION
    primary_metric = "accuracy"
    options = (
        TaskOption("layout", f"data layout: {'|'.join(LAYOUTS)}", "auto"),
        *manifest_options("label_column", "label", "speaker", "emotion label"),
    )

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        layout = (opts["layout"] or "auto").strip().lower()
        if layout not in LAYOUTS:
            raise TaskDataError(f"task option layout: expected one of {', '.join(LAYOUTS)}, got {opts['layout']!r}")
        data = require_data(data)
        problems: list[str] = []
        if data.is_file():
            if layout not in ("auto", "manifest") or not is_manifest(data):
                raise TaskDataError(
                    f"{data}: a file is read as a manifest (.csv, .tsv, .jsonl); layout {layout} needs a folder"
                )
            columns = manifest_columns(self.name, opts, "label_column")
            examples = read_manifest(data, columns, str, problems)
            return finish(data, examples, problems, sorted_labels(examples))
        if layout == "manifest":
            raise TaskDataError(f"{data}: layout manifest needs a manifest file (.csv, .tsv, .jsonl), not a folder")
        files = scan_audio(data)
        if not files:
            raise TaskDataError(f"{data}: no audio files below this folder")
        if layout == "auto":
            layout = _detect(data, files)
        if layout == "folders":
            examples = folder_class_examples(data, problems)
        else:
            examples = _convention_examples(files, _CONVENTIONS[layout], problems)
        return finish(data, examples, problems, sorted_labels(examples))

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        from audioembed.metrics import accuracy, unweighted_average_recall

        check_lengths(targets, predictions)
        targets, predictions = list(targets), list(predictions)
        return {
            "accuracy": accuracy(targets, predictions),
            "uar": unweighted_average_recall(targets, predictions, labels=labels),
        }
