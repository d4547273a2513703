"""Speech corpus: text-to-speech of the CMU ARCTIC prompts through several offline engines.

``audioembed corpus speech -o DIR --prompts ../shared/data/text/cmuarctic.data`` writes
16 kHz mono PCM16 WAV files below ``DIR/wav/`` and two manifests:

* ``manifest.csv``: every synthetic utterance with its ``split`` (train/dev/test); this is
  the file for ``audioembed extract``, ``downstream asr``/``speaker_id`` and ``distill``;
* ``pretrain.csv``: the utterances that are safe for *unlabelled* pre-training and
  distillation: the train split, plus the real recordings added with ``--real`` (split
  ``pretrain``). Dev and test audio is never in it. Real recordings stay out of
  ``manifest.csv``: the task loaders would report each row whose split is not
  train/dev/test.

Speakers
    A speaker is an engine and a voice (``espeak-ng:en-us+f3``, ``flite:slt``,
    ``festival:kal_diphone``). Voices of the same person or timbre form one *voice group*
    (flite ``kal16`` and festival ``kal_diphone`` are both Kevin Lenzo; espeak-ng voices
    that share a variant such as ``+f3`` share their timbre) and always land in the same
    split, so a test speaker is unseen in training in every sense.

Splits (the rule)
    Sentences are split into train/dev/test sentence sets (``sentence_split``, default
    0.8/0.1/0.1) and voice groups into train/dev/test speaker sets (``speaker_split``,
    default 0.7/0.15/0.15; groups are ordered by a seeded shuffle, interleaved across
    engines, and test, then dev, take theirs first, so every engine is tested when it can
    be). An utterance of split S is a speaker of S reading a sentence of S: test speakers
    and test sentences never occur in train or dev, and dev ones never in train or test.
    Each non-empty split gets at least one sentence and one group when there are enough
    (train first, then test, then dev).

Size
    ``utterances`` (default 6000, about 5 minutes on 2 cores) or ``hours`` (converted with
    an estimate of each prompt's speaking time) caps the total: speakers take turns, each
    walking its split's sentences from its own offset, so speakers get equal shares and
    sentences are covered evenly; a speaker whose split runs out of sentences stops. With
    no cap (``utterances=None``, ``--all``) every speaker reads every sentence of its split.

Determinism
    Everything random (splits, rate, pitch, noise, reverberation) is drawn from the seed
    and the utterance id alone, never from the order work finishes in, so the same seed,
    options and engine versions give the same manifest and byte-identical audio. Growing
    a corpus (more utterances) keeps the audio of the utterances it already has.

Resuming
    Each file is written under a temporary name and renamed when complete; existing files
    are kept, so rerunning an interrupted build only synthesises what is missing. The
    manifests are written (atomically) at the end. ``.speech_corpus.json`` records the
    settings that shape the audio; a rerun with different ones is refused (use another
    folder or ``overwrite``).

Layout (one job per module)
    ``common`` (constants, :class:`CorpusError`, seeded randomness), ``prompts`` (prompt
    files, transcripts), ``engines`` (the synthesisers), ``speakers`` (voices, groups, the
    default set), ``options`` (:class:`SpeechCorpusOptions`), ``planning`` (splits and the
    plan, no engine run), ``rendering`` (synthesis, augmentation, WAV and manifest files),
    ``recordings`` (real recordings for pre-training), ``builder`` (the builder), ``command``
    (the CLI). Import from this package; the modules are its parts.
"""

from .builder import BuildSummary, SpeechCorpusBuilder, build_speech_corpus
from .command import speech_command
from .common import DOMAIN, MANIFEST, MANIFEST_COLUMNS, PRETRAIN_MANIFEST, SAMPLE_RATE, CorpusError
from .engines import Engine, EspeakEngine, FestivalEngine, FliteEngine, SynthRequest, default_engines
from .options import SpeechCorpusOptions
from .planning import (CorpusPlan, PlannedUtterance, estimate_seconds, plan_speech_corpus, split_sentences,
                       split_speakers)
from .prompts import Prompt, normalize_transcript, read_prompts
from .recordings import RealItem, real_recordings
from .speakers import DEFAULT_SPEAKERS, EXTRA_SPEAKERS, Speaker, default_speakers, resolve_speakers, voice_group


__all__ = [
    "SAMPLE_RATE",
    "DOMAIN",
    "MANIFEST",
    "PRETRAIN_MANIFEST",
    "MANIFEST_COLUMNS",
    "CorpusError",
    "Prompt",
    "read_prompts",
    "normalize_transcript",
    "SynthRequest",
    "Engine",
    "EspeakEngine",
    "FliteEngine",
    "FestivalEngine",
    "default_engines",
    "Speaker",
    "voice_group",
    "DEFAULT_SPEAKERS",
    "EXTRA_SPEAKERS",
    "default_speakers",
    "resolve_speakers",
    "SpeechCorpusOptions",
    "PlannedUtterance",
    "CorpusPlan",
    "split_speakers",
    "split_sentences",
    "estimate_seconds",
    "plan_speech_corpus",
    "BuildSummary",
    "SpeechCorpusBuilder",
    "build_speech_corpus",
    "RealItem",
    "real_recordings",
    "speech_command",
]
