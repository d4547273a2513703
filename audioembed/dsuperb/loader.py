"""Reads Dynamic-SUPERB instances stored on disk, with pyarrow only (no ``datasets`` dependency).

Three layouts are accepted, since users get instances in all three ways:

- a folder as on the Hub (``README.md`` + ``data/test-*.parquet``), e.g. from
  ``huggingface-cli download --local-dir``, or a Hub cache snapshot;
- a single parquet file;
- a ``datasets`` ``save_to_disk`` folder (Arrow IPC *stream* files + ``dataset_info.json`` /
  ``state.json``; a ``DatasetDict`` folder with ``dataset_dict.json`` uses its ``test`` split).

Audio columns are parquet structs ``{bytes, path}``; their bytes are complete audio files (wav,
flac, ...). For feature extraction each clip's bytes are written once, unchanged, to a cache
folder keyed by instance, revision, row id and a content hash (``materialize_audio``): the
extractor then decodes them with soundfile and resamples them with soxr exactly as it does any
file, and the feature cache (keyed by path, size and mtime) finds them again on the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from ..errors import AudioEmbedError

#: clip columns in the order the clips are compared (the first is the anchor of pair features);
#: ``audio1`` appears in some instances, ``enrollment``/``testing`` and ``query``/``doc`` are the
#: two known outlier schemas (speaker verification, query-by-example)
AUDIO_COLUMN_ORDER = ("audio", "audio1", "audio2", "audio3", "enrollment", "testing", "query", "doc")
ID_COLUMNS = ("file", "id")
_FORMAT_SUFFIX = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff",
                  "W64": ".w64", "CAF": ".caf", "AU": ".au", "RF64": ".wav"}
BATCH_ROWS = 64


class InstanceError(AudioEmbedError, ValueError):
    """An instance cannot be read at all; the message names the path."""


class InstanceNotFound(InstanceError):
    """No local copy of a registered instance under the data root."""


def _is_audio_type(column_type: pa.DataType) -> bool:
    return pa.types.is_struct(column_type) and column_type.get_field_index("bytes") >= 0


def _hf_audio_columns(schema: pa.Schema) -> set[str]:
    """Columns the ``datasets`` metadata declares as Audio (covers path-only string columns)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return set()
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return set()
    return {name for name, spec in features.items() if isinstance(spec, dict) and spec.get("_type") == "Audio"}


@dataclass
class InstanceText:
    """The non-audio columns of every row, in row order."""

    ids: list[str]
    labels: list[object]
    instructions: list[str]
    #: duplicate or missing ids and the like; the rows are kept under a disambiguated id
    notes: list[str] = field(default_factory=list)


@dataclass
class Instance:
    """An opened instance: its data files, schema and clip columns."""

    source: Path
    layout: str
    files: list[Path]
    schema: pa.Schema

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def audio_columns(self) -> list[str]:
        declared = _hf_audio_columns(self.schema)
        found = [f.name for f in self.schema if _is_audio_type(f.type) or f.name in declared
                 or (f.name in AUDIO_COLUMN_ORDER and pa.types.is_binary(f.type))]
        rank = {name: i for i, name in enumerate(AUDIO_COLUMN_ORDER)}
        return sorted(found, key=lambda name: (rank.get(name, len(rank)), name))

    def fingerprint(self) -> str:
        """Changes when a data file is replaced, so results of old data are not reused."""
        digest = hashlib.sha256()
        for path in self.files:
            st = path.stat()
            digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return digest.hexdigest()[:16]

    def iter_batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Record batches of ``columns`` over all files, in row order, a few rows at a time so
        that instances with large audio never sit in memory whole."""
        columns = list(columns)
        for path in self.files:
            try:
                if self.layout == "save_to_disk":
                    with pa.memory_map(str(path)) as source:
                        for batch in _open_arrow(source, path):
                            for start in range(0, batch.num_rows, BATCH_ROWS):
                                yield batch.slice(start, BATCH_ROWS).select(columns)
                else:
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                        yield batch
            except (pa.ArrowException, OSError) as exc:
                raise InstanceError(f"{path}: cannot read ({exc})") from None

    def read_text(self) -> InstanceText:
        wanted = [c for c in (*ID_COLUMNS, "label", "instruction") if c in self.columns]
        if "label" not in wanted:
            raise InstanceError(f"{self.source}: no 'label' column (columns: {', '.join(self.columns)})")
        values: dict[str, list] = {c: [] for c in wanted}
        for batch in self.iter_batches(wanted):
            for c in wanted:
                values[c].extend(batch.column(c).to_pylist())
        id_column = next((c for c in ID_COLUMNS if c in values), None)
        count = len(values["label"])
        raw_ids = [str(v) if v not in (None, "") else "" for v in values[id_column]] if id_column else [""] * count
        ids, notes, seen = [], [], set()
        for row, raw in enumerate(raw_ids):
            item_id = raw or f"row{row:06d}"
            if item_id in seen:
                notes.append(f"row {row}: duplicate id '{item_id}', kept as '{item_id}#{row}'")
                item_id = f"{item_id}#{row}"
            seen.add(item_id)
            ids.append(item_id)
        if id_column is None:
            notes.append(f"{self.source}: no 'file' column; rows are named row000000, row000001, ...")
        instructions = [str(v) if v is not None else "" for v in values.get("instruction", [""] * count)]
        return InstanceText(ids=ids, labels=values["label"], instructions=instructions, notes=notes)


def _open_arrow(source, path: Path):
    """``datasets`` writes Arrow IPC streams; accept the file format too."""
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        reader = pa.ipc.open_file(source)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))


def _arrow_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).schema
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).schema


def _save_to_disk_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.exists():
        try:
            names = [item["filename"] for item in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InstanceError(f"{state}: not a datasets state.json ({exc})") from None
        files = [folder / name for name in names]
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise InstanceError(f"{state}: lists data files that are missing: {', '.join(missing)}")
        return files
    return sorted(folder.glob("*.arrow"))


def _parquet_files(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.rglob("*.parquet")
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    in_data = [p for p in found if p.relative_to(folder).parts[0] == "data"]
    found = in_data or found
    test = [p for p in found if re.match(r"test[-_.]", p.name) or p.parent.name == "test"]
    return test or found


def open_instance(path: str | os.PathLike) -> Instance:
    """Open a Hub-layout folder, a parquet file or a ``save_to_disk`` folder (see module doc)."""
    source = Path(path).expanduser()
    if not source.exists():
        raise InstanceError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix != ".parquet":
            raise InstanceError(f"{source}: expected a .parquet file or an instance folder")
        layout, files = "parquet", [source]
    elif (source / "dataset_dict.json").exists():
        try:
            splits = json.loads((source / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as exc:
            raise InstanceError(f"{source / 'dataset_dict.json'}: unreadable ({exc})") from None
        if "test" in splits or len(splits) == 1:
            return open_instance(source / ("test" if "test" in splits else splits[0]))
        raise InstanceError(f"{source}: a DatasetDict without a 'test' split (splits: {', '.join(splits)})")
    elif (source / "state.json").exists() or ((source / "dataset_info.json").exists() and any(source.glob("*.arrow"))):
        layout, files = "save_to_disk", _save_to_disk_files(source)
    else:
        layout, files = "hub", _parquet_files(source)
    if not files:
        raise InstanceError(f"{source}: no data files (expected data/test-*.parquet, a .parquet file, "
                            "or save_to_disk .arrow files with state.json)")
    try:
        schemas = [_arrow_schema(p) if layout == "save_to_disk" else pq.read_schema(p) for p in files]
    except (pa.ArrowException, OSError) as exc:
        raise InstanceError(f"{source}: cannot read the schema ({exc})") from None
    for path, schema in zip(files[1:], schemas[1:]):
        if schema.names != schemas[0].names:
            raise InstanceError(f"{path}: columns {schema.names} differ from {files[0].name}'s {schemas[0].names}")
    return Instance(source=source, layout=layout, files=files, schema=schemas[0])


def locate_instance(entry, data_root: str | os.PathLike | None) -> Path:
    """Where the local copy of a registry entry is: its own ``path``, or under ``data_root`` as
    ``<id>``, ``<name>``, ``<id>.parquet``, ``DynamicSuperb/<id>`` or a Hub cache snapshot."""
    candidates: list[Path] = []
    if entry.path:
        candidates.append(Path(entry.path).expanduser())
    if data_root is not None:
        root = Path(data_root).expanduser()
        for name in dict.fromkeys(n for n in (entry.id, entry.name) if n):
            candidates += [root / name, root / f"{name}.parquet"]
        if entry.hub_id:
            candidates.append(root / entry.hub_id)
            snapshots = root / f"datasets--{entry.hub_id.replace('/', '--')}" / "snapshots"
            if entry.revision and (snapshots / entry.revision).is_dir():
                candidates.append(snapshots / entry.revision)
            elif snapshots.is_dir() and len(list(snapshots.iterdir())) == 1:
                candidates.append(next(snapshots.iterdir()))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    where = ", ".join(str(c) for c in candidates) or "nowhere (give --data-root)"
    raise InstanceNotFound(f"{entry.id}: no local copy (looked for {where})")


# ----------------------------------------------------------------------------- audio clips


def _safe(text: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:limit] or "_"


def _clip_bytes(value, instance: Instance) -> tuple[bytes | None, Path | None]:
    """(embedded bytes, or a readable file) of one cell, whatever form the column takes."""
    if value is None:
        return None, None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        value = value.get("path")
    if isinstance(value, str) and value:
        base = instance.source if instance.source.is_dir() else instance.source.parent
        for candidate in (Path(value), base / value, base / "data" / value):
            if candidate.is_file():
                return None, candidate.resolve()
    return None, None


@dataclass
class MaterializedAudio:
    #: row index -> clip column -> audio file
    clips: dict[int, dict[str, str]]
    #: "row N (id): reason" for rows with an unusable clip (those rows are left out)
    problems: list[str]


def materialize_audio(instance: Instance, ids: Sequence[str], columns: Sequence[str],
                      audio_dir: Path) -> MaterializedAudio:
    """Write every clip's embedded bytes, unchanged, to ``audio_dir`` (once) and return the paths.

    File names carry the row id, the column and a hash of the bytes, so a rerun finds the same
    files (and their cached features) and changed content never reuses a stale file. Each clip is
    checked with libsndfile first; a row with an unreadable clip is reported and left out.
    """
    audio_dir.mkdir(parents=True, exist_ok=True)
    clips: dict[int, dict[str, str]] = {}
    problems: list[str] = []
    row = 0
    for batch in instance.iter_batches(columns):
        cells = {c: batch.column(c).to_pylist() for c in columns}
        for offset in range(batch.num_rows):
            index = row + offset
            paths, why = {}, None
            for column in columns:
                data, existing = _clip_bytes(cells[column][offset], instance)
                if existing is not None:
                    paths[column] = str(existing)
                    continue
                if data is None:
                    why = f"column '{column}' has no audio bytes and no readable path"
                    break
                try:  # header only: cheap, and it names the format for the file suffix
                    info = sf.info(io.BytesIO(data))
                except Exception as exc:  # libsndfile reports every decoder problem its own way
                    why = f"column '{column}': cannot decode ({getattr(exc, 'error_string', None) or exc})"
                    break
                if info.frames <= 0:
                    why = f"column '{column}': empty audio (0 samples)"
                    break
                suffix = _FORMAT_SUFFIX.get(info.format, "." + info.format.lower())
                done = audio_dir / f"{_safe(ids[index])}.{column}.{hashlib.sha1(data).hexdigest()[:12]}{suffix}"
                if not done.exists():
                    tmp = done.with_name(f"{done.name}.{os.getpid()}.tmp")
                    tmp.write_bytes(data)
                    tmp.replace(done)
                paths[column] = str(done)
            if why is None:
                clips[index] = paths
            else:
                problems.append(f"row {index} ({ids[index]}): {why}")
        row += batch.num_rows
    return MaterializedAudio(clips=clips, problems=problems)

