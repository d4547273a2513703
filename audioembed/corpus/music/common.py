"""Constants, the error type and the seeded randomness shared by every part of the music builder."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from ...errors import AudioEmbedError


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
ANALYSIS_VERSION = 1
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


def require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise MusicCorpusError(f"the music corpus needs {module} ({err}); install with: {INSTALL_HINT}") from None


def stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """A generator that depends on the seed and the labels only (never on call order)."""
    return random.Random(stable_int(int(seed), *parts))


def default_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
