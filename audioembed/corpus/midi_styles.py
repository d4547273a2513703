"""A small style grammar that writes labelled General MIDI pieces (no audio, no I/O).

Each :class:`Style` fixes a meter, a tempo range, drum patterns (GM percussion, channel 10),
chord progressions for major and minor keys, bass and accompaniment patterns and pools of
GM programs for each role. :func:`generate_piece` draws one piece from a style with a
``random.Random``: the same style, seed, key and length always give the same notes.

Everything is plain Python (no third-party import), so the grammar can be tested without a
renderer; :meth:`Piece.to_pretty_midi` converts a piece for rendering or for writing a
``.mid`` file.

Conventions
    * times are in seconds, pitches are MIDI numbers, programs are 0-based GM numbers;
    * ``tempo`` is beats per minute of the meter's beat: a quarter note in 2/4, 3/4 and 4/4,
      a dotted quarter in 6/8;
    * a key is a tonic pitch class (0 = C) and a mode (``"major"``/``"minor"``); its label is
      spelt like ``audioembed.metrics.KEY_LABELS`` ("C# major", "A minor").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "PITCH_CLASSES",
    "MODES",
    "KEYS",
    "DRUM_CHANNEL",
    "Meter",
    "Style",
    "Track",
    "Piece",
    "STYLES",
    "STYLE_NAMES",
    "key_label",
    "parse_key_label",
    "program_tag",
    "tempo_tag",
    "piece_tags",
    "chord_pitch_classes",
    "generate_piece",
]

#: pitch-class names, sharps for black keys (the spelling of ``audioembed.metrics``)
PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: tuple[str, ...] = ("major", "minor")
#: the 24 keys as (tonic pitch class, mode), majors then minors
KEYS: tuple[tuple[int, str], ...] = tuple((pc, mode) for mode in MODES for pc in range(12))
#: 0-based MIDI channel of GM percussion ("channel 10")
DRUM_CHANNEL = 9

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor


def key_label(tonic: int, mode: str) -> str:
    """``(1, "minor")`` -> ``"C# minor"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    return f"{PITCH_CLASSES[int(tonic) % 12]} {mode}"


def parse_key_label(label: str) -> tuple[int, str]:
    """Inverse of :func:`key_label` (canonical spelling only)."""
    name, _, mode = label.partition(" ")
    if name not in PITCH_CLASSES or mode not in MODES:
        raise ValueError(f"not a canonical key label: {label!r}")
    return PITCH_CLASSES.index(name), mode


# --------------------------------------------------------------------------- GM tags

# (first program, last program, tag) of the General MIDI families, finer where it helps
_PROGRAM_TAGS: tuple[tuple[int, int, str], ...] = (
    (0, 5, "piano"),
    (6, 6, "harpsichord"),
    (7, 7, "piano"),
    (8, 15, "mallets"),
    (16, 20, "organ"),
    (21, 23, "accordion"),
    (24, 31, "guitar"),
    (32, 39, "bass"),
    (40, 45, "strings"),
    (46, 46, "harp"),
    (47, 47, "percussion"),
    (48, 51, "strings"),
    (52, 54, "choir"),
    (55, 55, "synth"),
    (56, 63, "brass"),
    (64, 67, "sax"),
    (68, 71, "woodwind"),
    (72, 79, "flute"),
    (80, 103, "synth"),
    (104, 111, "ethnic"),
    (112, 119, "percussion"),
    (120, 127, "effects"),
)

#: beat tempo at or below which a piece is tagged "slow", at or above which "fast"
SLOW_BPM = 80
FAST_BPM = 140


def program_tag(program: int, is_drum: bool = False) -> str:
    """Instrument tag of a GM program: ``0`` -> ``"piano"``, ``33`` -> ``"bass"``."""
    if is_drum:
        return "drums"
    for first, last, tag in _PROGRAM_TAGS:
        if first <= program <= last:
            return tag
    raise ValueError(f"GM program must be 0-127, got {program!r}")


def tempo_tag(tempo: float) -> str | None:
    if tempo <= SLOW_BPM:
        return "slow"
    if tempo >= FAST_BPM:
        return "fast"
    return None


def piece_tags(programs: Sequence[int], has_drums: bool, tempo: float) -> list[str]:
    """Sorted instrument tags of the programs (+ ``drums``) then the tempo tag, if any."""
    tags = sorted({program_tag(p) for p in programs} | ({"drums"} if has_drums else set()))
    extra = tempo_tag(tempo)
    return tags + ([extra] if extra else [])


# --------------------------------------------------------------------------- chords

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7}
_CHORD_RE = re.compile(r"^(b|#)?(vii|iii|ii|iv|vi|v|i)(°|ø)?(maj7|7)?$", re.IGNORECASE)


def chord_pitch_classes(symbol: str, tonic: int) -> tuple[int, ...]:
    """Pitch classes of a roman-numeral chord, root first.

    Degrees count on the *major* scale of the tonic, an accidental shifts the root
    (``bVII`` in C is B flat); upper case is a major triad, lower case minor, ``°``
    diminished, ``ø7`` half-diminished; ``7`` adds a dominant (upper case) or minor (lower
    case, ``°``: diminished) seventh, ``maj7`` a major seventh.
    """
    match = _CHORD_RE.match(symbol)
    if match is None:
        raise ValueError(f"unrecognised chord symbol {symbol!r}")
    accidental, numeral, alteration, seventh = match.groups()
    root = (tonic + _MAJOR_SCALE[_ROMAN[numeral.lower()] - 1] + {"b": -1, "#": 1, None: 0}[accidental]) % 12
    upper = numeral.isupper()
    if alteration == "ø":
        intervals = (0, 3, 6, 10)
    elif alteration == "°":
        intervals = (0, 3, 6, 9) if seventh == "7" else (0, 3, 6)
    else:
        intervals = (0, 4, 7) if upper else (0, 3, 7)
        if seventh == "7":
            intervals += (10,)
        elif seventh == "maj7":
            intervals += (11,)
    return tuple((root + i) % 12 for i in intervals)


def _melody_scale(tonic: int, mode: str, chord: Sequence[int]) -> list[int]:
    """Scale pitch classes for a melody over ``chord``: a scale tone a semitone away from a
    chord tone outside the scale (the raised leading tone of a minor key's V) gives way to it."""
    scale = [(tonic + s) % 12 for s in (_MAJOR_SCALE if mode == "major" else _MINOR_SCALE)]
    foreign = [c for c in chord if c not in scale]
    out = []
    for pc in scale:
        clash = next((c for c in foreign if (c - pc) % 12 in (1, 11)), None)
        out.append(pc if clash is None else clash)
    return sorted(set(out))


def _pitches_in_range(pcs: Sequence[int], low: int, high: int) -> list[int]:
    wanted = {p % 12 for p in pcs}
    return [p for p in range(low, high + 1) if p % 12 in wanted]


def _nearest(pitches: Sequence[int], target: float) -> int:
    return min(pitches, key=lambda p: (abs(p - target), p))


def _voicing(chord: Sequence[int], low: int, previous: Sequence[int] | None, voices: int) -> list[int]:
    """Close-position voicing of ``voices`` notes from ``low`` up, nearest to ``previous``."""
    candidates = []
    for start in range(len(chord)):
        order = list(chord[start:]) + list(chord[:start])
        pitches, current = [], low - 1
        for i in range(voices):
            pc = order[i % len(order)]
            current = current + 1 + ((pc - current - 1) % 12)
            pitches.append(current)
        candidates.append(pitches)
    if previous is None:
        return candidates[0]
    return min(candidates, key=lambda c: (sum(abs(a - b) for a, b in zip(c, previous)), c))


# --------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class Meter:
    name: str
    #: beats per bar
    beats: int
    #: subdivisions of a beat: 2 simple meters, 3 compound (6/8)
    division: int


M44 = Meter("4/4", 4, 2)
M34 = Meter("3/4", 3, 2)
M24 = Meter("2/4", 2, 2)
M68 = Meter("6/8", 2, 3)

# GM percussion notes
KICK, SIDESTICK, SNARE, CLAP, CLOSED_HH, PEDAL_HH, OPEN_HH = 36, 37, 38, 39, 42, 44, 46
CRASH, RIDE, SHAKER, LOW_TOM, MID_TOM, HIGH_TOM = 49, 51, 70, 45, 47, 50

#: velocity of a step character in a drum pattern ('.' is a rest)
_STEP_VELOCITY = {"X": 112, "x": 92, "o": 58}

#: a drum pattern: percussion note -> step string over one bar (or several: a string longer
#: than ``steps_per_bar`` runs over consecutive bars)
DrumPattern = dict


@dataclass(frozen=True)
class Style:
    name: str
    meters: tuple[Meter, ...]
    tempo: dict  # meter name -> (low, high) beats per minute
    #: progressions per mode; each a list of bars, each bar a list of chord symbols
    progressions: dict
    bass: str
    comp: str
    drums: tuple  # of (meter name, steps per bar, DrumPattern); empty: no drums
    #: probability that a piece of this style has its drums (when it has patterns)
    drum_probability: float
    bass_programs: tuple[int, ...]
    comp_programs: tuple[int, ...]
    melody_programs: tuple[int, ...]
    pad_programs: tuple[int, ...] = ()
    pad_probability: float = 0.0
    #: "phrase": a generated tune; "arpeggio": a repeated chord-tone figure; "": none
    melody: str = "phrase"
    swing: bool = False
    #: drum fill on the last beat of every 4th bar
    fills: bool = False
    #: crash cymbal every N bars (0: never)
    crash_every: int = 0
    #: rhythmic density of the melody, 0..1
    density: float = 0.5
    #: fixed SATB ensembles (programs) for the "block" comp; overrides the pools
    ensembles: tuple = ()


# Ensembles for four-voice (soprano, alto, tenor, bass) textures; shared with the chorales.
SATB_ENSEMBLES: dict[str, tuple[int, int, int, int]] = {
    "church organ": (19, 19, 19, 19),
    "reed organ": (20, 20, 20, 20),
    "string quartet": (40, 40, 41, 42),
    "string ensemble": (48, 48, 48, 48),
    "choir": (52, 52, 52, 52),
    "piano": (0, 0, 0, 0),
    "harpsichord": (6, 6, 6, 6),
    "brass quartet": (56, 60, 57, 58),
    "woodwind quartet": (73, 68, 71, 70),
    "choir and organ": (52, 52, 19, 19),
}

_P = {  # progressions by mode
    "rock": {
        "major": [[["I"], ["V"], ["vi"], ["IV"]], [["I"], ["IV"], ["V"], ["IV"]],
                  [["I"], ["bVII"], ["IV"], ["I"]], [["I"], ["IV"], ["I"], ["V"]]],
        "minor": [[["i"], ["bVI"], ["bVII"], ["i"]], [["i"], ["iv"], ["bVII"], ["V"]],
                  [["i"], ["bVII"], ["bVI"], ["V"]], [["i"], ["iv"], ["i"], ["V"]]],
    },
    "waltz": {
        "major": [[["I"], ["I"], ["V7"], ["V7"], ["V7"], ["V7"], ["I"], ["I"]],
                  [["I"], ["IV"], ["V7"], ["I"]], [["I"], ["vi"], ["ii"], ["V7"]]],
        "minor": [[["i"], ["i"], ["V7"], ["V7"], ["V7"], ["V7"], ["i"], ["i"]],
                  [["i"], ["iv"], ["V7"], ["i"]], [["i"], ["bVI"], ["iiø7"], ["V7"]]],
    },
    "bossa": {
        "major": [[["Imaj7"], ["vi7"], ["ii7"], ["V7"]], [["Imaj7"], ["II7"], ["ii7"], ["V7"]],
                  [["Imaj7"], ["IVmaj7"], ["iii7"], ["vi7"], ["ii7"], ["V7"], ["Imaj7"], ["Imaj7"]]],
        "minor": [[["i7"], ["iv7"], ["V7"], ["i7"]], [["i7"], ["iiø7"], ["V7"], ["i7"]],
                  [["i7"], ["bVImaj7"], ["iiø7"], ["V7"]]],
    },
    "march": {
        "major": [[["I"], ["I"], ["V"], ["V"], ["V"], ["V"], ["I"], ["I"]],
                  [["I"], ["IV"], ["V7"], ["I"]], [["I"], ["V7"], ["I"], ["V7"]]],
        "minor": [[["i"], ["iv"], ["V"], ["i"]], [["i"], ["V7"], ["i"], ["V7"]],
                  [["i"], ["i"], ["V7"], ["V7"], ["V7"], ["V7"], ["i"], ["i"]]],
    },
    "ballad": {
        "major": [[["I"], ["vi"], ["IV"], ["V"]], [["I"], ["V"], ["vi"], ["iii"], ["IV"], ["I"], ["IV"], ["V"]],
                  [["I"], ["iii"], ["IV"], ["V"]], [["I"], ["IV"], ["vi"], ["V"]]],
        "minor": [[["i"], ["iv"], ["bVI"], ["V"]], [["i"], ["bVII"], ["bVI"], ["V"]],
                  [["i"], ["bVI"], ["iv"], ["V"]]],
    },
    "techno": {
        "major": [[["I"], ["I"], ["IV"], ["IV"]], [["I"], ["vi"], ["IV"], ["V"]], [["I"], ["IV"], ["I"], ["V"]]],
        "minor": [[["i"], ["i"], ["bVI"], ["bVII"]], [["i"], ["iv"], ["i"], ["iv"]],
                  [["i"], ["bVII"], ["bVI"], ["V"]]],
    },
    "swing": {
        "major": [[["Imaj7"], ["vi7"], ["ii7"], ["V7"]], [["Imaj7"], ["VI7"], ["ii7"], ["V7"]],
                  [["Imaj7"], ["iii7", "vi7"], ["ii7", "V7"], ["Imaj7"]]],
        "minor": [[["i7"], ["iiø7"], ["V7"], ["i7"]], [["i7"], ["iv7"], ["V7"], ["i7"]],
                  [["i7"], ["bVI7"], ["iiø7"], ["V7"]]],
    },
    "chorale": {
        "major": [[["I", "IV"], ["V", "I"], ["vi", "ii"], ["V", "I"]], [["I", "V"], ["vi", "IV"], ["I", "ii"], ["V", "V"]],
                  [["I", "vi"], ["ii", "V"], ["I", "IV"], ["V", "I"]]],
        "minor": [[["i", "iv"], ["V", "i"], ["bVI", "iv"], ["V", "i"]], [["i", "V"], ["i", "iv"], ["bVI", "iiø7"], ["V", "V"]],
                  [["i", "bVI"], ["iv", "V"], ["i", "iv"], ["V", "i"]]],
    },
}

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            "rock", (M44,), {"4/4": (100, 150)}, _P["rock"], bass="eighths", comp="power",
            drums=(("4/4", 16, {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HH: "x.x.x.x.x.x.x.x."}),
                   ("4/4", 16, {KICK: "x.....x.x.......", SNARE: "....X.......X...", CLOSED_HH: "xxxxxxxxxxxxxxxx"}),
                   ("4/4", 8, {KICK: "x...x...", SNARE: "..X...X.", RIDE: "x.x.x.x."})),
            drum_probability=1.0, bass_programs=(33, 34), comp_programs=(29, 30, 27),
            melody_programs=(30, 29, 81, 18), fills=True, crash_every=4, density=0.55,
        ),
        Style(
            "waltz", (M34,), {"3/4": (120, 180)}, _P["waltz"], bass="oompah", comp="afterbeat",
            drums=(), drum_probability=0.0, bass_programs=(43, 58, 32), comp_programs=(48, 0, 21),
            melody_programs=(40, 73, 21, 71), pad_programs=(48, 49), pad_probability=0.3, density=0.45,
        ),
        Style(
            "bossa", (M44,), {"4/4": (118, 145)}, _P["bossa"], bass="bossa", comp="bossa",
            drums=(("4/4", 16, {KICK: "x..xx..xx..xx..x", SIDESTICK: "x..x..x...x..x....x..x..x...x...",
                         CLOSED_HH: "o.o.o.o.o.o.o.o."}),
                   ("4/4", 16, {KICK: "x..xx..xx..xx..x", SIDESTICK: "x..x..x...x..x..", SHAKER: "oooooooooooooooo"})),
            drum_probability=1.0, bass_programs=(32, 33), comp_programs=(24, 0, 4),
            melody_programs=(73, 66, 11, 65), density=0.45,
        ),
        Style(
            "march", (M24, M68), {"2/4": (108, 126), "6/8": (100, 120)}, _P["march"], bass="oompah", comp="afterbeat",
            drums=(("2/4", 8, {KICK: "x...x...", SNARE: "X.xxx.x.x.x.Xxxx", CRASH: "o...o..."}),
                   ("6/8", 6, {KICK: "x..x..", SNARE: "X.xx.xx.xX.x", CRASH: "o....."})),
            drum_probability=1.0, bass_programs=(58,), comp_programs=(57, 60), melody_programs=(56, 72, 71),
            fills=True, crash_every=8, density=0.55,
        ),
        Style(
            "ballad", (M44, M68), {"4/4": (60, 80), "6/8": (44, 60)}, _P["ballad"], bass="long", comp="arpeggio",
            drums=(("4/4", 8, {KICK: "x.....x.", SIDESTICK: "..x...x.", CLOSED_HH: "o.o.o.o."}),
                   ("6/8", 6, {KICK: "x.....", SIDESTICK: "...x..", CLOSED_HH: "oooooo"})),
            drum_probability=0.5, bass_programs=(33, 32, 35), comp_programs=(0, 4),
            melody_programs=(73, 68, 53, 65, 42), pad_programs=(48, 49, 89), pad_probability=0.6,
            fills=True, density=0.35,
        ),
        Style(
            "techno", (M44,), {"4/4": (122, 138)}, _P["techno"], bass="offbeat", comp="stab",
            drums=(("4/4", 16, {KICK: "X...X...X...X...", CLAP: "....x.......x...", CLOSED_HH: "oooooooooooooooo",
                         OPEN_HH: "..x...x...x...x."}),
                   ("4/4", 16, {KICK: "X...X...X...X...", SNARE: "....x.......x...", OPEN_HH: "..x...x...x...x.",
                         RIDE: "o.o.o.o.o.o.o.o."})),
            drum_probability=1.0, bass_programs=(38, 39), comp_programs=(90, 81),
            melody_programs=(80, 81, 84), pad_programs=(89, 91, 95), pad_probability=0.7,
            melody="arpeggio", crash_every=8, density=0.6,
        ),
        Style(
            "swing", (M44,), {"4/4": (120, 200)}, _P["swing"], bass="walking", comp="charleston",
            drums=(("4/4", 12, {RIDE: "x..x.xx..x.x", PEDAL_HH: "...x.....x..", KICK: "o..o..o..o.."}),),
            drum_probability=1.0, bass_programs=(32,), comp_programs=(0, 26), melody_programs=(66, 65, 56, 59, 11),
            swing=True, density=0.5,
        ),
        Style(
            "chorale", (M44, M34), {"4/4": (56, 84), "3/4": (60, 88)}, _P["chorale"], bass="", comp="block",
            drums=(), drum_probability=0.0, bass_programs=(), comp_programs=(), melody_programs=(),
            melody="", ensembles=tuple(SATB_ENSEMBLES.items()),
        ),
    )
}
STYLE_NAMES: tuple[str, ...] = tuple(STYLES)

# comfortable melody registers (low, high) by GM program; others use the default
_MELODY_RANGE = {42: (48, 72), 53: (57, 79), 56: (55, 79), 59: (55, 79), 65: (56, 79), 66: (49, 72),
                 71: (55, 81), 72: (74, 96), 73: (62, 88), 68: (60, 84), 11: (60, 84)}
_DEFAULT_MELODY_RANGE = (60, 84)


# --------------------------------------------------------------------------- pieces


@dataclass
class Track:
    """One instrument: ``notes`` are ``(start_s, end_s, pitch, velocity)``."""

    role: str
    program: int
    is_drum: bool = False
    #: channel volume (MIDI CC 7)
    volume: int = 100
    notes: list = field(default_factory=list)


@dataclass
class Piece:
    style: str
    tonic: int
    mode: str
    tempo: float
    meter: str
    seconds: float
    tracks: list
    #: free-form description of the random choices (ensemble, progression, patterns)
    details: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return key_label(self.tonic, self.mode)

    @property
    def programs(self) -> list[int]:
        """Sorted distinct GM programs of the pitched tracks."""
        return sorted({t.program for t in self.tracks if not t.is_drum})

    @property
    def has_drums(self) -> bool:
        return any(t.is_drum and t.notes for t in self.tracks)

    @property
    def tags(self) -> list[str]:
        return piece_tags(self.programs, self.has_drums, self.tempo)

    def to_pretty_midi(self):
        """This piece as a ``pretty_midi.PrettyMIDI`` (imported here, on demand)."""
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=float(self.tempo))
        for track in self.tracks:
            inst = pretty_midi.Instrument(program=track.program, is_drum=track.is_drum, name=track.role)
            inst.control_changes.append(pretty_midi.ControlChange(7, int(track.volume), 0.0))
            for start, end, pitch, velocity in track.notes:
                inst.notes.append(pretty_midi.Note(int(velocity), int(pitch), float(start), float(end)))
            pm.instruments.append(inst)
        return pm


class _Clock:
    """Beat positions -> seconds, with optional swing of off-beat eighths."""

    def __init__(self, meter: Meter, tempo: float, swing: bool):
        self.meter = meter
        self.beat = 60.0 / tempo
        self.swing = swing

    def time(self, bar: int, beat: float) -> float:
        whole, frac = divmod(beat, 1.0)
        if self.swing and abs(frac - 0.5) < 1e-9:
            frac = 2.0 / 3.0
        return (bar * self.meter.beats + whole + frac) * self.beat


def _vel(rng: random.Random, base: int, spread: int = 6) -> int:
    return max(1, min(127, base + rng.randint(-spread, spread)))


def _add(track: Track, clock: _Clock, bar: int, beat: float, length: float, pitch: int, velocity: int,
         end_limit: float) -> None:
    start = clock.time(bar, beat)
    if start >= end_limit:
        return
    end = min(clock.time(bar, beat + length), end_limit)
    if end - start > 0.01:
        track.notes.append((round(start, 6), round(end, 6), int(pitch), int(velocity)))


def _bar_chords(progression: list, bars: int) -> list[list[str]]:
    return [progression[i % len(progression)] for i in range(bars)]


def _chord_at(chords_of_bar: list[str], beat: float, meter: Meter) -> str:
    index = min(int(beat * len(chords_of_bar) / meter.beats), len(chords_of_bar) - 1)
    return chords_of_bar[index]


def _drums(style: Style, rng: random.Random, clock: _Clock, bars: int, end: float) -> Track | None:
    if not style.drums or rng.random() >= style.drum_probability:
        return None
    meter = clock.meter
    _, steps, pattern = rng.choice([d for d in style.drums if d[0] == meter.name])
    track = Track("drums", 0, is_drum=True, volume=100)
    step_beats = meter.beats / steps
    for bar in range(bars):
        fill = style.fills and bar % 4 == 3
        for note, text in sorted(pattern.items()):
            offset = (bar * steps) % len(text)
            for i in range(steps):
                ch = text[offset + i] if offset + i < len(text) else "."
                beat = i * step_beats
                if ch == "." or (fill and beat >= meter.beats - 1 and note != KICK):
                    continue
                _add(track, clock, bar, beat, step_beats, note, _vel(rng, _STEP_VELOCITY[ch], 5), end)
        if fill:
            toms = [SNARE, HIGH_TOM, MID_TOM, LOW_TOM]
            sub = meter.division * 2
            for j in range(sub):
                beat = meter.beats - 1 + j / sub
                _add(track, clock, bar, beat, 1 / sub, toms[j * len(toms) // sub], _vel(rng, 96), end)
        if style.crash_every and bar % style.crash_every == 0:
            _add(track, clock, bar, 0.0, 1.0, CRASH, _vel(rng, 100), end)
    track.notes.sort()
    return track


def _bass(style: Style, rng: random.Random, clock: _Clock, chords: list, tonic: int, mode: str, end: float) -> Track:
    program = rng.choice(style.bass_programs)
    track = Track("bass", program, volume=104)
    meter = clock.meter
    low, high = 28, 52
    for bar, bar_chords in enumerate(chords):
        def pcs(beat: float) -> tuple[int, ...]:
            return chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)

        def root(beat: float, octave_hint: float = 38) -> int:
            return _nearest(_pitches_in_range(pcs(beat)[:1], low, high), octave_hint)

        def fifth(beat: float) -> int:
            chord = pcs(beat)
            return _nearest(_pitches_in_range([chord[2 if len(chord) > 2 else 0]], low, high), root(beat) + 5)

        v = 90
        if style.bass == "eighths":
            for i in range(meter.beats * 2):
                beat = i / 2
                _add(track, clock, bar, beat, 0.45, root(beat), _vel(rng, v + (8 if i % 2 == 0 else 0)), end)
        elif style.bass == "oompah":
            if meter.beats == 3:  # waltz: one bass note a bar, root and fifth in turn
                pitch = root(0) if bar % 2 == 0 else fifth(0)
                _add(track, clock, bar, 0, 0.95, pitch, _vel(rng, v), end)
            else:  # march: root on the first beat, fifth on the second
                for beat in range(meter.beats):
                    pitch = root(beat) if beat % 2 == 0 else fifth(beat)
                    _add(track, clock, bar, beat, 0.8, pitch, _vel(rng, v), end)
        elif style.bass == "bossa":
            for beat, length, which in ((0, 1.5, "r"), (1.5, 0.5, "f"), (2, 1.5, "f"), (3.5, 0.5, "r")):
                pitch = root(beat) if which == "r" else fifth(beat)
                _add(track, clock, bar, beat, length * 0.95, pitch, _vel(rng, v), end)
        elif style.bass == "long":
            half = meter.beats / 2
            _add(track, clock, bar, 0, half * 0.98, root(0), _vel(rng, v - 10), end)
            _add(track, clock, bar, half, half * 0.98, root(half) if rng.random() < 0.6 else fifth(half),
                 _vel(rng, v - 14), end)
        elif style.bass == "offbeat":
            for i in range(meter.beats):
                r = root(i + 0.5)
                _add(track, clock, bar, i + 0.5, 0.35, r + (12 if i % 2 and r + 12 <= high + 12 else 0),
                      _vel(rng, v + 5), end)
        elif style.bass == "walking":
            next_chords = chords[(bar + 1) % len(chords)]
            for i in range(meter.beats):
                chord = pcs(i)
                if i == 0:
                    pitch = root(0, track.notes[-1][2] if track.notes else 38)
                elif i == meter.beats - 1:
                    nxt = _nearest(_pitches_in_range(chord_pitch_classes(next_chords[0], tonic)[:1], low, high),
                                   track.notes[-1][2] if track.notes else 38)
                    pitch = nxt + rng.choice((-1, 1))
                else:
                    scale = _pitches_in_range(chord, low, high)
                    prev = track.notes[-1][2] if track.notes else 38
                    options = [p for p in scale if 1 <= abs(p - prev) <= 5] or scale
                    pitch = rng.choice(options)
                _add(track, clock, bar, i, 0.9, pitch, _vel(rng, v), end)
        else:
            raise ValueError(f"unknown bass pattern {style.bass!r}")
    return track


def _comp(style: Style, rng: random.Random, clock: _Clock, chords: list, tonic: int, end: float,
          program: int) -> Track:
    track = Track("comp", program, volume=82)
    meter = clock.meter
    previous = None
    bossa_positions = rng.choice([((0, 1), (1.5, 0.5), (2.5, 1), (3.5, 0.5)), ((0, 0.75), (1, 0.5), (2.5, 0.5), (3, 1))])
    stab_positions = rng.choice([(0.5, 1.5, 2.5, 3.5), (0.0, 0.75, 1.5, 2.5, 3.25)])
    power_chords = rng.random() < 0.3
    for bar, bar_chords in enumerate(chords):
        def voicing(beat: float, low: int = 52, voices: int = 4) -> list[int]:
            nonlocal previous
            chord = chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)
            previous = _voicing(chord, low, previous, voices)
            return previous

        if style.comp == "power":
            # power chords (root, fifth, octave) or, in most pieces, full triads: without
            # thirds the mode and even the key are ambiguous
            rhythm = rng.choice([[i / 2 for i in range(meter.beats * 2)], [0, 1.5, 2.5, 3], [0, 2]])
            for beat in rhythm:
                length = 0.45 if len(rhythm) > 4 else 0.9
                if power_chords:
                    chord = chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)
                    r = _nearest(_pitches_in_range(chord[:1], 40, 52), 45)
                    pitches = [r, r + 7, r + 12]
                else:
                    pitches = voicing(beat, 50, 4)
                for p in pitches:
                    _add(track, clock, bar, beat, length, p, _vel(rng, 88), end)
        elif style.comp == "afterbeat":
            if meter.name == "3/4":
                positions = [(1, 0.8), (2, 0.8)]
            elif meter.name == "6/8":
                positions = [(1 / 3, 0.3), (2 / 3, 0.3), (4 / 3, 0.3), (5 / 3, 0.3)]
            else:
                positions = [(0.5, 0.4), (1.5, 0.4)]
            for beat, length in positions:
                for p in voicing(beat, 55, 3):
                    _add(track, clock, bar, beat, length, p, _vel(rng, 70), end)
        elif style.comp == "bossa":
            for beat, length in bossa_positions:
                for p in voicing(beat, 50, 4):
                    _add(track, clock, bar, beat, length * 0.9, p, _vel(rng, 68), end)
        elif style.comp == "arpeggio":
            steps = meter.beats * meter.division
            for i in range(steps):
                beat = i / meter.division
                v = voicing(beat, 48, 4) if i % (steps // max(1, len(bar_chords))) == 0 else previous
                order = [0, 1, 2, 3, 2, 1]
                pitch = v[order[i % len(order)]] + (12 if i % len(order) == 3 else 0)
                _add(track, clock, bar, beat, 1.0 / meter.division * 1.8, pitch, _vel(rng, 62), end)
        elif style.comp == "stab":
            for beat in stab_positions:
                for p in voicing(beat, 55, 3):
                    _add(track, clock, bar, beat, 0.3, p, _vel(rng, 80), end)
        elif style.comp == "charleston":
            positions = rng.choice([[(0, 0.6), (1.5, 0.4)], [(0.5, 0.4), (2, 0.6)], [(1, 0.4), (2.5, 0.4), (3.5, 0.4)]])
            for beat, length in positions:
                for p in voicing(beat, 50, 4):
                    _add(track, clock, bar, beat, length, p, _vel(rng, 66), end)
        else:
            raise ValueError(f"unknown comp pattern {style.comp!r}")
    return track


def _pad(style: Style, rng: random.Random, clock: _Clock, chords: list, tonic: int, end: float) -> Track | None:
    if not style.pad_programs or rng.random() >= style.pad_probability:
        return None
    track = Track("pad", rng.choice(style.pad_programs), volume=70)
    meter = clock.meter
    previous = None
    for bar, bar_chords in enumerate(chords):
        span = meter.beats / len(bar_chords)
        for j, symbol in enumerate(bar_chords):
            previous = _voicing(chord_pitch_classes(symbol, tonic), 55, previous, 3)
            for p in previous:
                _add(track, clock, bar, j * span, span * 0.98, p, _vel(rng, 60, 3), end)
    return track


def _beat_cells(meter: Meter, density: float, swing: bool) -> list[tuple[float, list]]:
    """(weight, [(offset, length, rest?)]) rhythm cells filling one beat."""
    if meter.division == 3:
        third = 1 / 3
        return [(1.0, [(0, 1, False)]), (density, [(0, 2 * third, False), (2 * third, third, False)]),
                (density * 0.6, [(0, third, False), (third, third, False), (2 * third, third, False)]),
                (0.25, [(0, 1, True)])]
    cells = [(1.0, [(0, 1, False)]), (0.5 + density, [(0, 0.5, False), (0.5, 0.5, False)]),
             (0.3, [(0, 1, True)]), (0.2, [(0, 0.5, True), (0.5, 0.5, False)])]
    if not swing:
        cells += [(density * 0.5, [(0, 0.75, False), (0.75, 0.25, False)]),
                  (density * 0.3, [(0, 0.25, False), (0.25, 0.25, False), (0.5, 0.5, False)])]
    return cells


def _bar_rhythm(rng: random.Random, meter: Meter, density: float, swing: bool) -> list[tuple[float, float]]:
    """(beat, length) notes of one bar; two-beat notes appear now and then."""
    cells = _beat_cells(meter, density, swing)
    weights = [w for w, _ in cells]
    notes: list[tuple[float, float]] = []
    beat = 0
    while beat < meter.beats:
        if beat + 2 <= meter.beats and rng.random() < 0.15 * (1.2 - density):
            notes.append((beat, 2.0))
            beat += 2
            continue
        cell = rng.choices([c for _, c in cells], weights)[0]
        notes.extend((beat + off, length) for off, length, rest in cell if not rest)
        beat += 1
    return notes


def _melody(style: Style, rng: random.Random, clock: _Clock, chords: list, tonic: int, mode: str, end: float) -> Track:
    program = rng.choice(style.melody_programs)
    low, high = _MELODY_RANGE.get(program, _DEFAULT_MELODY_RANGE)
    track = Track("melody", program, volume=112)
    meter = clock.meter
    if style.melody == "arpeggio":
        steps = meter.beats * 4
        figure = [rng.randrange(4) for _ in range(rng.choice((4, 8)))]
        for bar, bar_chords in enumerate(chords):
            for i in range(steps):
                beat = i / 4
                chord = chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)
                pitches = _pitches_in_range(chord, low, min(high, low + 19))
                pitch = pitches[figure[i % len(figure)] % len(pitches)]
                _add(track, clock, bar, beat, 0.2, pitch, _vel(rng, 84 if i % 4 == 0 else 70), end)
        return track
    # phrase of four bars with rhythm form A A' A B (A' = A, B = new), pitches by a
    # chord-tone-biased random walk; the phrase ends long on the root or third
    motif = _bar_rhythm(rng, meter, style.density, style.swing)
    other = _bar_rhythm(rng, meter, style.density, style.swing)
    current = _nearest(_pitches_in_range([tonic], low, high), (low + high) / 2)
    for bar, bar_chords in enumerate(chords):
        position = bar % 4
        if position == 3:
            rhythm = [(n, length) for n, length in other if n < meter.beats - 1] + [(meter.beats - 1, 1.0)]
            rhythm = sorted(set(rhythm))
        else:
            rhythm = motif if position != 2 else other
        for k, (beat, length) in enumerate(rhythm):
            chord = chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)
            strong = abs(beat - round(beat)) < 1e-9 and (beat == 0 or beat == meter.beats // 2 or meter.beats == 3)
            last = position == 3 and k == len(rhythm) - 1
            if last:
                pool = _pitches_in_range(chord[:2], low, high)
            elif strong:
                pool = _pitches_in_range(chord, low, high)
            else:
                pool = _pitches_in_range(_melody_scale(tonic, mode, chord), low, high)
            step = rng.choice((-4, -3, -2, -1, -1, 0, 1, 1, 2, 3, 4))
            goal = current + step
            if goal < low + 3:
                goal += 5
            elif goal > high - 3:
                goal -= 5
            current = _nearest(pool, goal)
            accent = 10 if beat == 0 else 0
            _add(track, clock, bar, beat, length * (0.98 if last else 0.9), current, _vel(rng, 88 + accent), end)
    return track


def _block_chorale(style: Style, rng: random.Random, clock: _Clock, chords: list, tonic: int, mode: str,
                   end: float) -> tuple[list[Track], str]:
    name, programs = rng.choice(style.ensembles)
    voices = [Track(role, program, volume=100) for role, program in zip(("soprano", "alto", "tenor", "bass"), programs)]
    meter = clock.meter
    previous = None
    bass_range = (38, 60)
    for bar, bar_chords in enumerate(chords):
        cadence = bar % 4 == 3
        for beat in range(meter.beats):
            length = 1
            if cadence and beat > 0:  # a cadence holds its second chord to the bar line
                if beat > 1:
                    continue
                length = meter.beats - 1
            chord = chord_pitch_classes(_chord_at(bar_chords, beat, meter), tonic)
            bass = _nearest(_pitches_in_range(chord[:1], *bass_range), previous[3] if previous else 48)
            upper = _voicing(chord, max(bass + 3, 52), previous[:3][::-1] if previous else None, 3)
            current = [upper[2], upper[1], upper[0], bass]
            for track, pitch in zip(voices, current):
                _add(track, clock, bar, beat, length * 0.97, pitch, _vel(rng, 84 if track.role == "soprano" else 74), end)
            previous = current
    return voices, name


def generate_piece(style: str | Style, rng: random.Random, *, seconds: float, tonic: int, mode: str) -> Piece:
    """One piece of ``style`` in the key (``tonic``, ``mode``), ``seconds`` long.

    Every random choice (meter, tempo, patterns, programs, progression, notes) is drawn
    from ``rng`` in a fixed order.
    """
    style = STYLES[style] if isinstance(style, str) else style
    if mode not in MODES:
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    tonic = int(tonic) % 12
    meter = rng.choice(style.meters)
    low, high = style.tempo[meter.name]
    tempo = rng.randint(low, high)
    clock = _Clock(meter, tempo, style.swing)
    bar_seconds = meter.beats * 60.0 / tempo
    bars = int(seconds / bar_seconds) + 1
    progression = rng.choice(style.progressions[mode])
    chords = _bar_chords(progression, bars)
    details = {"meter": meter.name, "progression": " | ".join(" ".join(b) for b in progression)}
    tracks: list[Track] = []
    if style.comp == "block":
        voices, ensemble = _block_chorale(style, rng, clock, chords, tonic, mode, seconds)
        tracks.extend(voices)
        details["ensemble"] = ensemble
    else:
        drums = _drums(style, rng, clock, bars, seconds)
        tracks.append(_bass(style, rng, clock, chords, tonic, mode, seconds))
        tracks.append(_comp(style, rng, clock, chords, tonic, seconds, rng.choice(style.comp_programs)))
        pad = _pad(style, rng, clock, chords, tonic, seconds)
        if pad is not None:
            tracks.append(pad)
        tracks.append(_melody(style, rng, clock, chords, tonic, mode, seconds))
        if drums is not None:
            tracks.append(drums)
    tracks = [t for t in tracks if t.notes]
    return Piece(style=style.name, tonic=tonic, mode=mode, tempo=float(tempo), meter=meter.name,
                 seconds=float(seconds), tracks=tracks, details=details)

