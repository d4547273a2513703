"""Evaluation manifests derived from the corpora and the real recordings.

Why a separate step: each task needs its own view of the data (ASR tests unseen speakers
and sentences; speaker ID needs the *same* speakers in train and test; key uses chorales,
style and tagging the generated pieces), and the views must be files on disk so that every
model is probed on exactly the same rows. All paths in the written manifests are absolute.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import AudioEmbedError

#: name prefixes of the Sonic Pi sample library kept as instrument families (>= 8 files each)
SONIC_PI_FAMILIES = ("ambi", "bass", "bd", "drum", "elec", "glitch", "loop", "mehackit", "perc", "tabla")
SPLITS = ("train", "dev", "test")


class EvalSetError(AudioEmbedError, ValueError):
    """A corpus manifest cannot give the evaluation set; the message names the file."""


def read_rows(manifest: Path) -> list[dict]:
    """Rows of a CSV manifest with ``path`` made absolute (relative to the manifest)."""
    manifest = Path(manifest)
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise EvalSetError(f"{manifest}: cannot read ({exc.strerror or exc})") from None
    if rows and "path" not in rows[0]:
        raise EvalSetError(f"{manifest}: no 'path' column")
    base = manifest.parent
    for row in rows:
        row["path"] = os.path.normpath(os.path.join(base, row["path"]))
    return rows


def write_rows(path: Path, rows: list[dict], columns: Iterable[str]) -> Path:
    columns = list(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def _fraction(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (no global RNG state)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _need(rows: list[dict], columns: Iterable[str], where: Path) -> None:
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise EvalSetError(f"{where}: missing column(s) {', '.join(missing)}")


def speech_sets(manifest: Path, out_dir: Path, seed: int = 0, asr_train: int = 0) -> dict[str, Path]:
    """``asr`` (unseen speakers and sentences, the corpus' own split) and ``speaker_id``.

    ``asr_train`` > 0 keeps a seeded subset of that many ASR training utterances (the CTC
    probe is by far the slowest probe on CPU); dev and test stay whole.

    Speaker ID is closed-set: every test speaker was heard in training, saying other
    sentences. The corpus' own ``sid_split`` column is used when it has one; otherwise the
    training speakers' utterances are re-split by sentence (70 / 10 / 20 %, seeded).
    """
    rows = [r for r in read_rows(manifest) if r.get("split") in SPLITS]
    _need(rows, ("transcript", "speaker", "split"), manifest)
    if not rows:
        raise EvalSetError(f"{manifest}: no rows with split train/dev/test")
    asr_rows = rows
    if asr_train > 0:
        train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: _fraction(r["path"], seed))
        keep = {r["path"] for r in train[:asr_train]}
        asr_rows = [r for r in rows if r["split"] != "train" or r["path"] in keep]
    out = {"asr": write_rows(out_dir / "asr.csv", asr_rows, ("path", "id", "transcript", "speaker", "split"))}
    closed = []
    if rows and rows[0].get("sid_split"):  # the corpus planned a closed-set split itself
        closed = [{**r, "split": r["sid_split"]} for r in read_rows(manifest) if r.get("sid_split") in SPLITS]
    for row in rows if not closed else ():
        if row["split"] != "train":
            continue
        sentence = row.get("sentence") or row.get("text") or row["transcript"]
        u = _fraction(sentence, seed)
        closed.append({**row, "split": "train" if u < 0.7 else "dev" if u < 0.8 else "test"})
    out["speaker_id"] = write_rows(out_dir / "speaker_id.csv", closed, ("path", "id", "speaker", "split"))
    return out


def music_sets(manifest: Path, out_dir: Path) -> dict[str, Path]:
    """``key`` on the chorales, ``style`` and ``tagging`` on the generated pieces."""
    rows = [r for r in read_rows(manifest) if r.get("split") in SPLITS]
    _need(rows, ("source", "key", "style", "tags", "split"), manifest)
    chorales = [r for r in rows if r["source"] == "chorale"]
    generated = [r for r in rows if r["source"] != "chorale"]
    if not chorales or not generated:
        raise EvalSetError(f"{manifest}: need both chorales and generated pieces (got {len(chorales)} and {len(generated)})")
    return {
        "key": write_rows(out_dir / "key.csv", chorales, ("path", "id", "key", "split")),
        "style": write_rows(out_dir / "style.csv", generated, ("path", "id", "style", "split")),
        "tagging": write_rows(out_dir / "tagging.csv", generated, ("path", "id", "tags", "split")),
    }


def sonic_pi_set(folder: Path, out_dir: Path, families: Iterable[str] = SONIC_PI_FAMILIES) -> Path:
    """The Sonic Pi one-shots and loops labelled by family (the file name's prefix)."""
    folder = Path(folder)
    keep = set(families)
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".wav", ".flac"):
            continue
        family = path.name.split("_", 1)[0]
        if family in keep:
            rows.append({"path": str(path), "id": path.name, "family": family})
    if not rows:
        raise EvalSetError(f"{folder}: no Sonic Pi samples with the prefixes {', '.join(sorted(keep))}")
    return write_rows(out_dir / "sonic_pi.csv", rows, ("path", "id", "family"))


def fsdd_set(folder: Path, out_dir: Path) -> Path:
    """FSDD digits with the dataset's own split (takes 0-4 test); dev is carved from train."""
    rows = read_rows(Path(folder) / "labels.csv")
    _need(rows, ("digit", "speaker", "split"), Path(folder) / "labels.csv")
    return write_rows(out_dir / "fsdd.csv", rows, ("path", "digit", "speaker", "split"))


def describe(manifest: Path, label: str) -> dict:
    """Counts per split and number of classes, for the results page."""
    rows = read_rows(manifest)
    splits = Counter(r.get("split") or "-" for r in rows)
    labels = {x for r in rows for x in (r.get(label) or "").split(";") if x}
    return {"rows": len(rows), "splits": dict(sorted(splits.items())), "classes": len(labels)}


def task_table(sets: Mapping[str, Path]) -> dict[str, dict]:
    """name -> downstream task, data and options, for every evaluation set that exists."""
    spec = {
        "asr": ("asr", {}),
        "speaker_id": ("speaker_id", {"label_column": "speaker"}),
        "fsdd": ("classify", {"label_column": "digit", "group_column": "speaker"}),
        "key": ("key", {"label_column": "key"}),
        "style": ("classify", {"label_column": "style"}),
        "tagging": ("tagging", {"tag_column": "tags"}),
        "sonic_pi": ("classify", {"label_column": "family"}),
    }
    return {name: {"task": spec[name][0], "data": str(path), "options": dict(spec[name][1])}
            for name, path in sets.items() if name in spec}
