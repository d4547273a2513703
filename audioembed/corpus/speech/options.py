"""What to build: :class:`SpeechCorpusOptions` and its validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .common import RENDER_VERSION, SAMPLE_RATE, CorpusError


def _fractions(value: Sequence[float], what: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or values[0] <= 0:
        raise CorpusError(f"{what} must be three non-negative fractions TRAIN,DEV,TEST with TRAIN > 0, got {value!r}")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _range(value: Sequence[float], what: str, low: float, high: float) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 2 or not (low <= values[0] <= values[1] <= high):
        raise CorpusError(f"{what} must be MIN,MAX with {low:g} <= MIN <= MAX <= {high:g}, got {value!r}")
    return values  # type: ignore[return-value]


@dataclass
class SpeechCorpusOptions:
    """What to build. Sizes left at None mean "all of it"."""

    #: how many prompts to use (a seeded choice); None: every usable prompt
    sentences: int | None = None
    #: how many default speakers; ignored when ``speaker_list`` is given
    speakers: int | None = None
    #: explicit ``engine:voice`` speakers (errors name the package when one is missing)
    speaker_list: tuple[str, ...] = ()
    #: cap on the number of utterances; default 6000 (about 5 minutes on 2 cores)
    utterances: int | None = 6000
    #: alternative to ``utterances``: approximate hours of audio
    hours: float | None = None
    #: TRAIN,DEV,TEST fractions of the voice groups and of the sentences
    speaker_split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    sentence_split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: speaking rate and pitch factors, drawn uniformly per utterance
    rate_range: tuple[float, float] = (0.85, 1.15)
    pitch_range: tuple[float, float] = (0.85, 1.15)
    #: probability of additive coloured noise, and its SNR range in dB
    noise_prob: float = 0.0
    snr_range: tuple[float, float] = (5.0, 30.0)
    #: probability of synthetic reverberation, and its RT60 range in seconds
    reverb_prob: float = 0.0
    rt60_range: tuple[float, float] = (0.2, 0.8)
    #: folder with the real recordings (../shared/data) to add to pretrain.csv
    real_dir: str | None = None
    #: parallel synthesis jobs; None: the number of CPUs
    jobs: int | None = None
    #: re-synthesise files that exist
    overwrite: bool = False
    #: show a progress bar
    progress: bool = False

    def checked(self) -> "SpeechCorpusOptions":
        """A validated copy (fractions normalised to sum to 1)."""
        if self.utterances is not None and self.hours is not None and self.utterances != SpeechCorpusOptions.utterances:
            raise CorpusError("give either utterances or hours, not both")
        for name in ("sentences", "speakers", "utterances", "jobs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise CorpusError(f"{name} must be a positive integer, got {value!r}")
        if self.hours is not None and not (math.isfinite(self.hours) and self.hours > 0):
            raise CorpusError(f"hours must be > 0, got {self.hours!r}")
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise CorpusError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        return SpeechCorpusOptions(
            sentences=self.sentences,
            speakers=self.speakers,
            speaker_list=tuple(self.speaker_list),
            utterances=None if self.hours is not None else self.utterances,
            hours=self.hours,
            speaker_split=_fractions(self.speaker_split, "speaker_split"),
            sentence_split=_fractions(self.sentence_split, "sentence_split"),
            rate_range=_range(self.rate_range, "rate_range", 0.3, 3.0),
            pitch_range=_range(self.pitch_range, "pitch_range", 0.3, 3.0),
            noise_prob=float(self.noise_prob),
            snr_range=_range(self.snr_range, "snr_range", -20.0, 100.0),
            reverb_prob=float(self.reverb_prob),
            rt60_range=_range(self.rt60_range, "rt60_range", 0.05, 3.0),
            real_dir=self.real_dir,
            jobs=self.jobs,
            overwrite=self.overwrite,
            progress=self.progress,
        )

    def audio_settings(self, seed: int) -> dict:
        """What shapes each file's samples (recorded in the output folder, checked on resume)."""
        return {
            "render_version": RENDER_VERSION,
            "sample_rate": SAMPLE_RATE,
            "seed": int(seed),
            "rate_range": list(self.rate_range),
            "pitch_range": list(self.pitch_range),
            "noise_prob": self.noise_prob,
            "snr_range": list(self.snr_range),
            "reverb_prob": self.reverb_prob,
            "rt60_range": list(self.rt60_range),
        }
