"""Parallel work (a process pool or the calling process) and atomic file writes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .. import midi_styles as ms
from .chorales import analyse_chorale
from .common import MusicCorpusError
from .planning import generate_labelled_piece
from .rendering import render_piece


class Workers:
    """A process pool (``jobs`` > 1) or the calling process; results keep their order
    with :meth:`map` and come as they finish with :meth:`unordered`."""

    def __init__(self, jobs: int):
        self.pool = None
        self.jobs = jobs
        if jobs > 1:
            # fork where available: workers inherit the imported modules (torch comes with
            # audioembed) instead of importing them again; they run numpy/soxr/music21 only.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(jobs)

    def map(self, fn: Callable, items: Sequence, chunksize: int = 1) -> list:
        if self.pool is None:
            return [fn(x) for x in items]
        return self.pool.map(fn, items, chunksize=chunksize)

    def unordered(self, fn: Callable, items: Sequence) -> Iterable:
        if self.pool is None:
            return (fn(x) for x in items)
        return self.pool.imap_unordered(fn, items, chunksize=1)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def analyse_job(name: str) -> dict:
    try:
        return analyse_chorale(name)
    except MusicCorpusError as err:
        return {"name": name, "status": "error", "reason": str(err)}


def piece_job(args: tuple) -> ms.Piece:
    style, seed, item_id, seconds, tonic, mode = args
    return generate_labelled_piece(style, seed, item_id, seconds=seconds, tonic=tonic, mode=mode)


def render_job(job: tuple) -> tuple[str, str | None]:
    """Render and write one item; returns (id, error or None)."""
    item_id, piece, soundfont, wav_path, mid_path, sample_rate, render_rate = job
    try:
        audio = render_piece(piece, soundfont, sample_rate, render_rate)
        _write_wav(Path(wav_path), audio, sample_rate)
        if mid_path:
            _write_midi(Path(mid_path), piece)
        return item_id, None
    except Exception as err:  # one bad item must not stop the build
        return item_id, f"{type(err).__name__}: {err}"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        sf.write(os.fspath(tmp), audio, int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_midi(path: Path, piece: ms.Piece) -> None:
    tmp = _tmp_name(path)
    try:
        piece.to_pretty_midi().write(os.fspath(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
