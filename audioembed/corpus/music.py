"""Music corpus: General MIDI rendered through soundfonts into labelled audio, offline.

``audioembed corpus music -o DIR`` writes 24 kHz mono PCM16 WAV files below ``DIR`` and one
``DIR/manifest.csv`` that ``audioembed downstream key``, ``downstream classify -O
label_column=style``, ``downstream tagging``, ``extract`` and ``distill`` read as they are.

Two sources
    ``chorale``: Bach chorales from music21's bundled corpus. Each chorale gets a key label
    (rule below), is transposed to ``transpositions`` target keys chosen so that the 24 keys
    are covered evenly, and the first ``chorale_seconds`` are rendered with a seeded SATB
    ensemble (organ, strings, choir, piano, brass, woodwinds, ...) and tempo.
    ``generated``: pieces drawn from a small style grammar (``midi_styles``: rock, waltz,
    bossa, march, ballad, techno, swing, chorale) in seeded, balanced keys, ``piece_seconds``
    long.

Key label of a chorale (the rule)
    Three pieces of evidence are read: the key signature with its mode as encoded in the
    score (``music21.key.Key``), a key-profile estimate of the whole chorale (the algorithm
    and weights of music21's ``analyze('key')``: Krumhansl-Schmuckler correlation with
    Aarden-Essen profiles, computed on the extracted notes) and the final bass note. The
    label is the estimated key when it agrees with the encoded key or its tonic is the
    final bass note, *and* the estimate of the opening (notes starting in the first 24
    quarter notes, about the rendered excerpt) gives the same key. Chorales that fail are
    left out (modal, ambiguous or modulating openings; about 60 of 350).

Key label of a generated piece
    The key the piece is written in. A draw is kept only when at least two of three
    key-profile estimators (Aarden-Essen, Krumhansl-Kessler, Temperley-Kostka-Payne weights
    from music21) find that key in its notes; otherwise the piece is drawn again.

Splits
    Chorales are split train/dev/test per chorale (all transpositions of a chorale are in
    one split), stratified by mode; generated pieces per index, stratified by style. Keys
    are then balanced within each split.

Determinism and resuming
    Every random choice is drawn from the seed and the item's id, never from the order work
    finishes in: the same seed, options and package versions give the same manifest and
    byte-identical audio. Files are written under a temporary name and renamed when
    complete; existing files are kept, so an interrupted build resumes. The manifest is
    written (atomically) at the end. ``.music_corpus.json`` records the settings that shape
    the audio; a rerun with other settings is refused (use another folder or ``overwrite``).
    The chorale analysis is cached in ``.cache/`` inside the output folder.

Requirements (imported when used): ``pip install pretty_midi music21 && pip install
--no-deps tinysoundfont`` (tinysoundfont's declared ``pyaudio`` dependency, needed only for
live playback, does not build everywhere).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import click
import numpy as np

from ..errors import AudioEmbedError
from . import midi_styles as ms

__all__ = [
    "SAMPLE_RATE",
    "MANIFEST_COLUMNS",
    "INSTALL_HINT",
    "MusicCorpusError",
    "MusicCorpusOptions",
    "PlannedItem",
    "MusicCorpusBuilder",
    "default_soundfont",
    "list_chorales",
    "analyse_chorale",
    "key_profile_estimate",
    "key_votes",
    "generate_labelled_piece",
    "chorale_piece",
    "assign_target_tonics",
    "split_groups",
    "render_piece",
    "build_music_corpus",
    "music_command",
]

#: default output rate: the music teacher (MERT-v1) runs at 24 kHz
SAMPLE_RATE = 24000
#: internal synthesis rate; the result is resampled (soxr, HQ) to the output rate
RENDER_RATE = 48000
MANIFEST_COLUMNS = (
    "path", "id", "source", "key", "style", "tags", "programs", "soundfont", "tempo", "split", "domain",
    "seconds", "group", "transpose",
)
SETTINGS_FILE = ".music_corpus.json"
CACHE_DIR = ".cache"
INSTALL_HINT = "pip install pretty_midi music21 && pip install --no-deps tinysoundfont"
#: quarter notes at the start of a chorale whose analysed key must agree with the label
OPENING_QUARTERS = 24.0
#: a fermata holds its note this fraction of its length longer (then a short breath)
FERMATA_HOLD = 0.5
#: chorale tempo range (quarter notes per minute)
CHORALE_TEMPO = (60, 88)
#: peak level of every file (-1 dBFS)
PEAK = 10 ** (-1 / 20)
#: fade at the end of every file, seconds (an excerpt stops mid-note)
FADE_SECONDS = 0.25
#: release tail rendered after the last note of a piece that ends before its excerpt does
TAIL_SECONDS = 1.5
#: version of the chorale analysis (bump when the rule or the note extraction changes)
_ANALYSIS_VERSION = 1
#: version of the generated pieces (recorded in the settings: bump when the grammar changes)
GENERATOR_VERSION = 1

DEFAULTS = dict(chorales=240, transpositions=4, pieces=800, chorale_seconds=20.0, piece_seconds=10.0)


class MusicCorpusError(AudioEmbedError):
    """The corpus cannot be built as asked; the message says why and what to do.

    After a build with failed items, ``manifest`` is the manifest written for the rest and
    ``failures`` maps item ids to reasons.
    """

    def __init__(self, message: str, manifest: Path | None = None, failures: dict | None = None):
        super().__init__(message)
        self.manifest = manifest
        self.failures = dict(failures or {})


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise MusicCorpusError(f"the music corpus needs {module} ({err}); install with: {INSTALL_HINT}") from None


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _rng(seed: int, *parts: object) -> random.Random:
    """A generator that depends on the seed and the labels only (never on call order)."""
    return random.Random(_stable_int(int(seed), *parts))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- soundfonts


def default_soundfont() -> Path:
    """The TimGM6mb General MIDI soundfont shipped inside the ``pretty_midi`` wheel."""
    pretty_midi = _require("pretty_midi")
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
    tsf = _require("tinysoundfont._tinysoundfont")
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


# --------------------------------------------------------------------------- chorales


def list_chorales() -> list[str]:
    """music21 corpus names of the Bach chorales (Riemenschneider order, duplicates dropped)."""
    corpus = _require("music21.corpus")
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
        discrete = _require("music21.analysis.discrete")
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
    """Key label and notes of one chorale (see the module docstring for the rule).

    Returns a JSON-able dict: ``status`` (``ok`` or ``rejected``), ``reason``, ``tonic``,
    ``mode``, ``key``, ``evidence``, ``meter``, ``parts`` (four lists of
    ``[onset_q, length_q, midi, fermata]``, soprano first) and ``length_q``.
    """
    corpus = _require("music21.corpus")
    key_mod = _require("music21.key")
    info: dict = {"name": name, "status": "rejected", "reason": "", "version": _ANALYSIS_VERSION}
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


# --------------------------------------------------------------------------- planning


def generate_labelled_piece(style: str, seed: int, item_id: str, *, seconds: float, tonic: int, mode: str) -> ms.Piece:
    """A generated piece whose key the audio supports.

    Draws ``midi_styles.generate_piece`` (draw k from the seed, the id and k) until at
    least :data:`KEY_VOTES` of the :data:`KEY_PROFILES` estimators find the intended key
    (modal progressions and thin textures often read as the subdominant or the relative
    key); after :data:`MAX_DRAWS` the first draw with the most votes is kept.
    """
    best = None
    for draw in range(MAX_DRAWS):
        piece = ms.generate_piece(style, _rng(seed, "item", item_id, draw), seconds=seconds, tonic=tonic, mode=mode)
        votes = key_votes(piece)
        piece.details.update(draw=draw, key_votes=votes)
        if best is None or votes > best.details["key_votes"]:
            best = piece
        if votes >= KEY_VOTES:
            break
    return best


def _split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Sizes of train/dev/test for ``n`` units; a non-empty split gets >= 1 when n allows."""
    total = sum(fractions)
    raw = [n * f / total for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (counts[i] - raw[i], i)):
        if sum(counts) >= n:
            break
        counts[i] += 1
    for i in (2, 1):  # test, then dev, before train gets more than it needs
        if fractions[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i] += 1
            counts[0] -= 1
    return counts[0], counts[1], counts[2]


def split_groups(groups: Sequence[str], strata: Sequence[str], fractions: Sequence[float], seed: int,
                 salt: str) -> dict[str, str]:
    """train/dev/test per group (a group never spans two splits), stratified.

    Each stratum's groups are shuffled (seeded) and the strata interleaved into one
    sequence; test takes its share from the front, then dev, and train the rest. So every
    split sees the strata in proportion, and test (then dev) gets a group as soon as
    there are two (three).
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for group, stratum in zip(groups, strata):
        if group not in seen:
            seen.add(group)
            by_stratum[stratum].append(group)
    lanes = []
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        _rng(seed, salt, "split", stratum).shuffle(members)
        lanes.append(members)
    sequence = [lane[i] for i in range(max(map(len, lanes), default=0)) for lane in lanes if i < len(lane)]
    _, n_dev, n_test = _split_counts(len(sequence), fractions)
    return {group: "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
            for i, group in enumerate(sequence)}


def assign_target_tonics(chorales: Sequence[tuple[str, str, str]], transpositions: int, seed: int) -> dict[str, list[int]]:
    """Target tonics of each chorale's transpositions, balanced over the 12 tonics.

    ``chorales`` are ``(name, mode, split)``. Within each split and mode, chorales take in
    turn the ``transpositions`` distinct tonics used least so far (ties broken by a seeded
    order), so each key of a split is used equally often, to within one.
    """
    if not 1 <= transpositions <= 12:
        raise MusicCorpusError(f"transpositions must be 1-12, got {transpositions}")
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    result = {}
    for name, mode, split in chorales:
        order = list(range(12))
        _rng(seed, "tonics", name).shuffle(order)
        used = counts[(split, mode)]
        chosen = sorted(order, key=lambda t: (used[t], order.index(t)))[:transpositions]
        used.update(chosen)
        result[name] = chosen
    return result


def _transpose_interval(source: int, target: int) -> int:
    """Semitones from ``source`` to ``target`` tonic, in -6..+5 (the nearest way)."""
    return (target - source + 6) % 12 - 6


def _assign_piece_keys(pieces: Sequence[tuple[int, str, str]], seed: int) -> dict[int, tuple[int, str]]:
    """Key of each generated piece ``(index, style, split)``: least used in its split, then
    in its style, ties by a seeded order."""
    split_counts: dict[str, Counter] = defaultdict(Counter)
    style_counts: dict[str, Counter] = defaultdict(Counter)
    result = {}
    for index, style, split in pieces:
        order = list(ms.KEYS)
        _rng(seed, "piece-key", index).shuffle(order)
        key = min(order, key=lambda k: (split_counts[split][k], style_counts[style][k], order.index(k)))
        split_counts[split][key] += 1
        style_counts[style][key] += 1
        result[index] = key
    return result


@dataclass(frozen=True)
class PlannedItem:
    """One file to make: labels, split and what it is rendered from."""

    id: str
    source: str
    split: str
    group: str
    soundfont: str
    #: chorale: corpus name; generated: style
    origin: str
    tonic: int
    mode: str
    transpose: int = 0
    index: int = -1

    @property
    def path(self) -> str:
        return self.id + ".wav"

    @property
    def key(self) -> str:
        return ms.key_label(self.tonic, self.mode)


def _parse_fractions(value: Sequence[float] | str) -> tuple[float, float, float]:
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            raise MusicCorpusError(f"split fractions must be three numbers like 0.8,0.1,0.1, got {value!r}") from None
    value = tuple(float(v) for v in value)
    if len(value) != 3 or any(v < 0 for v in value) or value[0] <= 0 or value[2] <= 0:
        raise MusicCorpusError(f"split fractions must be train,dev,test >= 0 with train and test > 0, got {value}")
    return value  # type: ignore[return-value]


@dataclass
class MusicCorpusOptions:
    """Settings of :func:`build_music_corpus`; the CLI mirrors them."""

    seed: int = 0
    #: Bach chorales to use (0: none; more than usable: all of them)
    chorales: int = DEFAULTS["chorales"]
    #: keys each chorale is rendered in (1-12)
    transpositions: int = DEFAULTS["transpositions"]
    #: generated pieces, spread evenly over ``styles``
    pieces: int = DEFAULTS["pieces"]
    chorale_seconds: float = DEFAULTS["chorale_seconds"]
    piece_seconds: float = DEFAULTS["piece_seconds"]
    styles: tuple[str, ...] = ms.STYLE_NAMES
    sample_rate: int = SAMPLE_RATE
    render_rate: int = RENDER_RATE
    #: soundfont files ("default": TimGM6mb from pretty_midi); items alternate between them
    soundfonts: tuple[str, ...] = ("default",)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: also write each piece as a .mid file next to its audio
    midi: bool = False
    jobs: int | None = None
    progress: bool = True
    overwrite: bool = False

    def checked(self) -> "MusicCorpusOptions":
        opts = MusicCorpusOptions(**asdict(self))
        opts.split_fractions = _parse_fractions(opts.split_fractions)
        for name in ("chorales", "pieces", "transpositions"):
            if int(getattr(opts, name)) < 0:
                raise MusicCorpusError(f"{name} must be >= 0, got {getattr(opts, name)}")
        if opts.chorales and not 1 <= opts.transpositions <= 12:
            raise MusicCorpusError(f"transpositions must be 1-12, got {opts.transpositions}")
        for name in ("chorale_seconds", "piece_seconds"):
            if not float(getattr(opts, name)) >= 1.0:
                raise MusicCorpusError(f"{name} must be >= 1 second, got {getattr(opts, name)}")
        if int(opts.sample_rate) < 8000:
            raise MusicCorpusError(f"sample rate must be >= 8000 Hz, got {opts.sample_rate}")
        unknown = [s for s in opts.styles if s not in ms.STYLES]
        if unknown or not opts.styles:
            raise MusicCorpusError(f"unknown style(s) {unknown}; choose from {', '.join(ms.STYLE_NAMES)}")
        opts.styles = tuple(dict.fromkeys(opts.styles))
        if opts.chorales == 0 and opts.pieces == 0:
            raise MusicCorpusError("nothing to build: chorales and pieces are both 0")
        if opts.jobs is not None and opts.jobs < 1:
            raise MusicCorpusError(f"jobs must be >= 1, got {opts.jobs}")
        return opts

    def settings(self, soundfonts: Sequence[Path]) -> dict:
        """What shapes the audio and the manifest (compared on resume)."""
        keep = ("seed", "chorales", "transpositions", "pieces", "chorale_seconds", "piece_seconds", "styles",
                "sample_rate", "render_rate", "split_fractions")
        settings = {k: getattr(self, k) for k in keep}
        settings["styles"] = list(self.styles)
        settings["split_fractions"] = list(self.split_fractions)
        settings["soundfonts"] = [[p.name, p.stat().st_size] for p in soundfonts]
        settings["versions"] = {**_versions(), "generator": GENERATOR_VERSION, "analysis": _ANALYSIS_VERSION}
        return settings


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("music21", "pretty_midi", "tinysoundfont", "soxr"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# --------------------------------------------------------------------------- parallel work


class _Workers:
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


def _analyse_job(name: str) -> dict:
    try:
        return analyse_chorale(name)
    except MusicCorpusError as err:
        return {"name": name, "status": "error", "reason": str(err)}


def _piece_job(args: tuple) -> ms.Piece:
    style, seed, item_id, seconds, tonic, mode = args
    return generate_labelled_piece(style, seed, item_id, seconds=seconds, tonic=tonic, mode=mode)


def _render_job(job: tuple) -> tuple[str, str | None]:
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


def _atomic_text(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the builder


class MusicCorpusBuilder:
    """Plans, renders and writes one corpus; :func:`build_music_corpus` is the usual entry."""

    def __init__(self, output_dir: str | os.PathLike, options: MusicCorpusOptions,
                 warn: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None):
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.options = options.checked()
        self.warn = warn or _warn
        self.echo = echo or (lambda message: print(message, file=sys.stderr))
        self.soundfonts = resolve_soundfonts(self.options.soundfonts)
        self.stats: dict = {}

    # ---------------------------------------------------------------- chorales

    def _cache_path(self) -> Path:
        return self.output_dir / CACHE_DIR / "bach_chorales.json"

    def _load_cache(self) -> dict:
        path = self._cache_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("version") != _ANALYSIS_VERSION or data.get("music21") != _versions()["music21"]:
            return {}
        return data.get("chorales", {})

    def _save_cache(self, cache: dict) -> None:
        path = self._cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": _ANALYSIS_VERSION, "music21": _versions()["music21"], "chorales": cache}
        _atomic_text(path, json.dumps(payload, sort_keys=True, separators=(",", ":")))

    def select_chorales(self, workers: _Workers) -> list[dict]:
        """Analysed chorales with a label, half major, half minor where possible.

        Candidates are visited in a seeded order and analysed in batches (cached) until both
        modes have their quota, so a small corpus does not analyse all of them.
        """
        wanted = int(self.options.chorales)
        if wanted == 0:
            return []
        names = list_chorales()
        order = sorted(names)
        _rng(self.options.seed, "chorale-order").shuffle(order)
        quota = {"major": (wanted + 1) // 2, "minor": wanted // 2}
        cache = self._load_cache()
        chosen: dict[str, list[dict]] = {"major": [], "minor": []}
        spare: list[dict] = []  # ok chorales over their mode's quota, in visiting order
        rejected: Counter = Counter()
        # batches big enough to keep the workers busy, small enough not to analyse far more than needed
        batch = max(2 * workers.jobs, min(4 * workers.jobs, wanted + 2))
        position = 0
        while position < len(order) and any(len(chosen[m]) < quota[m] for m in quota):
            names_now = order[position:position + batch]
            position += len(names_now)
            missing = [n for n in names_now if n not in cache]
            if missing:
                for info in workers.map(_analyse_job, missing):
                    if info["status"] == "error":
                        raise MusicCorpusError(info["reason"])
                    cache[info["name"]] = info
                self._save_cache(cache)
            for name in names_now:
                info = cache[name]
                if info["status"] != "ok":
                    rejected[info["reason"]] += 1
                elif len(chosen[info["mode"]]) < quota[info["mode"]]:
                    chosen[info["mode"]].append(info)
                else:
                    spare.append(info)
        # a mode short of its quota is made up with the other mode
        short = sum(quota[m] - len(chosen[m]) for m in quota)
        result = chosen["major"] + chosen["minor"] + spare[:short]
        self.stats["chorales_analysed"] = position
        self.stats["chorales_rejected"] = dict(rejected)
        if len(result) < wanted:
            self.warn(f"only {len(result)} of {len(names)} chorales have a reliable key label "
                      f"(asked for {wanted}); using them all")
        return sorted(result, key=lambda info: info["name"])

    # ---------------------------------------------------------------- plan

    def plan(self, chorales: Sequence[dict]) -> list[PlannedItem]:
        opts = self.options
        items: list[PlannedItem] = []
        if chorales:
            short = {c["name"]: c["name"].split("/")[-1] for c in chorales}
            splits = split_groups([short[c["name"]] for c in chorales], [c["mode"] for c in chorales],
                                  opts.split_fractions, opts.seed, "chorale")
            triples = [(c["name"], c["mode"], splits[short[c["name"]]]) for c in chorales]
            tonics = assign_target_tonics(triples, opts.transpositions, opts.seed)
            for c in chorales:
                for target in tonics[c["name"]]:
                    shift = _transpose_interval(c["tonic"], target)
                    items.append(PlannedItem(
                        id=f"chorale/{short[c['name']]}_t{shift:+d}", source="chorale", split=splits[short[c["name"]]],
                        group=short[c["name"]], soundfont="", origin=c["name"], tonic=target, mode=c["mode"],
                        transpose=shift,
                    ))
        if opts.pieces:
            styles = list(opts.styles)
            index_style = [(i, styles[i % len(styles)]) for i in range(opts.pieces)]
            groups = [f"{style}_{i:05d}" for i, style in index_style]
            splits = split_groups(groups, [s for _, s in index_style], opts.split_fractions, opts.seed, "generated")
            keys = _assign_piece_keys([(i, s, splits[g]) for (i, s), g in zip(index_style, groups)], opts.seed)
            for (i, style), group in zip(index_style, groups):
                tonic, mode = keys[i]
                items.append(PlannedItem(
                    id=f"generated/{style}/{group}", source="generated", split=splits[group], group=group,
                    soundfont="", origin=style, tonic=tonic, mode=mode, index=i,
                ))
        # soundfonts in turn within each source, in id order
        names = [p.name for p in self.soundfonts]
        result = []
        for source in ("chorale", "generated"):
            these = sorted((it for it in items if it.source == source), key=lambda it: it.id)
            for j, it in enumerate(these):
                result.append(PlannedItem(**{**asdict(it), "soundfont": names[j % len(names)]}))
        ids = [it.id for it in result]
        if len(set(ids)) != len(ids):  # cannot happen: chorale names and indices are unique
            raise MusicCorpusError("duplicate item ids in the plan")
        return sorted(result, key=lambda it: it.id)

    def pieces(self, items: Sequence[PlannedItem], chorales: dict[str, dict], workers: _Workers | None = None,
               ) -> dict[str, ms.Piece]:
        """The piece of every item (generated ones in parallel: they are redrawn to fit their key)."""
        opts = self.options
        generated = [it for it in items if it.source == "generated"]
        args = [(it.origin, opts.seed, it.id, opts.piece_seconds, it.tonic, it.mode) for it in generated]
        made = (workers or _Workers(1)).map(_piece_job, args, chunksize=16)
        result = {it.id: piece for it, piece in zip(generated, made)}
        result.update({it.id: self.piece_of(it, chorales) for it in items if it.source == "chorale"})
        return result

    def piece_of(self, item: PlannedItem, chorales: dict[str, dict]) -> ms.Piece:
        opts = self.options
        rng = _rng(opts.seed, "item", item.id)
        if item.source == "chorale":
            ensemble, programs = rng.choice(list(ms.SATB_ENSEMBLES.items()))
            tempo = rng.randint(*CHORALE_TEMPO)
            return chorale_piece(chorales[item.origin], transpose=item.transpose, programs=programs, tempo=tempo,
                                 seconds=opts.chorale_seconds, rng=rng, ensemble=ensemble)
        return generate_labelled_piece(item.origin, opts.seed, item.id, seconds=opts.piece_seconds, tonic=item.tonic,
                                       mode=item.mode)

    # ---------------------------------------------------------------- settings

    def _check_settings(self) -> None:
        path = self.output_dir / SETTINGS_FILE
        settings = self.options.settings(self.soundfonts)
        if path.is_file() and not self.options.overwrite:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                old = None
            if old != settings:
                changed = sorted(k for k in set(settings) | set(old or {}) if (old or {}).get(k) != settings.get(k))
                raise MusicCorpusError(
                    f"{self.output_dir} holds a music corpus built with other settings ({', '.join(changed)}); "
                    "use a new output folder, the same settings, or overwrite (--overwrite) to rebuild"
                )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        _atomic_text(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- build

    def build(self) -> Path:
        opts = self.options
        self._check_settings()
        jobs = opts.jobs or os.cpu_count() or 1
        workers = _Workers(jobs)
        clock = time.monotonic()
        timings = self.stats.setdefault("timings", {})

        def lap(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            timings[name] = round(now - clock, 2)
            clock = now

        try:
            chorales = self.select_chorales(workers)
            lap("chorale_analysis_s")
            by_name = {c["name"]: c for c in chorales}
            items = self.plan(chorales)
            pieces = self.pieces(items, by_name, workers)
            lap("plan_s")
            sf_paths = {p.name: os.fspath(p) for p in self.soundfonts}
            todo = []
            for it in items:
                wav = self.output_dir / it.path
                mid = wav.with_suffix(".mid") if opts.midi else None
                if opts.overwrite or not wav.is_file() or (mid is not None and not mid.is_file()):
                    todo.append((it.id, pieces[it.id], sf_paths[it.soundfont], os.fspath(wav),
                                 os.fspath(mid) if mid else None, int(opts.sample_rate), int(opts.render_rate)))
            # longest first keeps the workers busy to the end
            todo.sort(key=lambda job: (-job[1].seconds * max(1, sum(len(t.notes) for t in job[1].tracks)), job[0]))
            failures: dict[str, str] = {}
            bar = None
            if opts.progress and todo:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="file", desc="music corpus", file=sys.stderr)
            for item_id, error in workers.unordered(_render_job, todo):
                if error is not None:
                    failures[item_id] = error
                    self.warn(f"{item_id}: {error}")
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            lap("render_s")
        finally:
            workers.close()
        self.stats.update(rendered=len(todo) - len(failures), kept=len(items) - len(todo), failed=len(failures),
                          jobs=jobs)
        manifest = self._write_manifest([it for it in items if it.id not in failures], pieces)
        lap("manifest_s")
        if failures:
            shown = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())[:5])
            raise MusicCorpusError(
                f"{len(failures)} of {len(items)} item(s) failed ({shown}); the manifest lists the others; "
                "rerun the same command to retry them", manifest=manifest, failures=failures)
        return manifest

    def _write_manifest(self, items: Sequence[PlannedItem], pieces: dict[str, ms.Piece]) -> Path:
        import soundfile as sf

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        total = 0.0
        for it in items:
            piece = pieces[it.id]
            info = sf.info(os.fspath(self.output_dir / it.path))
            seconds = info.frames / info.samplerate
            total += seconds
            writer.writerow([
                it.path, it.id, it.source, it.key, piece.style, ";".join(piece.tags),
                ";".join(str(p) for p in piece.programs), it.soundfont, f"{piece.tempo:g}", it.split, "music",
                f"{seconds:.3f}", it.group, it.transpose,
            ])
        manifest = self.output_dir / "manifest.csv"
        _atomic_text(manifest, buffer.getvalue())
        self.stats.update(items=len(items), hours=total / 3600.0,
                          keys=len({it.key for it in items}), splits=dict(Counter(it.split for it in items)))
        return manifest


def build_music_corpus(output_dir: str | os.PathLike, *, seed: int | None = None, seconds: float | None = None,
                       options: MusicCorpusOptions | None = None, warn: Callable[[str], None] | None = None,
                       **settings) -> Path:
    """Build (or resume) a music corpus in ``output_dir``; returns the manifest's path.

    Settings are :class:`MusicCorpusOptions` fields, given as keywords or as ``options``
    (keywords win; ``seed`` defaults to 0, or to ``options.seed``); ``seconds`` sets both
    ``chorale_seconds`` and ``piece_seconds``. Raises :class:`MusicCorpusError` for bad settings, missing packages,
    a folder built with other settings, or failed items (after writing the manifest of
    the rest).
    """
    base = asdict(options) if options is not None else {}
    base.update(settings)
    if seed is not None or options is None:
        base["seed"] = 0 if seed is None else seed
    if seconds is not None:
        base.setdefault("chorale_seconds", seconds)
        base.setdefault("piece_seconds", seconds)
        if "chorale_seconds" not in settings:
            base["chorale_seconds"] = seconds
        if "piece_seconds" not in settings:
            base["piece_seconds"] = seconds
    unknown = sorted(set(base) - set(MusicCorpusOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    for module in ("pretty_midi", "music21", "tinysoundfont"):
        _require(module)
    return MusicCorpusBuilder(output_dir, MusicCorpusOptions(**base), warn=warn).build()


# --------------------------------------------------------------------------- CLI


@click.command("music", epilog="""\b
Examples:
  audioembed corpus music -o corpora/music
""")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--chorales", default=DEFAULTS["chorales"], show_default=True,
              help="Bach chorales to render (0: none; more than usable: all, about 300).")
@click.option("--transpositions", default=DEFAULTS["transpositions"], show_default=True,
              help="Keys each chorale is rendered in (1-12), balanced over the 24 keys.")
@click.option("--pieces", default=DEFAULTS["pieces"], show_default=True,
              help="Generated pieces, spread evenly over the styles (0: none).")
@click.option("--seconds", type=float, default=None, help="Length of every file (sets both lengths below).")
@click.option("--chorale-seconds", type=float, default=None,
              help=f"Excerpt length of a chorale  [default: {DEFAULTS['chorale_seconds']:g}]")
@click.option("--piece-seconds", type=float, default=None,
              help=f"Length of a generated piece  [default: {DEFAULTS['piece_seconds']:g}]")
@click.option("--styles", default=",".join(ms.STYLE_NAMES), show_default=True, help="Comma-separated styles.")
@click.option("--sample-rate", default=SAMPLE_RATE, show_default=True, help="Output sample rate (Hz).")
@click.option("--soundfont", "soundfonts", multiple=True, metavar="PATH",
              help="General MIDI soundfont (.sf2/.sf3), repeatable; items alternate between them; "
                   "'default' = TimGM6mb from pretty_midi  [default: default]")
@click.option("--splits", default="0.8,0.1,0.1", show_default=True, help="train,dev,test fractions.")
@click.option("--midi", is_flag=True, help="Also write each piece as a .mid file next to its audio.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel processes  [default: CPU count]")
@click.option("--overwrite", is_flag=True, help="Re-render files that exist, and accept changed settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def music_command(output, seed, chorales, transpositions, pieces, seconds, chorale_seconds, piece_seconds, styles,
                  sample_rate, soundfonts, splits, midi, jobs, overwrite, quiet):
    """Render Bach chorales (key labels) and generated pieces (style, tags) into a music corpus.

    Writes DIR/manifest.csv (path, id, source, key, style, tags, programs, soundfont, tempo,
    split, domain, seconds, group, transpose) and 24 kHz mono WAV files. Needs
    `pip install pretty_midi music21 && pip install --no-deps tinysoundfont`.
    """
    options = MusicCorpusOptions(
        seed=seed, chorales=chorales, transpositions=transpositions, pieces=pieces,
        chorale_seconds=chorale_seconds if chorale_seconds is not None else (seconds or DEFAULTS["chorale_seconds"]),
        piece_seconds=piece_seconds if piece_seconds is not None else (seconds or DEFAULTS["piece_seconds"]),
        styles=tuple(s.strip() for s in styles.split(",") if s.strip()), sample_rate=sample_rate,
        soundfonts=tuple(soundfonts) or ("default",), split_fractions=splits, midi=midi, jobs=jobs,
        progress=not quiet, overwrite=overwrite,
    )
    try:
        for module in ("pretty_midi", "music21", "tinysoundfont"):
            _require(module)
        builder = MusicCorpusBuilder(output, options)
        manifest = builder.build()
    except MusicCorpusError as exc:
        raise click.ClickException(str(exc)) from None
    s = builder.stats
    click.echo(
        f"{manifest}: {s['items']} files ({s['hours']:.3g} h; {s['rendered']} rendered, {s['kept']} kept), "
        f"{s['keys']} keys, splits {s['splits']}"
    )

