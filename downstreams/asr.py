"""Speech recognition with a CTC probe (``asr``): word and character error rates.

Data, ``--data`` is either

* a manifest (``.csv``/``.tsv``/``.jsonl``) with ``path`` and a transcript column
  (``text_column``, default ``transcript``); ``group_column`` (default ``speaker``) and
  ``split_column`` (default ``split``) are used when the columns exist; or
* a folder in the LibriSpeech layout: ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` files
  anywhere below ``--data`` with lines ``UTT-ID WORDS...`` next to ``<UTT-ID>.flac`` (another
  audio suffix is accepted when no ``.flac`` exists, e.g. after a conversion to WAV). The
  group is the speaker (the part of the utterance id before the first ``-``); the split
  comes from the nearest folder *below* ``--data`` named ``train-*``, ``dev-*`` or
  ``test-*`` (or exactly train/dev/test), so pointing ``--data`` at ``LibriSpeech/`` uses
  the official subsets while pointing it at ``dev-clean/`` alone gives k-fold.

Targets are the transcripts as written with whitespace collapsed; case is left alone (the
CTC vocabulary is lowercased by the runner). Scoring lowercases references and hypotheses
and collapses whitespace, then computes corpus-level WER and CER.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from audioembed.audio import AUDIO_EXTENSIONS
from audioembed.tasks import Example, TaskData, TaskDataError, TaskKind, TaskOption

from .common import (
    SPLIT_ALIASES,
    BadRow,
    LoaderTask,
    manifest_columns,
    check_lengths,
    collapse_whitespace,
    find_files,
    finish,
    is_manifest,
    read_manifest,
    require_data,
)

__all__ = ["AsrTask", "librispeech_split"]

_TRANS_SUFFIX = ".trans.txt"


def librispeech_split(folders: tuple[str, ...]) -> str | None:
    """Split of a LibriSpeech file from its folders below the data folder, nearest first."""
    for name in reversed(folders):
        lower = name.lower()
        for prefix in ("train", "dev", "test"):
            if lower == prefix or lower.startswith(prefix + "-"):
                return SPLIT_ALIASES[prefix]
    return None


def _parse_transcript(text: str) -> str:
    text = collapse_whitespace(text)
    if not text:
        raise BadRow("empty transcript")
    return text


def _find_audio(folder: Path, utt: str) -> Path | None:
    for suffix in (".flac", *(s for s in AUDIO_EXTENSIONS if s != ".flac")):
        candidate = folder / f"{utt}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _librispeech(data: Path, problems: list[str]) -> list[Example]:
    transcripts = find_files(data, _TRANS_SUFFIX)
    if not transcripts:
        raise TaskDataError(
            f"{data}: no '*{_TRANS_SUFFIX}' files (LibriSpeech layout) below this folder; "
            "pass a manifest (.csv/.tsv/.jsonl with path and transcript columns) instead"
        )
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for trans in transcripts:
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{trans}: cannot read ({getattr(err, 'strerror', None) or err})")
            continue
        rel_folders = PurePath(os.path.relpath(trans.parent, data)).parts
        rel_folders = tuple(p for p in rel_folders if p not in (".", ""))
        split = librispeech_split(rel_folders)
        for lineno, line in enumerate(lines, start=1):
            fields = line.split(maxsplit=1)
            if not fields:
                continue
            here = f"{trans}: line {lineno}"
            utt = fields[0]
            if len(fields) < 2 or not fields[1].strip():
                problems.append(f"{here}: empty transcript for {utt}")
                continue
            audio = _find_audio(trans.parent, utt)
            if audio is None:
                problems.append(f"{here}: audio file not found: {trans.parent / (utt + '.flac')}")
                continue
            item_id = PurePath(os.path.relpath(audio, data)).as_posix()
            if item_id in seen:
                problems.append(f"{here}: {utt} already transcribed at {seen[item_id]}")
                continue
            seen[item_id] = here
            speaker, _, rest = utt.partition("-")
            if not rest:  # not a LibriSpeech-style id: the <spk> folder names the speaker
                speaker = trans.parent.parent.name if len(rel_folders) >= 2 else ""
            examples.append(
                Example(
                    id=item_id,
                    path=os.path.abspath(audio),
                    target=collapse_whitespace(fields[1]),
                    split=split,
                    group=speaker or None,
                    metadata={"utterance": utt, "speaker": speaker},
                )
            )
    return examples


class AsrTask(LoaderTask):
    name = "asr"
    kind = TaskKind.CTC
    primary_metric = "wer"
    lower_is_better = ("wer", "cer")
    options = (
        TaskOption("text_column", "manifest column holding the transcript", "transcript"),
        TaskOption(
            "group_column",
            "manifest column used for speaker-independent folds when present (empty: none)",
            "speaker",
        ),
        TaskOption(
            "split_column",
            "manifest column with train/dev/test (also valid, validation, eval) when present",
            "split",
        ),
    )

    def load(self, data: Path, options: dict) -> TaskData:
        opts = self.options_for(options)
        data = require_data(data)
        problems: list[str] = []
        if is_manifest(data):
            columns = manifest_columns(self.name, opts, "text_column")
            examples = read_manifest(data, columns, _parse_transcript, problems)
        elif data.is_dir():
            examples = _librispeech(data, problems)
        else:
            raise TaskDataError(f"{data}: neither a manifest (.csv, .tsv, .jsonl) nor a LibriSpeech-style folder")
        return finish(data, examples, problems, None)

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        from audioembed.metrics import char_error_rate, word_error_rate

        check_lengths(targets, predictions)
        refs = [collapse_whitespace(str(t)).lower() for t in targets]
        hyps = [collapse_whitespace(str(p)).lower() for p in predictions]
        return {"wer": word_error_rate(refs, hyps), "cer": char_error_rate(refs, hyps)}
