"""Bach chorales from music21: key analysis (the labelling rule) and SATB pieces to render."""

from __future__ import annotations

import random
from typing import Iterable, Sequence

import numpy as np

from .. import midi_styles as ms
from .common import ANALYSIS_VERSION, FERMATA_HOLD, OPENING_QUARTERS, TAIL_SECONDS, MusicCorpusError, require


def list_chorales() -> list[str]:
    """music21 corpus names of the Bach chorales (Riemenschneider order, duplicates dropped)."""
    corpus = require("music21.corpus")
    names = corpus.chorales.Iterator(returnType="filename")
    return list(dict.fromkeys(str(n) for n in names))


def _key_of(k) -> tuple[int, str] | None:
    mode = getattr(k, "mode", None)
    if mode not in ms.MODES or getattr(k, "tonic", None) is None:
        return None
    return k.tonic.pitchClass, mode


def _part_notes(part) -> list[list]:
    """``[onset_q, length_q, midi, fermata]`` of a part, tied notes merged, sorted."""
    flat = part.flatten()
    notes: list[list] = []
    open_ties: dict[int, int] = {}
    for n in flat.notes:
        length = float(n.quarterLength)
        if length <= 0:  # grace notes
            continue
        onset = float(flat.elementOffset(n))
        fermata = any(type(e).__name__ == "Fermata" for e in n.expressions)
        tie = n.tie.type if n.tie is not None else None
        for p in n.pitches:
            midi = int(p.midi)
            if tie in ("continue", "stop") and midi in open_ties:
                note = notes[open_ties[midi]]
                note[1] = onset + length - note[0]
                note[3] = note[3] or fermata
                if tie == "stop":
                    del open_ties[midi]
                continue
            notes.append([onset, length, midi, fermata])
            if tie == "start":
                open_ties[midi] = len(notes) - 1
    notes.sort(key=lambda x: (x[0], x[2]))
    return [[round(a, 6), round(b, 6), c, bool(d)] for a, b, c, d in notes]


def key_profile_estimate(notes: Iterable[Sequence], weights: dict[str, Sequence[float]]) -> tuple[int, str, float] | None:
    """``(tonic, mode, r)`` of the key whose profile best correlates with the notes.

    The Krumhansl-Schmuckler method as music21's ``analyze('key')`` runs it: the
    duration-weighted pitch-class histogram of ``notes`` (``(onset, length, midi, ...)``)
    is correlated (Pearson) with the major and minor ``weights`` rotated to each tonic.
    """
    hist = np.zeros(12)
    for note in notes:
        hist[int(note[2]) % 12] += float(note[1])
    if not hist.any():
        return None
    best = None
    for mode in ms.MODES:
        profile = np.asarray(weights[mode], dtype=float)
        for tonic in range(12):
            r = float(np.corrcoef(np.roll(profile, tonic), hist)[0, 1])
            if best is None or r > best[2] + 1e-12:
                best = (tonic, mode, r)
    return best


#: music21 key-profile weightings that vote on a generated piece's key (the first is
#: music21's default, ``analyze('key')``)
KEY_PROFILES = ("AardenEssen", "KrumhanslKessler", "TemperleyKostkaPayne")
#: a generated piece is redrawn until at least this many profiles find its key
KEY_VOTES = 2
#: ... at most this many times (then the draw with the most votes is kept)
MAX_DRAWS = 30
_WEIGHTS: dict[str, dict[str, list[float]]] = {}


def _key_weights(profile: str = KEY_PROFILES[0]) -> dict[str, list[float]]:
    if profile not in _WEIGHTS:
        discrete = require("music21.analysis.discrete")
        method = getattr(discrete, profile)()
        _WEIGHTS[profile] = {mode: list(method.getWeights(mode)) for mode in ms.MODES}
    return _WEIGHTS[profile]


def key_votes(piece: ms.Piece) -> int:
    """How many of :data:`KEY_PROFILES` estimate ``piece``'s own key from its pitched notes."""
    notes = [(start, end - start, pitch) for t in piece.tracks if not t.is_drum for start, end, pitch, _ in t.notes]
    want = (piece.tonic, piece.mode)
    votes = 0
    for profile in KEY_PROFILES:
        estimate = key_profile_estimate(notes, _key_weights(profile))
        votes += bool(estimate) and estimate[:2] == want
    return votes


def analyse_chorale(name: str) -> dict:
    """Key label and notes of one chorale (the rule: the package docstring).

    Returns a JSON-able dict: ``status`` (``ok`` or ``rejected``), ``reason``, ``tonic``,
    ``mode``, ``key``, ``evidence``, ``meter``, ``parts`` (four lists of
    ``[onset_q, length_q, midi, fermata]``, soprano first) and ``length_q``.
    """
    corpus = require("music21.corpus")
    key_mod = require("music21.key")
    info: dict = {"name": name, "status": "rejected", "reason": "", "version": ANALYSIS_VERSION}
    try:
        score = corpus.parse(name)
        parts = list(score.parts)
        if len(parts) != 4:
            info["reason"] = f"{len(parts)} parts, not 4 (SATB)"
            return info
        encoded = next((k for k in score.recurse().getElementsByClass(key_mod.Key)), None)
        encoded = _key_of(encoded) if encoded is not None else None
        meters = list(score.recurse().getElementsByClass("TimeSignature"))
        notes = [_part_notes(p) for p in parts]
        weights = _key_weights()
    except MusicCorpusError:
        raise
    except Exception as err:  # a score music21 cannot read
        info["reason"] = f"analysis failed: {type(err).__name__}: {err}"
        return info
    everything = [n for part in notes for n in part]
    whole = key_profile_estimate(everything, weights)
    opening = key_profile_estimate([n for n in everything if n[0] < OPENING_QUARTERS], weights)
    analysed = whole[:2] if whole else None
    opening = opening[:2] if opening else None
    final_bass = notes[3][-1][2] % 12 if notes[3] else None
    info["evidence"] = {
        "encoded": ms.key_label(*encoded) if encoded else None,
        "analysed": ms.key_label(*analysed) if analysed else None,
        "analysed_r": round(whole[2], 4) if whole else None,
        "opening": ms.key_label(*opening) if opening else None,
        "final_bass": ms.PITCH_CLASSES[final_bass] if final_bass is not None else None,
    }
    info["meter"] = meters[0].ratioString if meters else "4/4"
    info["parts"] = notes
    info["length_q"] = max((n[0] + n[1] for n in everything), default=0.0)
    if analysed is None:
        info["reason"] = "no notes"
    elif not (encoded == analysed or analysed[0] == final_bass):
        info["reason"] = "analysed key agrees neither with the encoded key nor with the final bass note"
    elif opening != analysed:
        info["reason"] = "the opening is analysed in another key"
    else:
        info.update(status="ok", tonic=analysed[0], mode=analysed[1], key=ms.key_label(*analysed))
    return info


def _fermata_times(notes: list[list]) -> list[tuple[float, float]]:
    """(end_q, extra_q) of the soprano's fermatas."""
    ends = {}
    for onset, length, _, fermata in notes:
        if fermata:
            ends[round(onset + length, 6)] = FERMATA_HOLD * length
    return sorted(ends.items())


def chorale_piece(info: dict, *, transpose: int, programs: Sequence[int], tempo: float, seconds: float,
                  rng: random.Random, ensemble: str = "") -> ms.Piece:
    """The first ``seconds`` of an analysed chorale, transposed, as a :class:`~midi_styles.Piece`.

    Fermatas hold; a chorale shorter than ``seconds`` ends after a release tail.
    """
    holds = _fermata_times(info["parts"][0])
    beat = 60.0 / float(tempo)

    def on(q: float) -> float:
        return (q + sum(x for e, x in holds if e <= q + 1e-6)) * beat

    def off(q: float) -> float:
        extra = sum(x for e, x in holds if e < q - 1e-6) + sum(0.75 * x for e, x in holds if abs(e - q) <= 1e-6)
        return (q + extra) * beat

    end_of_piece = off(info["length_q"]) + TAIL_SECONDS
    length = min(float(seconds), end_of_piece)
    tracks = []
    for role, program, notes in zip(("soprano", "alto", "tenor", "bass"), programs, info["parts"]):
        track = ms.Track(role, int(program), volume=100 if role != "soprano" else 108)
        base = 86 if role == "soprano" else 76
        for onset, dur, pitch, _ in notes:
            start, end = on(onset), off(onset + dur)
            if start >= length:
                break
            velocity = max(1, min(127, base + rng.randint(-5, 5)))
            track.notes.append((round(start, 6), round(min(end, length), 6), int(pitch) + int(transpose), velocity))
        tracks.append(track)
    tonic = (info["tonic"] + transpose) % 12
    return ms.Piece(style="chorale", tonic=tonic, mode=info["mode"], tempo=float(tempo), meter=info["meter"],
                    seconds=round(length, 6), tracks=[t for t in tracks if t.notes],
                    details={"chorale": info["name"], "ensemble": ensemble})
