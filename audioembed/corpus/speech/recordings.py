"""Real recordings (FSDD train takes, yesno, pocketsphinx) added to the pre-training manifest."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...audio import AudioError, load
from .common import DOMAIN, SAMPLE_RATE, CorpusError, Warn, default_warn
from .prompts import normalize_transcript
from .rendering import existing_seconds, write_wav


@dataclass(frozen=True)
class RealItem:
    source: str
    #: source file (absolute)
    src: str
    #: file name below real/<source>/ (without suffix)
    name: str
    transcript: str
    speaker: str


_DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def real_recordings(root: str | os.PathLike, warn: Warn | None = None) -> list[RealItem]:
    """The real recordings of ``root`` (the project's ../shared/data) for pre-training.

    FSDD's test takes (index 0-4) are left out: FSDD is an evaluation set and its test
    recordings must never be trained on. yesno and pocketsphinx are used whole.
    """
    warn = warn or default_warn
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: real-recordings folder not found (expected ../shared/data)")
    items: list[RealItem] = []
    fsdd = root / "fsdd" / "labels.csv"
    if fsdd.is_file():
        with open(fsdd, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                try:
                    index = int(row["index"])
                except (KeyError, ValueError):
                    continue
                if index < 5 or row.get("split", "").strip().lower() == "test":
                    continue
                digit = row.get("digit", "").strip()
                transcript = _DIGITS[int(digit)] if digit.isdigit() and len(digit) == 1 else ""
                src = fsdd.parent / row["path"]
                items.append(RealItem("fsdd", str(src), Path(row["path"]).stem, transcript,
                                      f"fsdd:{row.get('speaker', '').strip()}" if row.get("speaker") else ""))
    else:
        warn(f"{fsdd} not found; FSDD skipped")
    yesno = root / "yesno" / "labels.csv"
    if yesno.is_file():
        with open(yesno, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                src = yesno.parent / row["path"]
                items.append(RealItem("yesno", str(src), Path(row["path"]).stem,
                                      " ".join(row.get("transcript", "").upper().split()), "yesno:speaker"))
    else:
        warn(f"{yesno} not found; yesno skipped")
    sphinx = root / "pocketsphinx"
    found_sphinx = False
    for folder, labels in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = sphinx / folder / labels
        if not path.is_file():
            continue
        found_sphinx = True
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
            if not match:
                continue
            fileid = match.group(2).strip()
            src = sphinx / folder / f"{fileid}.wav"
            transcript = normalize_transcript(match.group(1)) or ""
            items.append(RealItem("pocketsphinx", str(src), f"{folder}-{fileid}", transcript, ""))
    if not found_sphinx:
        warn(f"{sphinx}: no pocketsphinx transcriptions found; skipped")
    return items


def render_real(item: RealItem, out_dir: Path, overwrite: bool) -> tuple[str, float]:
    rel = f"real/{item.source}/{item.name}.wav"
    target = out_dir / rel
    if not overwrite:
        seconds = existing_seconds(target)
        if seconds is not None:
            return rel, seconds
    try:
        wave = load(item.src, SAMPLE_RATE)
    except AudioError as err:
        raise RuntimeError(str(err)) from None
    write_wav(target, wave)
    return rel, len(wave) / SAMPLE_RATE


def real_row(item: RealItem, rel: str, seconds: float) -> dict[str, str]:
    return {
        "path": rel,
        "id": rel[: -len(".wav")],
        "transcript": item.transcript,
        "text": "",
        "speaker": item.speaker,
        "split": "pretrain",
        "domain": DOMAIN,
        "seconds": f"{seconds:.3f}",
        "source": item.source,
    }
