"""``audioembed data get``: fetch a dataset's official files, check them, unpack them in place.

* Downloads go to ``<dataset folder>/.downloads/<file>.part`` and continue where they stopped
  (HTTP ``Range``); a server that ignores ``Range`` restarts the file from zero.
* A finished file is checked against its published checksum (SHA-256, else MD5) before
  anything is unpacked; a mismatch removes the file and says so (rerun to fetch it again).
  A file that has no published checksum is downloaded all the same, and the log says plainly,
  before the download, that it is not verified. ``verify=False`` (``--no-verify``) skips the
  checks of pinned files too (e.g. for a mirror that repacks them).
* Archives are unpacked member by member, refusing absolute paths, ``..`` and links that point
  outside the dataset folder; then a preparer may write the manifest the task loader reads
  (FSDD's ``labels.csv``, ESC-50's ``manifest.csv``). A ``.complete`` marker ends the job, so a
  rerun after an interruption repeats only what was not finished.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from .datasets import Dataset, DatasetError, RemoteFile, dataset_folder

CHUNK = 1 << 16
#: seconds without any data before a download gives up (a rerun resumes it)
TIMEOUT_SECONDS = 60.0
COMPLETE_MARKER = ".complete"
#: how the checksum algorithms are named in messages
ALGORITHM_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def unverified_notice(dataset: Dataset) -> str | None:
    """The line ``get`` prints when some of ``dataset``'s files have no published checksum, else None."""
    unpinned = [f.filename for f in dataset.files if f.checksum is None]
    if not unpinned:
        return None
    return f"{dataset.name}: no published checksum for {', '.join(unpinned)}: the download is not verified"


def _progress(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not enabled, file=sys.stderr)


def fetch(remote: RemoteFile, folder: Path, *, verify: bool = True, progress: bool = True) -> Path:
    """Download ``remote`` into ``folder`` (resuming a ``.part``); returns the file, checked against its
    published checksum when it has one and ``verify`` is set."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    if not target.exists():
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(remote.url, headers={"User-Agent": "audioembed"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: the part is whole
                part.replace(target)
                response = None
            else:
                raise DatasetError(f"{remote.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DatasetError(f"{remote.url}: cannot connect ({reason}); rerun the same command to resume") from None
        if response is not None:
            with response:
                if offset and response.status != 206:  # the server ignored Range: start again
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else None
                bar = _progress(total, offset, remote.filename, progress)
                try:
                    with open(part, "ab" if offset else "wb") as out:
                        while block := response.read(CHUNK):
                            out.write(block)
                            bar.update(len(block))
                except (OSError, http.client.HTTPException) as exc:
                    raise DatasetError(f"{remote.url}: download interrupted ({type(exc).__name__}); "
                                       "rerun the same command to resume") from None
                finally:
                    bar.close()
                if total is not None and part.stat().st_size < total:
                    raise DatasetError(f"{remote.url}: connection closed after {part.stat().st_size} of {total} bytes; "
                                       "rerun the same command to resume")
            part.replace(target)
    if verify and remote.checksum is not None:
        algorithm, expected = remote.checksum
        actual = digest_of(target, algorithm)
        if actual != expected.lower():
            target.unlink()
            raise DatasetError(f"{target.name}: checksum mismatch ({ALGORITHM_NAMES[algorithm]} "
                               f"{actual}, expected {expected}); the file was removed, rerun to download it again")
    return target


def _inside(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise DatasetError(f"archive member {name!r} would be written outside {root}; refusing the archive")
    return path


def unpack(archive: Path, kind: str, destination: Path) -> None:
    """Unpack ``archive`` into ``destination`` safely (no member may land outside it)."""
    destination = destination.resolve()
    if kind == "file":
        shutil.copyfile(archive, destination / archive.name)
        return
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _inside(destination, member.filename)
            zf.extractall(destination)
        return
    if kind == "tar":
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _inside(destination, member.name)
                if member.issym() or member.islnk():
                    _inside(destination, os.path.join(os.path.dirname(member.name), member.linkname)
                            if member.issym() else member.linkname)
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    raise DatasetError(f"{archive.name}: member {member.name!r} is a device or fifo; refusing the archive")
            tf.extractall(destination, members=members, filter="data") if hasattr(tarfile, "data_filter") \
                else tf.extractall(destination, members=members)
        return
    raise DatasetError(f"{archive.name}: unknown archive kind {kind!r}")


def _prepare_fsdd(folder: Path) -> None:
    """labels.csv (path, label, digit, speaker, index) from ``<digit>_<speaker>_<index>.wav`` names.

    ``label`` repeats the digit so that ``downstream classify`` works without ``--label-column``.
    """
    rows = []
    for wav in sorted(folder.rglob("*.wav")):
        match = re.fullmatch(r"(\d)_([a-z]+)_(\d+)", wav.stem)
        if match:
            rows.append((wav.relative_to(folder).as_posix(), match[1], *match.groups()))
    if not rows:
        raise DatasetError(f"{folder}: no <digit>_<speaker>_<n>.wav recordings after unpacking")
    _write_csv(folder / "labels.csv", ("path", "label", "digit", "speaker", "index"), rows)


def _prepare_esc50(folder: Path) -> None:
    """manifest.csv (path, label, fold) from ESC-50's meta/esc50.csv (label = the category name)."""
    meta = next(folder.rglob("esc50.csv"), None)
    if meta is None:
        raise DatasetError(f"{folder}: meta/esc50.csv not found after unpacking")
    audio = meta.parent.parent / "audio"
    with open(meta, newline="") as handle:
        rows = [((audio / r["filename"]).relative_to(folder).as_posix(), r["category"], r["fold"])
                for r in csv.DictReader(handle)]
    _write_csv(folder / "manifest.csv", ("path", "label", "fold"), rows)


def _write_csv(path: Path, header: tuple, rows: list) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text.getvalue())
    tmp.replace(path)


PREPARERS: dict[str, Callable[[Path], None]] = {"fsdd": _prepare_fsdd, "esc50": _prepare_esc50}


def install(dataset: Dataset, *, verify: bool = True, progress: bool = True,
            log: Callable[[str], None] = print, folder: Path | None = None) -> Path:
    """Download, check and unpack ``dataset`` into its folder; returns the path to give to ``--data``."""
    folder = folder or dataset_folder(dataset)
    if (folder / COMPLETE_MARKER).exists():
        log(f"{dataset.name}: already installed in {folder}")
        return folder / dataset.data_path
    if not dataset.downloadable:
        raise DatasetError(f"{dataset.name} cannot be downloaded automatically: {dataset.manual or 'no files listed'}; "
                           f"put it in {folder} (layout: {dataset.layout})")
    notice = unverified_notice(dataset) if verify else f"{dataset.name}: --no-verify: the download is not verified"
    if notice:
        log(notice)
    downloads = folder / ".downloads"
    parts: list[Path] = []
    for remote in dataset.files:
        path = fetch(remote, downloads, verify=verify, progress=progress)
        done = downloads / (remote.filename + ".unpacked")
        if remote.unpack == "part":
            parts.append(path)
            continue
        if done.exists():
            continue
        if remote.unpack == "zip-parts":  # a zip split into numbered parts: join them, then unzip
            joined = downloads / (path.name.rsplit(".", 1)[0] + ".joined")
            with open(joined, "wb") as out:
                for piece in [*parts, path]:
                    with open(piece, "rb") as handle:
                        shutil.copyfileobj(handle, out)
            log(f"{dataset.name}: unpacking {joined.name}")
            unpack(joined, "zip", folder)
            joined.unlink()
            parts = []
        else:
            log(f"{dataset.name}: unpacking {path.name}")
            unpack(path, remote.unpack, folder)
        done.touch()
    if dataset.prepare:
        PREPARERS[dataset.prepare](folder)
    (folder / COMPLETE_MARKER).write_text("\n".join(f.url for f in dataset.files) + "\n")
    shutil.rmtree(downloads)  # the archives are checked and unpacked: do not keep them twice
    return folder / dataset.data_path
