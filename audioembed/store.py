"""HDF5 feature store: crash-safe writing, resumable runs, shard sets, reading.

Why the part files: HDF5 is not crash-safe, so a SIGKILL in the middle of a write can
corrupt everything in an open file. The main file is therefore never open for writing
while features are computed. New utterances go to small *part* files under
``OUT.h5.parts/`` that are written under a temporary name and atomically renamed once
sealed; sealed parts are merged into a copy of the main file that atomically replaces it.
At any moment the main file is complete and readable, sealed parts hold finished
utterances only, and an interrupted part is simply discarded. Readers see main + sealed
parts as one store, so nothing finished is lost.

Layout (``format_version`` 1), documented in docs/feature_store.md::

    /                       attrs: upstream, model, weights_hash, sample_rate, hop_length,
                                   frame_rate, layers, pooling, dtype, ... (see IDENTITY_KEYS)
    /utterances/<key>       one group per utterance; <key> = percent-encoded utterance id
        attrs: id, path, num_samples, duration, num_frames, metadata (JSON)
        layer_<l>           (num_frames, D) for pooling "none", (num_windows, D) for
                            "chunks" (the mean of each --window-seconds window), (D,) for "mean",
                            (2D,) for "mean+std" (mean then std)
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote, unquote

import h5py
import numpy as np

FORMAT_VERSION = 1
UTTERANCES = "utterances"
#: attributes that must match for two runs to write into the same store
IDENTITY_KEYS = (
    "upstream",
    "weights_hash",
    "sample_rate",
    "hop_length",
    "layers",
    "pooling",
    "dtype",
    "window_samples",
    "context_samples",
)
_SHARD_RE = re.compile(r"-shard(\d+)of(\d+)\.h5$")


class StoreError(RuntimeError):
    """A feature file cannot be used as asked; the message names the file."""


def encode_key(utterance_id: str) -> str:
    """HDF5 group name for an id: reversible, so ids may contain '/' and any character."""
    key = quote(utterance_id, safe="")
    return key.replace(".", "%2E") if key in (".", "..") else key  # "." names the group itself


def decode_key(key: str) -> str:
    return unquote(key)


def layer_name(layer: int) -> str:
    return f"layer_{layer}"


def shard_path(path: str | os.PathLike, index: int, count: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}-shard{index}of{count}{path.suffix or '.h5'}")


def parts_dir(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}.parts")


def _normalise_attr(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, tuple):
        return list(value)
    return value


def read_attrs(h5: h5py.File) -> dict:
    return {k: _normalise_attr(v) for k, v in h5.attrs.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_header(path: Path, attrs: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        for key, value in attrs.items():
            h5.attrs[key] = value
        h5.create_group(UTTERANCES)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def identity_mismatch(existing: dict, wanted: dict) -> list[str]:
    """Human-readable differences in the identity attributes."""
    diffs = []
    for key in IDENTITY_KEYS:
        old, new = _normalise_attr(existing.get(key)), _normalise_attr(wanted.get(key))
        if old != new:
            diffs.append(f"{key}: file has {old!r}, this run wants {new!r}")
    return diffs


def _copy_utterances(src_paths: Iterable[Path], dst: h5py.File, skip_existing: bool = True) -> int:
    copied = 0
    dst_utts = dst.require_group(UTTERANCES)
    for src_path in src_paths:
        with h5py.File(src_path, "r") as src:
            for key in src[UTTERANCES]:
                if key in dst_utts:
                    if skip_existing:
                        continue
                    raise StoreError(f"{src_path}: utterance '{decode_key(key)}' is already in the target")
                src.copy(src[UTTERANCES][key], dst_utts, name=key)
                copied += 1
    return copied


def consolidate(path: str | os.PathLike) -> int:
    """Merge sealed part files into the main file (atomic replace); returns utterances added."""
    path = Path(path)
    pdir = parts_dir(path)
    if not pdir.is_dir():
        return 0
    parts = sorted(pdir.glob("part-*.h5"))
    added = 0
    if parts:
        tmp = path.with_name(path.name + ".consolidate.tmp")
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as dst:
            added = _copy_utterances(parts, dst)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    shutil.rmtree(pdir, ignore_errors=True)
    return added


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _acquire_lock(lock_path: Path, store_path: Path) -> int:
    """Exclusive lock on ``lock_path``; raises StoreError when another writer holds it.

    The lock file is deleted on release, so the file a process opened may be unlinked
    before (or just after) it gets locked; a lock on an unlinked inode excludes nobody.
    Only a lock on the inode that is *at the path* after locking counts, so this loops
    until it holds that one.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_at_path = _same_file(fd, lock_path)
            os.close(fd)
            if held_at_path:
                raise StoreError(f"{store_path}: another audioembed process is writing to this file") from None
            continue  # its holder was releasing it; try the file now at the path
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path):
            return fd
        os.close(fd)  # locked a file its holder had already unlinked


def _release_lock(lock_path: Path, fd: int) -> None:
    """Unlink *while still holding* the lock, so nobody can lock this inode and believe it current."""
    try:
        os.unlink(lock_path)
    except FileNotFoundError:
        pass
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class UtteranceWriter:
    """Writes one utterance into the current part file, window by window."""

    def __init__(self, group: h5py.Group, layers: Sequence[int], hidden_size: int, pooling: str, dtype: str):
        self.group = group
        self.layers = list(layers)
        self.pooling = pooling
        self.dtype = np.dtype(dtype)
        self.num_frames = 0
        self.num_rows = 0
        if pooling in ("none", "chunks"):
            # ~128 KiB chunks: HDF5 allocates whole chunks, so short utterances waste less disk than
            # with 1 MiB chunks, and whole-utterance reads stay a handful of chunk reads.
            chunk_rows = max(1, min(1024, (1 << 17) // max(1, hidden_size * self.dtype.itemsize)))
            self.datasets = {
                layer: group.create_dataset(
                    layer_name(layer),
                    shape=(0, hidden_size),
                    maxshape=(None, hidden_size),
                    dtype=self.dtype,
                    chunks=(chunk_rows, hidden_size),
                )
                for layer in self.layers
            }
        else:
            self.sums = {layer: np.zeros(hidden_size, np.float64) for layer in self.layers}
            self.sq_sums = {layer: np.zeros(hidden_size, np.float64) for layer in self.layers}

    def append(self, frames: dict[int, np.ndarray], num_frames: int | None = None) -> None:
        """``frames[layer]`` is ``(T, D)``; consecutive calls continue in time.

        For pooling "chunks" the rows are window means and ``num_frames`` says how many frames
        they cover.
        """
        if self.pooling in ("mean", "mean+std"):
            sums = {layer: block.astype(np.float64).sum(axis=0) for layer, block in frames.items()}
            sq_sums = {layer: np.square(block.astype(np.float64)).sum(axis=0) for layer, block in frames.items()}
            self.add_sums(sums, sq_sums, next(iter(frames.values())).shape[0])
            return
        rows = next(iter(frames.values())).shape[0]
        for layer in self.layers:
            ds = self.datasets[layer]
            ds.resize(self.num_rows + rows, axis=0)
            ds[self.num_rows :] = frames[layer].astype(self.dtype, copy=False)
        self.num_rows += rows
        self.num_frames += rows if num_frames is None else num_frames

    def add_sums(self, sums: dict[int, np.ndarray], sq_sums: dict[int, np.ndarray] | None, count: int) -> None:
        """Pooled files: add per-layer sums (and sums of squares) over ``count`` more frames.

        Lets the caller reduce frames where they are (e.g. on the GPU) and move only vectors.
        """
        for layer in self.layers:
            self.sums[layer] += sums[layer]
            if self.pooling == "mean+std":
                self.sq_sums[layer] += sq_sums[layer]
        self.num_frames += count

    def finish(self, attrs: dict) -> None:
        if self.pooling in ("mean", "mean+std"):
            n = max(self.num_frames, 1)
            for layer in self.layers:
                mean = self.sums[layer] / n
                vec = mean
                if self.pooling == "mean+std":
                    var = np.maximum(self.sq_sums[layer] / n - np.square(mean), 0.0)
                    vec = np.concatenate([mean, np.sqrt(var)])
                self.group.create_dataset(layer_name(layer), data=vec.astype(self.dtype))
        for key, value in attrs.items():
            self.group.attrs[key] = value
        self.group.attrs["num_frames"] = self.num_frames


class FeatureWriter:
    """Appends utterances to a feature file; see the module docstring for crash safety.

    ``seal_seconds``: how often the current part file is sealed (work lost on a kill is at
    most this much plus the utterance in progress).
    """

    def __init__(self, path: str | os.PathLike, attrs: dict, seal_seconds: float = 10.0):
        self.path = Path(path).absolute()
        self.attrs = attrs
        self.seal_seconds = seal_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = Path(f"{self.path}.lock")
        self._lock_fd: int | None = _acquire_lock(self._lock_path, self.path)
        try:
            self._open()
        except BaseException:
            self._release_lock()
            raise

    def _open(self) -> None:
        if self.path.exists():
            try:
                with h5py.File(self.path, "r") as h5:
                    existing = read_attrs(h5)
            except OSError as exc:
                raise StoreError(f"{self.path}: not a readable HDF5 feature file ({exc})") from None
            if existing.get("format_version") is None:
                raise StoreError(f"{self.path}: exists but is not an audioembed feature file; choose another -o")
            diffs = identity_mismatch(existing, self.attrs)
            if diffs:
                raise StoreError(
                    f"{self.path} was made with another upstream or configuration; refusing to mix "
                    f"features ({'; '.join(diffs)}). Use another -o or delete the file."
                )
        else:
            _write_header(self.path, self.attrs)
        consolidate(self.path)  # recover sealed parts of an interrupted run
        with h5py.File(self.path, "r") as h5:
            self.done_ids = {decode_key(k) for k in h5[UTTERANCES]}
        self._pdir = parts_dir(self.path)
        self._part: h5py.File | None = None
        self._part_tmp: Path | None = None
        self._part_index = 0
        self._part_opened = 0.0
        self._current: tuple[str, UtteranceWriter] | None = None

    def _ensure_part(self) -> h5py.File:
        if self._part is None:
            self._pdir.mkdir(exist_ok=True)
            while (self._pdir / f"part-{self._part_index:06d}.h5").exists():
                self._part_index += 1
            self._part_tmp = self._pdir / f"part-{self._part_index:06d}.h5.tmp"
            self._part = h5py.File(self._part_tmp, "w")
            self._part.create_group(UTTERANCES)
            self._part_opened = time.monotonic()
        return self._part

    def seal(self) -> None:
        """Make every finished utterance durable (atomic rename of the current part)."""
        if self._part is None:
            return
        assert self._current is None, "cannot seal while an utterance is being written"
        self._part.close()
        self._part = None
        final = self._part_tmp.with_suffix("")  # drop ".tmp"
        _fsync_file(self._part_tmp)
        os.replace(self._part_tmp, final)
        _fsync_dir(self._pdir)
        self._part_index += 1

    def begin(self, utterance_id: str, layers: Sequence[int], hidden_size: int) -> UtteranceWriter:
        part = self._ensure_part()
        key = encode_key(utterance_id)
        utts = part[UTTERANCES]
        if key in utts:  # left over from an abandoned attempt in this part
            del utts[key]
        writer = UtteranceWriter(utts.create_group(key), layers, hidden_size, self.attrs["pooling"], self.attrs["dtype"])
        self._current = (utterance_id, writer)
        return writer

    def commit(self, attrs: dict) -> None:
        utterance_id, writer = self._current
        writer.finish({"id": utterance_id, **attrs})
        self._current = None
        self.done_ids.add(utterance_id)
        if time.monotonic() - self._part_opened >= self.seal_seconds:
            self.seal()

    def abort(self) -> None:
        """Drop the utterance in progress (e.g. its audio turned out to be corrupt)."""
        if self._current is None:
            return
        utterance_id, writer = self._current
        self._current = None
        name = writer.group.name
        del self._part[name]

    def close(self) -> None:
        """Seal and merge everything into the main file."""
        try:
            self.abort()
            self.seal()
            consolidate(self.path)
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            _release_lock(self._lock_path, self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_store_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files that make up a store: main file, sealed parts, or a set of shard files.

    ``OUT.h5`` also finds ``OUT-shard*of*.h5`` when ``OUT.h5`` itself does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.exists():
            files.append(p)
            files.extend(sorted(parts_dir(p).glob("part-*.h5")))
            continue
        shards = sorted(Path(s) for s in glob.glob(glob.escape(str(p.with_suffix(""))) + "-shard*of*" + (p.suffix or ".h5")))
        shards = [s for s in shards if _SHARD_RE.search(s.name)]
        if not shards:
            raise StoreError(f"{p}: no such feature file (and no shard files {p.stem}-shardKofN{p.suffix})")
        counts = {int(_SHARD_RE.search(s.name).group(2)) for s in shards}
        if len(counts) != 1:
            raise StoreError(f"{p}: shard files with different shard counts: {[s.name for s in shards]}")
        (count,) = counts
        present = {int(_SHARD_RE.search(s.name).group(1)) for s in shards}
        missing = sorted(set(range(count)) - present)
        if missing:
            raise StoreError(f"{p}: shard set incomplete, missing shard(s) {missing} of {count}")
        for s in shards:
            files.append(s)
            files.extend(sorted(parts_dir(s).glob("part-*.h5")))
    return files


@dataclass(frozen=True)
class UtteranceInfo:
    id: str
    path: str
    num_frames: int
    num_samples: int
    duration: float
    metadata: dict


class FeatureReader:
    """Reads a feature store (one file, its sealed parts, or a shard set) as one.

    >>> with FeatureReader("feats.h5") as feats:
    ...     x = feats.get("spk1/utt1.wav", layer=-1)   # numpy array
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        self.files = resolve_store_files(paths)
        self._handles: list[h5py.File] = []
        self._where: dict[str, int] = {}
        self.attrs: dict = {}
        for i, path in enumerate(self.files):
            try:
                h5 = h5py.File(path, "r")
            except OSError as exc:
                self.close()
                raise StoreError(f"{path}: cannot open feature file ({exc})") from None
            self._handles.append(h5)
            attrs = read_attrs(h5)
            if "format_version" in attrs:  # part files carry no header
                if not self.attrs:
                    self.attrs = attrs
                else:
                    diffs = identity_mismatch(self.attrs, attrs)
                    if diffs:
                        self.close()
                        raise StoreError(f"{path} does not belong to the same store as {self.files[0]}: {'; '.join(diffs)}")
            for key in h5[UTTERANCES]:
                self._where.setdefault(decode_key(key), i)
        if not self.attrs:
            self.close()
            raise StoreError(f"{self.files[0]}: no audioembed header found")
        self.layers: list[int] = [int(x) for x in np.atleast_1d(self.attrs["layers"])]
        self.pooling: str = self.attrs["pooling"]

    @property
    def ids(self) -> list[str]:
        return sorted(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _group(self, utterance_id: str) -> h5py.Group:
        try:
            return self._handles[self._where[utterance_id]][UTTERANCES][encode_key(utterance_id)]
        except KeyError:
            raise KeyError(f"utterance '{utterance_id}' not in {self.files[0]}") from None

    def _layer(self, layer: int) -> int:
        if layer < 0:
            layer = self.layers[layer] if -layer <= len(self.layers) else layer
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not stored (stored layers: {self.layers})")
        return layer

    def get(self, utterance_id: str, layer: int = -1) -> np.ndarray:
        """Features of one utterance and layer (negative indices count stored layers)."""
        return self._group(utterance_id)[layer_name(self._layer(layer))][()]

    def get_layers(self, utterance_id: str) -> dict[int, np.ndarray]:
        group = self._group(utterance_id)
        return {layer: group[layer_name(layer)][()] for layer in self.layers}

    def info(self, utterance_id: str) -> UtteranceInfo:
        a = read_attrs(self._group(utterance_id))
        return UtteranceInfo(
            id=utterance_id,
            path=a.get("path", ""),
            num_frames=int(a.get("num_frames", 0)),
            num_samples=int(a.get("num_samples", 0)),
            duration=float(a.get("duration", 0.0)),
            metadata=json.loads(a.get("metadata", "{}")),
        )

    def stack(self, layer: int = -1, ids: Sequence[str] | None = None) -> np.ndarray:
        """``(N, D)`` matrix of pooled features (pooling "mean" or "mean+std")."""
        if self.pooling in ("none", "chunks"):
            raise StoreError(f"{self.files[0]}: frame-level features cannot be stacked; extract with --pool mean")
        ids = self.ids if ids is None else ids
        return np.stack([self.get(i, layer) for i in ids]) if ids else np.zeros((0, 0))

    def close(self) -> None:
        for h5 in self._handles:
            h5.close()
        self._handles = []

    def __enter__(self) -> "FeatureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gather(inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike) -> int:
    """Merge a shard set (or any stores with the same identity) into one file; returns utterances."""
    files = resolve_store_files(inputs)
    output = Path(output)
    with FeatureReader(files) as reader:
        attrs = dict(reader.attrs)
    attrs.pop("shard_index", None)
    attrs.pop("shard_count", None)
    tmp = output.with_name(output.name + ".tmp")
    with h5py.File(tmp, "w") as dst:
        for key, value in attrs.items():
            dst.attrs[key] = value
        dst.create_group(UTTERANCES)
        count = _copy_utterances(files, dst)
    _fsync_file(tmp)
    os.replace(tmp, output)
    return count
