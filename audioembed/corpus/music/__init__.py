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

Layout (one job per module)
    ``common`` (constants, :class:`MusicCorpusError`, seeded randomness), ``rendering``
    (soundfonts, synthesis of a piece), ``chorales`` (music21 chorales and their key rule),
    ``planning`` (generated pieces, splits, key balancing, planned items), ``options``
    (:class:`MusicCorpusOptions`), ``workers`` (process pool, atomic writes), ``builder``
    (the builder), ``command`` (the CLI); the style grammar is ``audioembed.corpus.midi_styles``.
    Import from this package; the modules are its parts.
"""

from .builder import MusicCorpusBuilder, build_music_corpus
from .chorales import (KEY_PROFILES, KEY_VOTES, MAX_DRAWS, analyse_chorale, chorale_piece, key_profile_estimate,
                       key_votes, list_chorales)
from .command import music_command
from .common import INSTALL_HINT, MANIFEST_COLUMNS, RENDER_RATE, SAMPLE_RATE, MusicCorpusError
from .options import MusicCorpusOptions
from .planning import PlannedItem, assign_target_tonics, generate_labelled_piece, split_groups, transpose_interval
from .rendering import default_soundfont, render_piece, resolve_soundfonts


__all__ = [
    "SAMPLE_RATE",
    "RENDER_RATE",
    "MANIFEST_COLUMNS",
    "INSTALL_HINT",
    "MusicCorpusError",
    "MusicCorpusOptions",
    "PlannedItem",
    "MusicCorpusBuilder",
    "default_soundfont",
    "resolve_soundfonts",
    "list_chorales",
    "analyse_chorale",
    "KEY_PROFILES",
    "KEY_VOTES",
    "MAX_DRAWS",
    "key_profile_estimate",
    "key_votes",
    "generate_labelled_piece",
    "chorale_piece",
    "assign_target_tonics",
    "transpose_interval",
    "split_groups",
    "render_piece",
    "build_music_corpus",
    "music_command",
]
