"""Constants, the error type and the seeded randomness shared by every part of the speech builder."""

from __future__ import annotations

import hashlib
import sys
from typing import Callable, Sequence

import numpy as np
from ...errors import AudioEmbedError


#: sample rate of every file written
SAMPLE_RATE = 16000
DOMAIN = "speech"
MANIFEST = "manifest.csv"
PRETRAIN_MANIFEST = "pretrain.csv"
SETTINGS_FILE = ".speech_corpus.json"
#: bump when the rendering changes, so that old folders are not silently mixed with new audio
RENDER_VERSION = 1

#: columns of both manifests, in order
MANIFEST_COLUMNS = (
    "path",          # audio, relative to the manifest
    "id",            # <speaker slug>/<sentence id>, or real/<source>/<name>
    "transcript",    # normalised for ASR: upper case words, apostrophes kept, no punctuation
    "text",          # the prompt as written (what the engine read)
    "speaker",       # engine:voice (synthetic), source:name (real), "" when unknown
    "engine",
    "voice",
    "rate",          # speaking-rate factor (1 = the voice's default; > 1 faster)
    "pitch",         # pitch factor (1 = the voice's default)
    "split",         # train / dev / test; "pretrain" for real recordings
    "sid_split",     # a closed-set speaker-ID split: each speaker's utterances 80/10/10
    "domain",        # always "speech"
    "seconds",
    "source",        # "tts" or the real corpus (fsdd, yesno, pocketsphinx)
    "sentence",      # prompt id
    "group",         # voice group (same person / timbre)
    "snr_db",        # additive noise SNR, "" when none
    "rt60",          # reverberation time of the synthetic room, "" when none
)

Warn = Callable[[str], None]


class CorpusError(AudioEmbedError):
    """The corpus cannot be built as asked; the message says why and what to do."""


def default_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends on the seed and the labels only (never on call order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stable_int(*parts)])


#: the three splits of the manifest, in the order they are reported
SPLITS = ("train", "dev", "test")


def interleave(*lists: Sequence) -> list:
    """Round-robin over ``lists``: the first of each, then the second of each, ..."""
    out: list = []
    for i in range(max(map(len, lists))):
        out.extend(lst[i] for lst in lists if i < len(lst))
    return out
