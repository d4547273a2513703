"""The run folder and its checkpoints.

* ``OUT/config.toml`` is the resolved config of the run; a rerun with another config is
  refused (run settings such as ``log_every`` or ``device`` may change), so a folder never
  mixes two runs.
* ``OUT/checkpoints/step-NNNNNNNN/trainer_state.pt`` holds everything that changes during
  training (weights, optimiser, schedule, step, RNG states). It is written to a temporary
  folder and renamed into place, so a folder with that name is complete; it is read back
  with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
* A checkpoint that cannot be read (truncated by a copy, damaged disk, foreign pickle) is
  reported by name and the previous one is used, so one bad file costs one checkpoint
  interval, not the run.
* ``OUT/.lock`` is held (``flock``) by the process training into the folder: a second one
  (e.g. a resumed recipe beside a forgotten process) is refused instead of writing
  checkpoints over the first's.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from .config import ConfigError, config_differences
from ..errors import AudioEmbedError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.toml"
LOCK_FILE = ".lock"


class CheckpointError(AudioEmbedError, RuntimeError):
    """The run folder cannot be used or resumed; the message names the file and what to do."""


def open_run_folder(
    output_dir: Path,
    identity: dict,
    saved_identity: Callable[[Path], dict],
    config_text: str,
    *,
    write: bool = True,
) -> bool:
    """Create ``output_dir`` with its ``config.toml``, or check that it already holds this run.

    ``identity`` is the config as a dict without its resumable fields; ``saved_identity``
    reads the same from a saved ``config.toml`` (raising :class:`ConfigError`). Returns
    ``True`` when the folder held this run (resume), ``False`` when it was started now.
    ``write=False`` (non-main ranks) checks without creating anything.
    """
    saved = output_dir / CONFIG_FILE
    if saved.is_file():
        try:
            previous = saved_identity(saved)
        except ConfigError as exc:
            raise CheckpointError(
                f"{output_dir} holds a run whose config cannot be read ({exc}); use another output folder"
            ) from None
        if previous != identity:
            diffs = config_differences(previous, identity)
            raise CheckpointError(
                f"{output_dir} holds a run with another config (differs in: {', '.join(diffs) or 'details'}); "
                "use another output folder or delete it"
            )
        return True
    if write:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = output_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(config_text, encoding="utf-8")
        os.replace(tmp, saved)
    return False


@contextmanager
def run_folder_lock(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``OUT/.lock`` while training into ``output_dir``; a folder another process holds is
    refused with its pid. ``enabled=False`` (non-main ranks of one run, which share the folder
    with their main rank) takes no lock. Where ``fcntl`` does not exist (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        enabled = False
    if not enabled:
        yield
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(output_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            raise CheckpointError(
                f"{output_dir} is being trained by another process{f' (pid {holder})' if holder else ''}; "
                "wait for it to finish or stop it, then rerun to resume"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint is complete once renamed into place)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(output_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step``; keep the newest ``keep`` (all if <= 0)."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict:
    """The state of checkpoint folder ``path``; :class:`CheckpointError` with one line if unreadable."""
    file = Path(path) / STATE_FILE
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises allowing arbitrary code; never pass that on
        raise CheckpointError(f"{file}: holds pickled objects other than tensors and plain data; refused") from None
    except MemoryError:
        raise
    except Exception as exc:  # truncated zip, bad header, I/O error: all mean "unreadable"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{file}: unreadable, truncated or corrupt ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{file}: not a trainer state (no step number)")
    return state


def load_latest_checkpoint(output_dir: Path, warn: Callable[[str], None]) -> tuple[Path, dict] | None:
    """``(folder, state)`` of the newest readable checkpoint, or ``None`` when there is none.

    An unreadable checkpoint is reported through ``warn`` and the previous one is tried; when
    checkpoints exist but none can be read, :class:`CheckpointError` says so.
    """
    found = checkpoint_dirs(output_dir)
    if not found:
        return None
    problems = []
    for folder in reversed(found):
        try:
            state = load_checkpoint(folder)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warn(f"{problem}; resuming from the previous checkpoint {folder.name} instead")
        return folder, state
    raise CheckpointError(
        f"no checkpoint in {Path(output_dir) / CHECKPOINTS} can be read ({'; '.join(problems)}); "
        "delete the run folder to start over"
    )
