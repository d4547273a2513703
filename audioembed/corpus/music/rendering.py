"""Soundfonts and the synthesis of a piece into audio (tinysoundfont, resampled with soxr)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import midi_styles as ms
from .common import FADE_SECONDS, PEAK, RENDER_RATE, SAMPLE_RATE, MusicCorpusError, require


def default_soundfont() -> Path:
    """The TimGM6mb General MIDI soundfont shipped inside the ``pretty_midi`` wheel."""
    pretty_midi = require("pretty_midi")
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise MusicCorpusError(f"{path}: pretty_midi's bundled soundfont is missing; pass --soundfont PATH")
    return path


def resolve_soundfonts(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Soundfont files of ``specs`` (``"default"``: TimGM6mb); none given: the default."""
    paths = []
    for spec in specs or ["default"]:
        path = default_soundfont() if str(spec) == "default" else Path(os.path.expanduser(os.fspath(spec))).resolve()
        if not path.is_file():
            raise MusicCorpusError(f"{spec}: no such soundfont file")
        paths.append(path)
    names = Counter(p.name for p in paths)
    if any(n > 1 for n in names.values()):
        raise MusicCorpusError(f"soundfonts must have distinct file names (recorded per file): {sorted(names)}")
    return paths


_SOUNDFONTS: dict[str, object] = {}


def _soundfont(path: str):
    """A fresh synthesiser state of ``path``; the file is parsed once per process."""
    tsf = require("tinysoundfont._tinysoundfont")
    master = _SOUNDFONTS.get(path)
    if master is None:
        try:
            master = tsf.SoundFont(path)
        except Exception as err:
            raise MusicCorpusError(f"{path}: cannot load soundfont ({err})") from None
        _SOUNDFONTS[path] = master
    return tsf, tsf.SoundFont(master)


def render_piece(piece: ms.Piece, soundfont: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                 render_rate: int = RENDER_RATE) -> np.ndarray:
    """Mono float32 audio of ``piece`` at ``sample_rate``, faded out and peak-normalised.

    Synthesis runs at ``render_rate`` (tinysoundfont, sample-accurate note events) and is
    resampled with soxr; the result has ``round(piece.seconds * sample_rate)`` samples
    (within one). Raises :class:`MusicCorpusError` for a preset missing from the soundfont
    or silent output.
    """
    import soxr

    path = os.fspath(soundfont)
    tsf, sf = _soundfont(path)
    rate = max(int(render_rate), int(sample_rate))
    sf.set_output(tsf.OutputMode.Mono, rate, 0.0)
    sf.set_max_voices(512)
    events = []
    melodic = iter(c for c in range(16) if c != ms.DRUM_CHANNEL)
    for track in piece.tracks:
        if track.is_drum:
            channel = ms.DRUM_CHANNEL
            if sf.get_preset_index(128, 0) < 0 and sf.get_preset_index(128, track.program) < 0:
                raise MusicCorpusError(f"{Path(path).name} has no drum kit (bank 128)")
        else:
            channel = next(melodic, None)
            if channel is None:
                raise MusicCorpusError("more than 15 pitched tracks")
            if sf.get_preset_index(0, track.program) < 0:
                raise MusicCorpusError(f"{Path(path).name} has no preset for GM program {track.program}")
        sf.channel_set_preset_number(channel, track.program, track.is_drum)
        sf.channel_midi_control(channel, 7, int(track.volume))
        for start, end, pitch, velocity in track.notes:
            events.append((int(round(start * rate)), 1, channel, int(pitch), velocity / 127.0))
            events.append((int(round(end * rate)), 0, channel, int(pitch), 0.0))
    # at one instant: note-offs before note-ons (a repeated note restarts), then by channel, pitch
    events.sort()
    total = int(round(piece.seconds * rate))
    out = np.zeros(total, dtype=np.float32)
    pos = 0
    for when, is_on, channel, pitch, velocity in events:
        when = min(when, total)
        if when > pos:
            sf.render(out[pos:when].view(np.uint8), False)
            pos = when
        if pos >= total:
            break
        if is_on:
            sf.channel_note_on(channel, pitch, velocity)
        else:
            sf.channel_note_off(channel, pitch)
    if pos < total:
        sf.render(out[pos:].view(np.uint8), False)
    if rate != sample_rate:
        out = soxr.resample(out, rate, int(sample_rate), quality="HQ").astype(np.float32, copy=False)
    fade = min(len(out), int(FADE_SECONDS * sample_rate))
    if fade:
        out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if not np.isfinite(peak) or peak < 1e-5:
        raise MusicCorpusError("rendered audio is silent")
    return (out * np.float32(PEAK / peak)).astype(np.float32)
