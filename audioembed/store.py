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
    /failed/<key>           attrs: id, reason -- an input a run could not extract (a rerun retries it)

One writer at a time (a lock file that is only trusted while it is the file at its path);
readers take a consistent snapshot; a shard file records what a complete shard holds.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote, unquote

import h5py
import numpy as np

from .errors import AudioEmbedError
from .messages import printable

FORMAT_VERSION = 1
UTTERANCES = "utterances"
#: group of failure records (``<key>`` attrs: id, reason): inputs a run could not extract
FAILED = "failed"
#: attributes of a shard file that say what a complete shard holds
SHARD_KEYS = ("shard_index", "shard_count", "shard_item_count", "shard_ids_sha256", "input_item_count", "input_ids_sha256")
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


class StoreError(AudioEmbedError, RuntimeError):
    """A feature file cannot be used as asked; the message names the file."""


class DiskFullError(StoreError):
    """The disk (or quota) filled up while writing; what was sealed before is kept."""


class StoreWarning(UserWarning):
    """A store is usable but something about it deserves a look (e.g. a shard set that may be incomplete)."""


#: errors h5py raises for unreadable, corrupted or unwritable files
_H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError)
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    # HDF5 reports the C errno inside its message text (h5py does not always set .errno)
    return any(f"errno = {code}," in str(exc) for code in _DISK_FULL_ERRNOS)


def _reason(exc: BaseException) -> str:
    """One-line reason of an OS or HDF5 error, without the path (the caller names the file)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return exc.strerror
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError quotes its str
    return printable(" ".join(text.split())) or type(exc).__name__


def _write_failure(path: str | os.PathLike, exc: BaseException) -> StoreError:
    if _is_disk_full(exc):
        what = "disk quota exceeded" if "errno = 122," in str(exc) or getattr(exc, "errno", None) == errno.EDQUOT else "no space left on device"
        return DiskFullError(
            f"{printable(path)}: {what}; utterances finished before the last checkpoint are kept, "
            "free some space and rerun the same command to continue"
        )
    return StoreError(f"{printable(path)}: cannot write ({_reason(exc)})")


def _read_failure(path: str | os.PathLike, exc: BaseException) -> StoreError:
    return StoreError(f"{printable(path)}: cannot read feature file, it may be corrupted ({_reason(exc)})")


@contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn an h5py error while reading ``path`` into one StoreError line naming the file."""
    try:
        yield
    except StoreError:
        raise
    except _H5_ERRORS as exc:
        raise _read_failure(path, exc) from None


def unstorable_reason(text: str) -> str | None:
    """Why ``text`` cannot be an utterance id (or path) in an HDF5 attribute, or None if it can."""
    if not text:
        return "is empty"
    if "\x00" in text:
        return "contains a NUL character, which HDF5 cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a file name with undecodable bytes?), which HDF5 cannot store"
    return None


def ids_fingerprint(ids: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of utterance ids (shard files record it)."""
    data = json.dumps(sorted(set(ids)), ensure_ascii=True).encode()
    return hashlib.sha256(data).hexdigest()[:32]


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


def _remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_header(path: Path, attrs: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            for key, value in attrs.items():
                h5.attrs[key] = value
            h5.create_group(UTTERANCES)
        _fsync_file(tmp)
    except _H5_ERRORS as exc:
        _remove_quietly(tmp)
        raise _write_failure(path, exc) from None
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_header(path: Path) -> dict:
    """Header attributes of a store file; listing its utterances also proves its index readable."""
    with _reading(path):
        with h5py.File(path, "r") as h5:
            attrs = read_attrs(h5)
            if UTTERANCES in h5:
                len(list(h5[UTTERANCES]))
            if FAILED in h5:
                len(list(h5[FAILED]))
    return attrs


def identity_mismatch(existing: dict, wanted: dict) -> list[str]:
    """Human-readable differences in the identity attributes."""
    diffs = []
    for key in IDENTITY_KEYS:
        old, new = _normalise_attr(existing.get(key)), _normalise_attr(wanted.get(key))
        if old != new:
            diffs.append(f"{key}: file has {old!r}, this run wants {new!r}")
    return diffs


def _copy_records(src: h5py.File, dst: h5py.File) -> int:
    """Copy utterances (those not yet in ``dst``) and failure records (newest wins); returns utterances."""
    copied = 0
    dst_utts = dst.require_group(UTTERANCES)
    for key in src[UTTERANCES]:
        if key not in dst_utts:
            src.copy(src[UTTERANCES][key], dst_utts, name=key)
            copied += 1
    if FAILED in src:
        dst_failed = dst.require_group(FAILED)
        for key in src[FAILED]:
            if key in dst_failed:
                del dst_failed[key]
            src.copy(src[FAILED][key], dst_failed, name=key)
    return copied


def _drop_resolved_failures(dst: h5py.File) -> None:
    """A failure record is obsolete once a later run extracted the utterance."""
    if FAILED in dst:
        failed, utts = dst[FAILED], dst[UTTERANCES]
        for key in [k for k in failed if k in utts]:
            del failed[key]


def _copy_store(dst: h5py.File, path: str | os.PathLike, src: h5py.File | None = None) -> int:
    """Copy the records of the store at ``path`` into ``dst``; returns utterances added.

    Reads through ``src`` when the caller holds it open already. A source that cannot be read
    raises a StoreError naming it; a full disk and errors of ``dst`` pass through unchanged.
    """
    try:
        if src is not None:
            return _copy_records(src, dst)
        with h5py.File(path, "r") as opened:
            return _copy_records(opened, dst)
    except _H5_ERRORS as exc:
        if _is_disk_full(exc) or isinstance(exc, StoreError):
            raise
        raise _read_failure(path, exc) from None


@contextmanager
def _replacement(tmp: Path, target: Path) -> Iterator[None]:
    """Write ``tmp``, the file that will replace ``target``: synced when the block succeeds,
    removed when it fails (HDF5 errors become one StoreError naming ``target``)."""
    try:
        yield
        _fsync_file(tmp)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, _H5_ERRORS) and not isinstance(exc, StoreError):
            raise _write_failure(target, exc) from None
        raise


def _sealed_parts(path: Path) -> list[Path]:
    # glob.glob (not Path.glob): a parts folder deleted while it is listed gives no error
    return sorted(Path(p) for p in glob.glob(glob.escape(str(parts_dir(path))) + "/part-*.h5"))


def consolidate(path: str | os.PathLike) -> int:
    """Merge sealed part files into the main file (atomic replace); returns utterances added.

    The merged copy replaces the main file before any part is deleted, so a reader always
    finds every finished utterance in main + the parts it can still open.
    """
    path = Path(path)
    pdir = parts_dir(path)
    if not pdir.is_dir():
        return 0
    parts = _sealed_parts(path)
    added = 0
    if parts:
        tmp = path.with_name(path.name + ".consolidate.tmp")
        with _replacement(tmp, path):
            shutil.copyfile(path, tmp)
            with h5py.File(tmp, "a") as dst:
                for part in parts:
                    added += _copy_store(dst, part)
                _drop_resolved_failures(dst)
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
    """Writes one utterance into the current part file, window by window.

    ``num_rows``, when the caller knows it, sizes each layer's dataset exactly (contiguous
    storage): short utterances then cost their bytes plus a small header, not a whole chunk.
    ``guard`` turns h5py errors into StoreErrors (the FeatureWriter's marks its part broken).
    """

    def __init__(self, group: h5py.Group, layers: Sequence[int], hidden_size: int, pooling: str, dtype: str,
                 num_rows: int | None = None, guard=None):
        self.group = group
        self.layers = list(layers)
        self.pooling = pooling
        self.dtype = np.dtype(dtype)
        self.num_frames = 0
        self.num_rows = 0
        self.expected_rows = num_rows
        #: layers whose stored values (after the cast to ``dtype``) hold NaN or Inf
        self.nonfinite_layers: set[int] = set()
        self._guard = guard or (lambda: _writing_to(group.file.filename))
        if pooling in ("none", "chunks"):
            with self._guard():
                self.datasets = {layer: self._create(layer, hidden_size) for layer in self.layers}
        else:
            self.sums = {layer: np.zeros(hidden_size, np.float64) for layer in self.layers}
            self.sq_sums = {layer: np.zeros(hidden_size, np.float64) for layer in self.layers}

    def _create(self, layer: int, hidden_size: int) -> h5py.Dataset:
        if self.expected_rows is not None:
            return self.group.create_dataset(layer_name(layer), shape=(self.expected_rows, hidden_size), dtype=self.dtype)
        # Length unknown: ~128 KiB chunks, so a short utterance wastes at most one partial chunk
        # and whole-utterance reads stay a handful of chunk reads.
        chunk_rows = max(1, min(1024, (1 << 17) // max(1, hidden_size * self.dtype.itemsize)))
        return self.group.create_dataset(
            layer_name(layer),
            shape=(0, hidden_size),
            maxshape=(None, hidden_size),
            dtype=self.dtype,
            chunks=(chunk_rows, hidden_size),
        )

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
        end = self.num_rows + rows
        if self.expected_rows is not None and end > self.expected_rows:
            raise StoreError(f"utterance '{printable(self.group.attrs.get('id', self.group.name))}': "
                             f"{end} rows written, {self.expected_rows} announced")
        with self._guard():
            for layer in self.layers:
                block = frames[layer].astype(self.dtype, copy=False)
                if not np.isfinite(block).all():
                    self.nonfinite_layers.add(layer)
                ds = self.datasets[layer]
                if self.expected_rows is None:
                    ds.resize(end, axis=0)
                ds[self.num_rows : end] = block
        self.num_rows = end
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

    def pooled(self) -> dict[int, np.ndarray]:
        """The vectors :meth:`finish` stores for pooled files, already in the stored dtype."""
        n = max(self.num_frames, 1)
        vectors = {}
        with np.errstate(all="ignore"):  # non-finite sums are reported through nonfinite_layers
            for layer in self.layers:
                mean = self.sums[layer] / n
                vec = mean
                if self.pooling == "mean+std":
                    var = np.maximum(self.sq_sums[layer] / n - np.square(mean), 0.0)
                    vec = np.concatenate([mean, np.sqrt(var)])
                vectors[layer] = vec.astype(self.dtype)
                if not np.isfinite(vectors[layer]).all():
                    self.nonfinite_layers.add(layer)
        return vectors

    def finish(self, attrs: dict) -> None:
        with self._guard():
            if self.pooling in ("mean", "mean+std"):
                for layer, vec in self.pooled().items():
                    self.group.create_dataset(layer_name(layer), data=vec)
            elif self.expected_rows is not None and self.num_rows != self.expected_rows:
                raise StoreError(f"utterance '{printable(attrs.get('id', self.group.name))}': "
                                 f"{self.num_rows} rows written, {self.expected_rows} announced")
            for key, value in attrs.items():
                self.group.attrs[key] = value
            self.group.attrs["num_frames"] = self.num_frames


def _close_discarded(h5: h5py.File) -> None:
    """Close a file whose contents are being thrown away, even on a full disk.

    Closing flushes HDF5's caches; on a full disk that flush fails, and HDF5 is left with a
    half-closed file that crashes the interpreter later (seen as a segfault at exit). The
    data are unwanted, so the file descriptor is pointed at /dev/null first: the flush
    succeeds into nothing and the file closes cleanly.
    """
    try:
        fd = h5.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except Exception:  # noqa: BLE001 - not a plain POSIX file: just try to close it
        pass
    try:
        h5.close()
    except Exception:  # noqa: BLE001 - the file is deleted next
        pass


@contextmanager
def _writing_to(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except _H5_ERRORS as exc:
        raise _write_failure(path, exc) from None


class FeatureWriter:
    """Appends utterances to a feature file; see the module docstring for crash safety.

    ``seal_seconds``: how often the current part file is sealed (work lost on a kill is at
    most this much plus the utterance in progress). A write error (e.g. a full disk) leaves
    the current part unsealed: it is discarded on close, everything sealed before is kept.
    """

    def __init__(self, path: str | os.PathLike, attrs: dict, seal_seconds: float = 10.0):
        self.path = Path(path).absolute()
        self.attrs = attrs
        self.seal_seconds = seal_seconds
        self._part: h5py.File | None = None
        self._part_tmp: Path | None = None
        self._broken = False
        self._lock_fd: int | None = None
        self._lock_path = Path(f"{self.path}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _acquire_lock(self._lock_path, self.path)
        except OSError as exc:
            raise _write_failure(self.path, exc) from None
        try:
            self._open()
        except BaseException:
            self._release_lock()
            raise

    def _open(self) -> None:
        if self.path.exists():
            existing = _read_header(self.path)
            if existing.get("format_version") is None:
                raise StoreError(f"{printable(self.path)}: exists but is not an audioembed feature file; choose another -o")
            diffs = identity_mismatch(existing, self.attrs)
            if diffs:
                raise StoreError(
                    f"{printable(self.path)} was made with another upstream or configuration; refusing to mix "
                    f"features ({'; '.join(diffs)}). Use another -o or delete the file."
                )
            old, new = existing.get("input_ids_sha256"), self.attrs.get("input_ids_sha256")
            if old and new and old != new:
                raise StoreError(
                    f"{printable(self.path)} is a shard of another list of inputs ({existing.get('input_item_count')} "
                    f"items; this run has {self.attrs.get('input_item_count')}): its shards would not add up to "
                    "either list. Use the same inputs, another -o, or delete the shard files."
                )
        else:
            _write_header(self.path, self.attrs)
        consolidate(self.path)  # recover sealed parts of an interrupted run
        with _reading(self.path), h5py.File(self.path, "r") as h5:
            self.done_ids = {decode_key(k) for k in h5[UTTERANCES]}
        self._pdir = parts_dir(self.path)
        self._part_index = 0
        self._part_opened = 0.0
        self._current: tuple[str, UtteranceWriter] | None = None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Any write error makes the current part untrustworthy: it will be discarded, not sealed."""
        try:
            yield
        except StoreError:
            self._broken = True
            raise
        except _H5_ERRORS as exc:
            self._broken = True
            raise _write_failure(self.path, exc) from None

    def _ensure_part(self) -> h5py.File:
        if self._broken:
            raise StoreError(f"{printable(self.path)}: an earlier write failed; nothing more is written in this run")
        if self._part is None:
            self._pdir.mkdir(exist_ok=True)
            while (self._pdir / f"part-{self._part_index:06d}.h5").exists():
                self._part_index += 1
            self._part_tmp = self._pdir / f"part-{self._part_index:06d}.h5.tmp"
            self._part = h5py.File(self._part_tmp, "w")
            self._part.create_group(UTTERANCES)
            self._part_opened = time.monotonic()
        return self._part

    def _discard_part(self) -> None:
        """Close and delete the unsealed part after a write error (nothing in it is kept)."""
        part, self._part = self._part, None
        self._current = None
        if part is not None:
            _close_discarded(part)
        _remove_quietly(self._part_tmp)
        self._part_tmp = None

    def seal(self) -> None:
        """Make every finished utterance durable (atomic rename of the current part)."""
        if self._part is None:
            return
        assert self._current is None, "cannot seal while an utterance is being written"
        with self._writing():
            self._part.flush()  # fails (if the disk is full) while the file can still be discarded cleanly
            self._part.close()
            self._part = None
            final = self._part_tmp.with_suffix("")  # drop ".tmp"
            _fsync_file(self._part_tmp)
            os.replace(self._part_tmp, final)
            _fsync_dir(self._pdir)
        self._part_tmp = None
        self._part_index += 1

    def begin(self, utterance_id: str, layers: Sequence[int], hidden_size: int, num_rows: int | None = None) -> UtteranceWriter:
        """Start an utterance; ``num_rows`` (frame-level files), when known, lets its storage fit it exactly."""
        problem = unstorable_reason(utterance_id)
        if problem:
            raise StoreError(f"utterance id {printable(repr(utterance_id))} {problem}")
        with self._writing():
            part = self._ensure_part()
            key = encode_key(utterance_id)
            utts = part[UTTERANCES]
            if key in utts:  # left over from an abandoned attempt in this part
                del utts[key]
            writer = UtteranceWriter(utts.create_group(key), layers, hidden_size, self.attrs["pooling"],
                                     self.attrs["dtype"], num_rows=num_rows, guard=self._writing)
        self._current = (utterance_id, writer)
        return writer

    def commit(self, attrs: dict) -> None:
        utterance_id, writer = self._current
        with self._writing():
            # No flush per utterance (it cost as much as writing one): nothing in an unsealed part
            # is durable or visible anyway, and seal() flushes explicitly, so a full disk still
            # raises there, where the part can be discarded cleanly, not in a destructor.
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
        if self._broken:
            return  # the whole part is discarded
        with self._writing():
            del self._part[writer.group.name]
            self._part.flush()

    def record_failure(self, utterance_id: str, reason: str) -> None:
        """Note in the store that ``utterance_id`` could not be extracted (a rerun retries it).

        Shard sets count these as done: a shard whose run finished is complete even if some of
        its inputs were bad.
        """
        if unstorable_reason(utterance_id) or self._broken:
            return  # such ids are reported by the input check; a broken part takes no more writes
        with self._writing():
            failed = self._ensure_part().require_group(FAILED)
            key = encode_key(utterance_id)
            if key in failed:
                del failed[key]
            record = failed.create_group(key)
            record.attrs["id"] = utterance_id
            record.attrs["reason"] = printable(reason)
            self._part.flush()

    def close(self) -> None:
        """Seal and merge everything into the main file (after a write error: drop the unsealed part)."""
        try:
            if self._broken:
                self._discard_part()
                return
            try:
                self.abort()
                self.seal()
            except StoreError:
                self._discard_part()
                raise
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


def _shard_files(p: Path) -> list[Path]:
    pattern = glob.escape(str(p.with_suffix(""))) + "-shard*of*" + (p.suffix or ".h5")
    return sorted(Path(s) for s in glob.glob(pattern) if _SHARD_RE.search(Path(s).name))


def resolve_store_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files that make up a store: main file, sealed parts, or a set of shard files.

    ``OUT.h5`` also finds ``OUT-shard*of*.h5`` when ``OUT.h5`` itself does not exist. Whether
    a shard set is complete is checked by :class:`FeatureReader`, which reads the shards.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.exists():
            files.append(p)
            files.extend(_sealed_parts(p))
            continue
        shards = _shard_files(p)
        if not shards:
            raise StoreError(f"{printable(p)}: no such feature file (and no shard files {printable(p.stem)}-shardKofN{printable(p.suffix)})")
        counts = {int(_SHARD_RE.search(s.name).group(2)) for s in shards}
        if len(counts) != 1:
            raise StoreError(f"{printable(p)}: shard files with different shard counts: {[printable(s.name) for s in shards]}")
        for s in shards:
            files.append(s)
            files.extend(_sealed_parts(s))
    return files


@dataclass(frozen=True)
class UtteranceInfo:
    id: str
    path: str
    num_frames: int
    num_samples: int
    duration: float
    metadata: dict


class _PartVanished(StoreError):
    """A sealed part was merged and deleted between listing and opening it."""


#: how often a reader re-lists a store that a writer keeps consolidating under it
_SNAPSHOT_ATTEMPTS = 20


class FeatureReader:
    """Reads a feature store (one file, its sealed parts, or a shard set) as one.

    >>> with FeatureReader("feats.h5") as feats:
    ...     x = feats.get("spk1/utt1.wav", layer=-1)   # numpy array

    A shard set must be complete (every shard present, each holding all its inputs or a
    failure record for them); ``allow_incomplete=True`` reads what is there and warns
    (:class:`StoreWarning`) instead. ``warnings`` lists what was warned about.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], allow_incomplete: bool = False):
        self._handles: list[h5py.File] = []
        for _ in range(_SNAPSHOT_ATTEMPTS):
            self.files = resolve_store_files(paths)
            try:
                self._open_all()
                break
            except _PartVanished:
                self.close()  # a writer consolidated meanwhile: its main file now has that part
        else:
            raise StoreError(f"{printable(self.files[0])}: the store kept changing while it was opened; try again")
        self.layers: list[int] = [int(x) for x in np.atleast_1d(self.attrs["layers"])]
        self.pooling: str = self.attrs["pooling"]
        self.warnings: list[str] = []
        try:
            problems, notes = self._shard_set_problems()
        except StoreError:
            self.close()
            raise
        if problems and not allow_incomplete:
            self.close()
            raise StoreError(
                f"{printable(self.files[0])}: incomplete shard set: {'; '.join(problems)}. Rerun the extract "
                "command of each short shard to finish it, or pass --allow-incomplete (allow_incomplete=True) "
                "to use what is there"
            )
        for message in notes + [f"{printable(self.files[0])}: incomplete shard set: {p}" for p in problems]:
            self.warnings.append(message)
            warnings.warn(message, StoreWarning, stacklevel=2)

    def _open_all(self) -> None:
        self._handles = []
        self._where: dict[str, int] = {}
        self._failed: dict[str, str] = {}
        self._headers: dict[int, dict] = {}  # file index -> header attributes (main and shard files)
        self._owner: list[int] = []  # file index -> index of the main/shard file it belongs to
        self._ids_in: list[set[str]] = []  # file index -> utterance ids it holds
        self._failed_in: list[set[str]] = []  # file index -> ids it holds failure records of
        self.attrs: dict = {}
        for i, path in enumerate(self.files):
            try:
                h5 = h5py.File(path, "r")
            except _H5_ERRORS as exc:
                self.close()
                if path.parent.name.endswith(".parts") and not path.exists():
                    raise _PartVanished() from None
                raise _read_failure(path, exc) from None
            self._handles.append(h5)
            try:
                with _reading(path):
                    attrs = read_attrs(h5)
                    keys = list(h5[UTTERANCES])
                    failed = [(k, h5[FAILED][k].attrs.get("reason", "")) for k in h5[FAILED]] if FAILED in h5 else []
            except StoreError:
                self.close()
                raise
            if "format_version" in attrs:  # part files carry no header
                self._headers[i] = attrs
                if not self.attrs:
                    self.attrs = attrs
                else:
                    diffs = identity_mismatch(self.attrs, attrs)
                    if diffs:
                        self.close()
                        raise StoreError(f"{printable(path)} does not belong to the same store as "
                                         f"{printable(self.files[0])}: {'; '.join(diffs)}")
            self._owner.append(i if i in self._headers or not self._owner else self._owner[-1])
            self._ids_in.append({decode_key(key) for key in keys})
            self._failed_in.append({decode_key(key) for key, _ in failed})
            for uid in self._ids_in[-1]:
                self._where.setdefault(uid, i)
            for key, reason in failed:
                self._failed[decode_key(key)] = _normalise_attr(reason)
        if not self.attrs:
            self.close()
            raise StoreError(f"{printable(self.files[0])}: no audioembed header found")

    def _shard_set_problems(self) -> tuple[list[str], list[str]]:
        """(what makes the shard set incomplete, notes about shards that cannot be checked)."""
        shards = {i: a for i, a in self._headers.items() if "shard_count" in a}
        if not shards:
            return [], []
        counts = {int(a["shard_count"]) for a in shards.values()}
        inputs = {a["input_ids_sha256"] for a in shards.values() if a.get("input_ids_sha256")}
        if len(counts) > 1 or len(inputs) > 1:
            raise StoreError(f"{printable(self.files[0])}: the shard files come from different runs "
                             f"(shard counts {sorted(counts)}, {len(inputs)} different input lists); read them separately")
        (count,) = counts
        problems, notes = [], []
        present = {int(a["shard_index"]) for a in shards.values()}
        missing = sorted(set(range(count)) - present)
        if missing:
            problems.append(f"missing shard(s) {', '.join(f'{k}/{count}' for k in missing)} (no file)")
        for i, attrs in sorted(shards.items(), key=lambda kv: int(kv[1]["shard_index"])):
            name = printable(self.files[i].name)
            label = f"shard {int(attrs['shard_index'])}/{count} ({name})"
            files = [j for j, owner in enumerate(self._owner) if owner == i]
            done = set().union(*(self._ids_in[j] for j in files))
            failed = set().union(*(self._failed_in[j] for j in files)) - done
            if "shard_item_count" not in attrs:
                notes.append(f"{label} was written by an older audioembed that did not record its item count; "
                             "cannot check that it is complete")
                continue
            expected = int(attrs["shard_item_count"])
            accounted = len(done | failed)
            if accounted < expected:
                extra = f", {len(failed)} failed" if failed else ""
                problems.append(f"{label} has {len(done)} of {expected} utterances{extra} "
                                f"(short by {expected - accounted})")
            elif ids_fingerprint(done | failed) != attrs.get("shard_ids_sha256"):
                problems.append(f"{label} holds other utterances than its input list assigned to it")
        return problems, notes

    @property
    def failed(self) -> dict[str, str]:
        """Inputs the extraction could not use (id -> reason), as recorded in the store."""
        return {uid: reason for uid, reason in sorted(self._failed.items()) if uid not in self._where}

    @property
    def ids(self) -> list[str]:
        return sorted(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _file_of(self, utterance_id: str) -> tuple[Path, h5py.Group]:
        try:
            index = self._where[utterance_id]
        except KeyError:
            raise KeyError(f"utterance '{printable(utterance_id)}' not in {printable(self.files[0])}") from None
        path = self.files[index]
        with _reading(path):
            return path, self._handles[index][UTTERANCES][encode_key(utterance_id)]

    def _group(self, utterance_id: str) -> h5py.Group:
        return self._file_of(utterance_id)[1]

    def _layer(self, layer: int) -> int:
        if layer < 0:
            layer = self.layers[layer] if -layer <= len(self.layers) else layer
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not stored (stored layers: {self.layers})")
        return layer

    def get(self, utterance_id: str, layer: int = -1) -> np.ndarray:
        """Features of one utterance and layer (negative indices count stored layers)."""
        name = layer_name(self._layer(layer))
        path, group = self._file_of(utterance_id)
        with _reading(path):
            return group[name][()]

    def get_layers(self, utterance_id: str) -> dict[int, np.ndarray]:
        path, group = self._file_of(utterance_id)
        with _reading(path):
            return {layer: group[layer_name(layer)][()] for layer in self.layers}

    def info(self, utterance_id: str) -> UtteranceInfo:
        path, group = self._file_of(utterance_id)
        with _reading(path):
            a = read_attrs(group)
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
            raise StoreError(f"{printable(self.files[0])}: frame-level features cannot be stacked; extract with --pool mean")
        ids = self.ids if ids is None else ids
        return np.stack([self.get(i, layer) for i in ids]) if ids else np.zeros((0, 0))

    def close(self) -> None:
        for h5 in self._handles:
            try:
                h5.close()
            except Exception:  # noqa: BLE001 - closing a read-only handle of a damaged file
                pass
        self._handles = []

    def __enter__(self) -> "FeatureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gather(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, allow_incomplete: bool = False
) -> int:
    """Merge a shard set (or any stores with the same identity) into one file; returns utterances.

    Refuses an incomplete shard set unless ``allow_incomplete`` (then it warns, see FeatureReader).
    Copies from the reader's open files, so a store consolidated meanwhile is read as one snapshot.
    """
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    with FeatureReader(inputs, allow_incomplete=allow_incomplete) as reader:
        attrs = {k: v for k, v in reader.attrs.items() if not k.startswith("shard_")}
        with _replacement(tmp, output):
            with h5py.File(tmp, "w") as dst:
                for key, value in attrs.items():
                    dst.attrs[key] = value
                dst.create_group(UTTERANCES)
                count = 0
                for path, src in zip(reader.files, reader._handles):
                    count += _copy_store(dst, path, src)
                _drop_resolved_failures(dst)
    os.replace(tmp, output)
    return count
