"""Turning planned utterances into files: synthesis, augmentation, WAV and manifest writing."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ...acoustics import coloured_noise, room_response
from ...audio import AudioError, load, probe
from .common import DOMAIN, MANIFEST_COLUMNS, SAMPLE_RATE, seeded_rng
from .engines import Engine, SynthRequest
from .planning import PlannedUtterance


#: loudness every utterance is brought to (RMS, before the peak guard)
_TARGET_RMS = 10 ** (-23 / 20)
_PEAK = 0.95
#: reverberant tail kept after the end of the dry signal
_TAIL_SECONDS = 0.2


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a random 1/f^alpha spectrum (alpha in [0, 2]: white to brown)."""
    return coloured_noise(n, rng.uniform(0.0, 2.0), rng, SAMPLE_RATE)


def _postprocess(wave: np.ndarray, utt: PlannedUtterance, seed: int) -> np.ndarray:
    x = wave.astype(np.float64)
    if utt.rt60 is not None:
        ir = room_response(utt.rt60, seeded_rng(seed, "room", utt.id), SAMPLE_RATE)
        n = len(x) + len(ir) - 1
        size = 1 << (n - 1).bit_length()
        wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), n=size)
        x = wet[: min(n, len(x) + int(_TAIL_SECONDS * SAMPLE_RATE))]
    if utt.snr_db is not None and len(x):
        power = np.mean(x**2)
        noise = _coloured_noise(len(x), seeded_rng(seed, "noise", utt.id))
        x = x + noise * np.sqrt(power / 10 ** (utt.snr_db / 10.0))
    rms = np.sqrt(np.mean(x**2)) if len(x) else 0.0
    if rms > 0:
        x = x * (_TARGET_RMS / rms)
        peak = np.max(np.abs(x))
        if peak > _PEAK:
            x = x * (_PEAK / peak)
    return x.astype(np.float32)


def write_wav(path: Path, wave: np.ndarray) -> None:
    """16 kHz PCM16 mono, written under a temporary name and renamed when complete."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def existing_seconds(path: Path) -> float | None:
    """Duration of a finished file, or None when it must be (re)made."""
    if not path.is_file():
        return None
    try:
        info = probe(path)
    except AudioError:
        return None
    if info.sample_rate != SAMPLE_RATE or info.channels != 1:
        return None
    return info.duration


def render_batch(
    utts: Sequence[PlannedUtterance], engine: Engine, out_dir: Path, seed: int, overwrite: bool
) -> list[tuple[str, float | None, bool, str | None]]:
    """Make the files of ``utts`` (one engine); ``(id, seconds, synthesised?, error)`` each.

    Files that exist and are complete are kept unless ``overwrite``.
    """
    results: list[tuple[str, float | None, bool, str | None]] = []
    todo: list[PlannedUtterance] = []
    for utt in utts:
        seconds = None if overwrite else existing_seconds(out_dir / utt.path)
        if seconds is None:
            todo.append(utt)
        else:
            results.append((utt.id, seconds, False, None))
    if not todo:
        return results
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        requests = [
            SynthRequest(u.prompt.text, u.speaker.voice, u.rate, u.pitch, Path(tmp) / f"{i}.wav")
            for i, u in enumerate(todo)
        ]
        try:
            errors = engine.synthesize_batch(requests)
        except Exception as err:  # the engine itself broke: every file of the batch failed
            errors = {i: str(err) or type(err).__name__ for i in range(len(todo))}
        for i, utt in enumerate(todo):
            if i in errors:
                results.append((utt.id, None, False, errors[i]))
                continue
            try:
                try:
                    wave = load(requests[i].wav_path, SAMPLE_RATE)
                except AudioError as err:
                    raise RuntimeError(f"unreadable engine output ({err.reason})") from None
                if wave.size == 0 or not np.any(wave):
                    raise RuntimeError("the engine produced silence")
                wave = _postprocess(wave, utt, seed)
                write_wav(out_dir / utt.path, wave)
            except Exception as err:
                results.append((utt.id, None, False, str(err) or type(err).__name__))
            else:
                results.append((utt.id, len(wave) / SAMPLE_RATE, True, None))
    return results


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def utterance_row(utt: PlannedUtterance, seconds: float) -> dict[str, str]:
    return {
        "path": utt.path,
        "id": utt.id,
        "transcript": utt.transcript,
        "text": utt.prompt.text,
        "speaker": utt.speaker.name,
        "engine": utt.speaker.engine,
        "voice": utt.speaker.voice,
        "rate": f"{utt.rate:.3f}",
        "pitch": f"{utt.pitch:.3f}",
        "split": utt.split,
        "sid_split": utt.sid_split,
        "domain": DOMAIN,
        "seconds": f"{seconds:.3f}",
        "source": "tts",
        "sentence": utt.prompt.id,
        "group": utt.speaker.group,
        "snr_db": _fmt(utt.snr_db, 1),
        "rt60": _fmt(utt.rt60, 2),
    }


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
