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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import click
import numpy as np

from ..errors import AudioEmbedError
from ..audio import AudioError, load, probe

__all__ = [
    "SAMPLE_RATE",
    "MANIFEST_COLUMNS",
    "CorpusError",
    "Prompt",
    "read_prompts",
    "normalize_transcript",
    "Engine",
    "EspeakEngine",
    "FliteEngine",
    "FestivalEngine",
    "default_engines",
    "Speaker",
    "DEFAULT_SPEAKERS",
    "default_speakers",
    "resolve_speakers",
    "SpeechCorpusOptions",
    "PlannedUtterance",
    "CorpusPlan",
    "plan_speech_corpus",
    "BuildSummary",
    "SpeechCorpusBuilder",
    "build_speech_corpus",
    "real_recordings",
    "speech_command",
]

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

#: loudness every utterance is brought to (RMS, before the peak guard)
_TARGET_RMS = 10 ** (-23 / 20)
_PEAK = 0.95
#: reverberant tail kept after the end of the dry signal
_TAIL_SECONDS = 0.2
_SUBPROCESS_TIMEOUT = 120.0

Warn = Callable[[str], None]


class CorpusError(AudioEmbedError):
    """The corpus cannot be built as asked; the message says why and what to do."""


def _default_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends on the seed and the labels only (never on call order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _stable_int(*parts)])


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


_FESTIVAL_LINE = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
    """Prompts of a festival-format file (``( id "Text." )`` per line) or a plain text file.

    The format is recognised from the first non-blank, non-``;`` line: ``(`` means
    festival format; otherwise every non-blank line is a sentence whose id is
    ``line<NNNNN>`` (its line number). Blank lines and, in festival files, lines starting
    with ``;`` are ignored.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: prompts file not found (the ARCTIC prompts are in ../shared/data/text/cmuarctic.data)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read prompts ({getattr(err, 'strerror', None) or err})") from None
    first = next((line.strip() for line in lines if line.strip() and not line.strip().startswith(";")), "")
    prompts: list[Prompt] = []
    if first.startswith("("):
        for lineno, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith(";"):
                continue
            match = _FESTIVAL_LINE.match(stripped)
            if not match:
                raise CorpusError(f'{path}: line {lineno}: expected ( id "text" ), got {stripped[:60]!r}')
            text = re.sub(r"\\(.)", r"\1", match.group(2))
            prompts.append(Prompt(match.group(1), " ".join(text.split())))
    else:
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                prompts.append(Prompt(f"line{lineno:05d}", " ".join(line.split())))
    if not prompts:
        raise CorpusError(f"{path}: no prompts")
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.id in seen:
            raise CorpusError(f"{path}: duplicate prompt id {prompt.id!r}")
        if "/" in prompt.id or prompt.id in (".", ".."):
            raise CorpusError(f"{path}: prompt id {prompt.id!r} cannot be a file name")
        seen.add(prompt.id)
    return prompts


#: abbreviations whose spoken form every engine agrees on
_ABBREVIATIONS = {"mr.": "MISTER", "mrs.": "MISSUS", "dr.": "DOCTOR", "etc.": "ET CETERA"}
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def normalize_transcript(text: str) -> str | None:
    """The ASR reference of ``text``: upper-case words, inner apostrophes kept.

    Punctuation goes, hyphens and dashes separate words, a few abbreviations are spelt out
    (Mr., Mrs., Dr., etc.). Returns None when the text has something an engine may read in
    more than one way (digits, symbols, other scripts): such prompts are left out of the
    corpus rather than given a transcript that may not match the audio.
    """
    words: list[str] = []
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    for token in text.split():
        lowered = token.lower().strip("\"()[]")
        if lowered in _ABBREVIATIONS:
            words.append(_ABBREVIATIONS[lowered])
            continue
        token = re.sub(r"[-\u2013\u2014]", " ", token)
        token = re.sub(r"[.,;:!?\"()\[\]]", " ", token)
        for word in token.split():
            word = word.strip("'")
            if not word:
                continue
            if not _WORD.fullmatch(word):
                return None
            words.append(word.upper())
    return " ".join(words) or None


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class SynthRequest:
    text: str
    voice: str
    rate: float
    pitch: float
    wav_path: Path


class Engine:
    """One speech synthesiser. Subclasses run a program; tests may plug in a fake one.

    ``synthesize`` writes a WAV file (any sample rate) for one sentence; ``rate`` and
    ``pitch`` are factors around the voice's default and are only passed where
    ``controls`` says the engine honours them for that voice. Engines with a slow start
    (festival) set ``batch_size`` and override ``synthesize_batch`` to make several files
    per process; the result must not depend on how requests are batched.
    """

    #: engine name used in speaker specs (``name:voice``)
    name = ""
    #: Debian package that provides the engine
    package = ""
    #: program looked up on PATH to tell whether the engine is installed
    program = ""
    #: requests handed to one ``synthesize_batch`` call
    batch_size = 1

    def installed(self) -> bool:
        return bool(self.program) and shutil.which(self.program) is not None

    def voice_problem(self, voice: str) -> str | None:
        """Why ``voice`` cannot be used (with the package to install), or None when it can."""
        return None

    def controls(self, voice: str) -> tuple[bool, bool]:
        """Whether (rate, pitch) can be changed for ``voice``."""
        return True, True

    def synthesize(self, text: str, voice: str, rate: float, pitch: float, wav_path: Path) -> None:
        raise NotImplementedError

    def synthesize_batch(self, requests: Sequence[SynthRequest]) -> dict[int, str]:
        """Make every request's file; returns the reason of each failure by request index."""
        errors: dict[int, str] = {}
        for i, req in enumerate(requests):
            try:
                self.synthesize(req.text, req.voice, req.rate, req.pitch, req.wav_path)
            except Exception as err:  # reported per utterance by the builder
                errors[i] = str(err) or type(err).__name__
        return errors

    # helpers for subprocess engines
    def _run(self, argv: list[str], *, stdin_text: str | None = None) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(
                argv,
                input=stdin_text,
                capture_output=True,
                text=True,
                timeout=_SUBPROCESS_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{argv[0]} did not finish within {_SUBPROCESS_TIMEOUT:g} s") from None
        except OSError as err:
            raise RuntimeError(f"cannot run {argv[0]}: {err.strerror or err}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise RuntimeError(f"{argv[0]} exited with {done.returncode}: {detail[-1] if detail else 'no message'}")
        return done

    @staticmethod
    def _check_output(wav_path: Path, program: str, done: subprocess.CompletedProcess) -> None:
        if not wav_path.is_file() or wav_path.stat().st_size <= 44:
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise RuntimeError(f"{program} wrote no audio{': ' + detail[-1] if detail else ''}")


def _tool_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


class EspeakEngine(Engine):
    """``espeak-ng -v LANG+VARIANT -s WPM -p PITCH``: formant synthesis, about 100 variants."""

    name = "espeak-ng"
    package = "espeak-ng"
    program = "espeak-ng"
    #: espeak-ng's defaults: 175 words per minute, pitch 50 (of 0-99)
    default_wpm = 175
    default_pitch = 50

    def __init__(self) -> None:
        self._catalog: tuple[frozenset[str], frozenset[str]] | None = None
        self._renders: dict[str, bytes] = {}

    def _render_probe(self, voice: str) -> bytes:
        if voice not in self._renders:
            try:
                done = subprocess.run([self.program, "-v", voice, "--stdout", "--stdin"], input=b"Testing one two.",
                                      capture_output=True, timeout=60, check=False)
                self._renders[voice] = done.stdout if done.returncode == 0 else b""
            except (OSError, subprocess.TimeoutExpired):
                self._renders[voice] = b""
        return self._renders[voice]

    def _voices(self) -> tuple[frozenset[str], frozenset[str]]:
        if self._catalog is None:
            languages: set[str] = set()
            for line in _tool_output([self.program, "--voices"]).splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 5:
                    languages.update({fields[1], fields[3], fields[4].rsplit("/", 1)[-1].lower()})
            variants: set[str] = set()
            for line in _tool_output([self.program, "--voices=variant"]).splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 5:
                    variants.update({fields[3], fields[4].rsplit("/", 1)[-1]})
            self._catalog = (frozenset(languages), frozenset(variants))
        return self._catalog

    def voice_problem(self, voice: str) -> str | None:
        language, _, variant = voice.partition("+")
        languages, variants = self._voices()
        if not languages:  # cannot list voices: let synthesis tell
            return None
        if language not in languages and language.lower() not in languages:
            return f"espeak-ng has no voice {language!r} (see `espeak-ng --voices`)"
        if variant and variant not in variants:
            return f"espeak-ng has no variant {variant!r} (see `espeak-ng --voices=variant`)"
        if variant:
            # espeak-ng silently drops the variant after some language aliases (en-gb+f1
            # sounds like en): check that it changes the sound
            with_variant, without = self._render_probe(voice), self._render_probe(language)
            if with_variant and with_variant == without:
                return (f"espeak-ng ignores the variant in {voice!r} (it sounds like {language!r}); "
                        "put a voice file name before '+', e.g. 'en' or 'en-us'")
        return None

    def synthesize(self, text, voice, rate, pitch, wav_path):
        wpm = int(round(self.default_wpm * rate))
        level = min(99, max(0, int(round(self.default_pitch * pitch))))
        argv = [self.program, "-v", voice, "-s", str(wpm), "-p", str(level), "-w", str(wav_path), "--stdin"]
        done = self._run(argv, stdin_text=text)
        self._check_output(wav_path, self.program, done)


class FliteEngine(Engine):
    """``flite -voice NAME``: CMU Flite voices kal (8 kHz), kal16, awb, rms, slt."""

    name = "flite"
    package = "flite"
    program = "flite"
    #: nominal mean f0 (Hz) the pitch factor scales; rms ignores int_f0_target_mean
    nominal_f0 = {"kal": 95.0, "kal16": 95.0, "awb": 125.0, "slt": 170.0}

    def __init__(self) -> None:
        self._listed: frozenset[str] | None = None

    def _voices(self) -> frozenset[str]:
        if self._listed is None:
            out = _tool_output([self.program, "-lv"])
            self._listed = frozenset(out.split(":", 1)[-1].split()) if ":" in out else frozenset()
        return self._listed

    def voice_problem(self, voice: str) -> str | None:
        voices = self._voices()
        if voices and voice not in voices:
            return f"flite has no voice {voice!r} (installed: {', '.join(sorted(voices))})"
        return None

    def controls(self, voice: str) -> tuple[bool, bool]:
        return True, voice in self.nominal_f0

    def synthesize(self, text, voice, rate, pitch, wav_path):
        argv = [self.program, "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.4f}"]
        if voice in self.nominal_f0 and pitch != 1.0:
            argv += ["--setf", f"int_f0_target_mean={self.nominal_f0[voice] * pitch:.2f}"]
        argv += ["-t", text, "-o", str(wav_path)]
        done = self._run(argv)
        self._check_output(wav_path, self.program, done)


class FestivalEngine(Engine):
    """Festival with the Debian festvox voices (diphone and HTS).

    One ``festival --pipe`` process makes a batch of files (starting festival and loading
    a voice costs more than synthesising a sentence); each sentence re-selects its voice
    and sets its own rate and pitch, so a file is byte-identical to what ``text2wave``
    makes for it alone.
    """

    name = "festival"
    package = "festival"
    program = "festival"
    batch_size = 16
    #: voice -> Debian package that provides it
    voice_packages = {
        "kal_diphone": "festvox-kallpc16k",
        "ked_diphone": "festvox-kdlpc16k",
        "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
        "rab_diphone": "festvox-rablpc16k",
        "don_diphone": "festvox-don",
    }
    #: diphone voices: f0 mean/std of their linear-regression intonation model
    diphone_f0 = {"kal_diphone": (105.0, 14.0), "ked_diphone": (105.0, 15.0), "rab_diphone": (105.0, 14.0)}

    def __init__(self) -> None:
        self._listed: frozenset[str] | None = None

    def _voices(self) -> frozenset[str]:
        if self._listed is None:
            festival = shutil.which("festival")
            names: frozenset[str] = frozenset()
            if festival:
                try:
                    done = subprocess.run([festival, "--pipe"], input="(print (voice.list))\n",
                                          capture_output=True, text=True, timeout=60, check=False)
                    match = re.search(r"\(([^()]*)\)", done.stdout)
                    names = frozenset(match.group(1).split()) if match else frozenset()
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._listed = names
        return self._listed

    def voice_problem(self, voice: str) -> str | None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", voice):
            return f"festival voice names are letters, digits and '_', got {voice!r}"
        if voice in self._voices():
            return None
        package = self.voice_packages.get(voice)
        hint = f"apt-get install -y {package}" if package else "install the festvox package that provides it"
        return f"festival voice {voice!r} is not installed; install it with: {hint}"

    def controls(self, voice: str) -> tuple[bool, bool]:
        return True, voice in self.diphone_f0

    def _setup(self, voice: str, rate: float, pitch: float) -> str:
        if voice.endswith("_hts"):
            return f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f}))))'
        setup = f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})"
        if voice in self.diphone_f0:
            mean, std = self.diphone_f0[voice]
            setup += (f" (set! int_lr_params '((target_f0_mean {mean * pitch:.2f}) (target_f0_std {std * pitch:.2f})"
                      " (model_f0_mean 170) (model_f0_std 34)))")
        return setup

    @staticmethod
    def _string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def synthesize(self, text, voice, rate, pitch, wav_path):
        errors = self.synthesize_batch([SynthRequest(text, voice, rate, pitch, Path(wav_path))])
        if errors:
            raise RuntimeError(errors[0])

    def synthesize_batch(self, requests):
        script = []
        for req in requests:
            if not re.fullmatch(r"[A-Za-z0-9_]+", req.voice):
                raise RuntimeError(f"bad festival voice name {req.voice!r}")
            script.append(f"(voice_{req.voice})")
            script.append(f"(begin {self._setup(req.voice, req.rate, req.pitch)})")
            text = " ".join(req.text.split())
            script.append(f"(utt.save.wave (utt.synth (Utterance Text {self._string(text)})) "
                          f"{self._string(str(req.wav_path))} 'riff)")
        try:
            done = self._run([self.program, "--pipe"], stdin_text="\n".join(script) + "\n")
            detail = [line for line in (done.stderr + done.stdout).splitlines() if "ERROR" in line]
            reason = f"festival wrote no audio{': ' + detail[-1].strip() if detail else ''}"
        except RuntimeError as err:
            reason = str(err)
        errors = {}
        for i, req in enumerate(requests):
            if not req.wav_path.is_file() or req.wav_path.stat().st_size <= 44:
                errors[i] = reason
        return errors


def default_engines() -> dict[str, Engine]:
    """The built-in engines by name (whether or not they are installed)."""
    return {engine.name: engine for engine in (EspeakEngine(), FliteEngine(), FestivalEngine())}


# --------------------------------------------------------------------------- speakers


@dataclass(frozen=True)
class Speaker:
    engine: str
    voice: str
    #: voice group: speakers of one group (same person or timbre) share a split
    group: str

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"

    @property
    def slug(self) -> str:
        """File-system name: ``engine_voice`` with anything odd replaced by ``-``."""
        return re.sub(r"[^A-Za-z0-9+._-]", "-", f"{self.engine}_{self.voice}")


#: who is who across engines (voice -> group); others are their own group
_PERSONS = {
    ("flite", "kal"): "kal",
    ("flite", "kal16"): "kal",
    ("festival", "kal_diphone"): "kal",
    ("flite", "slt"): "slt",
    ("festival", "cmu_us_slt_arctic_hts"): "slt",
    ("festival", "ked_diphone"): "ked",
    ("flite", "awb"): "awb",
    ("flite", "rms"): "rms",
}


def voice_group(engine: str, voice: str) -> str:
    """The voice group of a speaker: the person (kal, slt, ...) or the espeak-ng variant."""
    if (engine, voice) in _PERSONS:
        return _PERSONS[(engine, voice)]
    if engine == "espeak-ng":
        language, _, variant = voice.partition("+")
        return f"espeak-ng+{variant or 'default'}"
    return f"{engine}:{voice}"


def _speaker(spec: str) -> Speaker:
    engine, sep, voice = spec.strip().partition(":")
    if not sep or not engine or not voice:
        raise CorpusError(f"speaker {spec!r}: expected ENGINE:VOICE, e.g. espeak-ng:en-us+f3 or flite:slt")
    return Speaker(engine, voice, voice_group(engine, voice))


_ESPEAK_CORE = (
    "en-us+m1", "en+f1", "en-gb-scotland+m2", "en-us+f2", "en-029+m3", "en-gb-x-rp+f3",
    "en-us-nyc+m4", "en+f4", "en-gb-x-gbclan+m5", "en-us+f5", "en-gb-x-gbcwmd+m6", "en-us+m7",
    "en+m8", "en-us+Annie",
)
_FLITE_CORE = ("kal16", "awb", "rms", "slt")
_FESTIVAL_CORE = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
#: more espeak-ng voices (one new variant each) for --speakers beyond the default set
_ESPEAK_EXTRA = (
    "en-us+steph", "en+Andy", "en-us+linda", "en-gb-scotland+robert", "en-us+Alicia",
    "en-029+max", "en-us+belinda", "en-gb-x-rp+edward", "en-us+Andrea", "en-us-nyc+paul",
    "en+quincy", "en-us+shelby", "en+travis", "en-us+victor", "en+zac", "en-us+john",
    "en-us+david", "en+benjamin", "en-us+klatt2", "en+klatt4", "en-us+grandma", "en+grandpa",
    "en-us+Michael", "en+norbert", "en-us+Mike", "en+Lee", "en-us+Gene", "en+caleb",
)


def _interleave(*lists: Sequence[str]) -> list[str]:
    out: list[str] = []
    for i in range(max(map(len, lists))):
        out.extend(lst[i] for lst in lists if i < len(lst))
    return out


#: the default speakers, interleaved across engines so that the first N stay varied (21)
DEFAULT_SPEAKERS: tuple[str, ...] = tuple(
    _interleave(
        [f"espeak-ng:{v}" for v in _ESPEAK_CORE],
        [f"flite:{v}" for v in _FLITE_CORE],
        [f"festival:{v}" for v in _FESTIVAL_CORE],
    )
)
EXTRA_SPEAKERS: tuple[str, ...] = tuple(f"espeak-ng:{v}" for v in _ESPEAK_EXTRA)


def _install_hint(engines: Iterable[Engine]) -> str:
    packages = []
    for engine in engines:
        packages.append(engine.package)
        if isinstance(engine, FestivalEngine):
            packages.extend(sorted(set(engine.voice_packages.values()) - {"festvox-rablpc16k", "festvox-don"}))
    return "apt-get install -y " + " ".join(packages)


def default_speakers(
    count: int | None = None,
    engines: Mapping[str, Engine] | None = None,
    warn: Warn | None = None,
) -> list[Speaker]:
    """The default speakers whose engine and voice are installed (the first ``count``).

    Missing engines and voices are skipped with one warning naming the apt command; with
    nothing installed at all this is a :class:`CorpusError`. ``count`` beyond the default
    set adds more espeak-ng voices (each with a new variant).
    """
    engines = default_engines() if engines is None else engines
    warn = warn or _default_warn
    usable: list[Speaker] = []
    missing_engines: list[str] = []
    missing_voices: list[str] = []
    for spec in DEFAULT_SPEAKERS + (EXTRA_SPEAKERS if count is not None else ()):
        speaker = _speaker(spec)
        engine = engines.get(speaker.engine)
        if engine is None:
            continue
        if not engine.installed():
            if speaker.engine not in missing_engines:
                missing_engines.append(speaker.engine)
            continue
        problem = engine.voice_problem(speaker.voice)
        if problem:
            missing_voices.append(problem)
            continue
        usable.append(speaker)
    if missing_engines:
        absent = [engines[name] for name in missing_engines]
        warn(
            f"speech engine(s) not installed, their speakers are skipped: {', '.join(missing_engines)}; "
            f"for all default speakers run: {_install_hint(absent)}"
        )
    for problem in dict.fromkeys(missing_voices):
        warn(f"default speaker skipped: {problem}")
    if not usable:
        raise CorpusError(
            "no speech synthesis engine is installed; install at least espeak-ng "
            f"(apt-get install -y espeak-ng), or all of them: {_install_hint(default_engines().values())}"
        )
    if count is not None:
        if count < 1:
            raise CorpusError(f"--speakers must be >= 1, got {count}")
        if count > len(usable):
            warn(f"only {len(usable)} speakers are available, {count} were asked for")
        usable = usable[:count]
    return usable


def resolve_speakers(specs: Sequence[str], engines: Mapping[str, Engine] | None = None) -> list[Speaker]:
    """Explicit ``engine:voice`` specs, checked: a missing engine or voice is an error naming the package."""
    engines = default_engines() if engines is None else engines
    speakers: list[Speaker] = []
    problems: list[str] = []
    for spec in specs:
        speaker = _speaker(spec)
        engine = engines.get(speaker.engine)
        if engine is None:
            raise CorpusError(f"speaker {spec!r}: unknown engine {speaker.engine!r} (known: {', '.join(sorted(engines))})")
        if not engine.installed():
            problems.append(
                f"engine {engine.name!r} (speaker {speaker.name}) is not installed; install it with: "
                f"apt-get install -y {engine.package}"
            )
            continue
        problem = engine.voice_problem(speaker.voice)
        if problem:
            problems.append(f"speaker {speaker.name}: {problem}")
            continue
        if speaker in speakers:
            raise CorpusError(f"speaker {speaker.name} is listed twice")
        speakers.append(speaker)
    if problems:
        raise CorpusError("; ".join(dict.fromkeys(problems)))
    if not speakers:
        raise CorpusError("no speakers given")
    return speakers


# --------------------------------------------------------------------------- options and plan


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


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    #: audio path relative to the output folder (POSIX)
    path: str
    prompt: Prompt
    transcript: str
    speaker: Speaker
    split: str
    sid_split: str
    rate: float
    pitch: float
    snr_db: float | None
    rt60: float | None


@dataclass
class CorpusPlan:
    utterances: list[PlannedUtterance]
    #: split of each speaker name and of each sentence id
    speaker_splits: dict[str, str]
    sentence_splits: dict[str, str]
    #: prompts left out because their text cannot be normalised
    skipped_prompts: list[str] = field(default_factory=list)


_SPLITS = ("train", "dev", "test")


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, dev, test) sizes: rounded fractions, at least one each where possible.

    Train gets one first, then test, then dev; a split with fraction 0 stays empty.
    """
    want = [fractions[0] * n, fractions[1] * n, fractions[2] * n]
    test = int(round(want[2]))
    dev = int(round(want[1]))
    if fractions[2] > 0 and n >= 2:
        test = max(test, 1)
    if fractions[1] > 0 and n >= 3:
        dev = max(dev, 1)
    test = min(test, max(n - 1, 0))
    dev = min(dev, max(n - 1 - test, 0))
    return n - dev - test, dev, test


def _interleave_by_key(items: list, key: Callable) -> list:
    buckets: dict = {}
    for item in items:
        buckets.setdefault(key(item), []).append(item)
    return _interleave(*buckets.values()) if buckets else []


def split_speakers(speakers: Sequence[Speaker], fractions, seed: int) -> dict[str, str]:
    """Speaker name -> split, by voice group (see the module docstring for the rule)."""
    groups: dict[str, list[Speaker]] = {}
    for speaker in sorted(speakers, key=lambda s: s.name):
        groups.setdefault(speaker.group, []).append(speaker)
    names = sorted(groups)
    order = [names[i] for i in _rng(seed, "speaker-split").permutation(len(names))]
    order = _interleave_by_key(order, lambda g: groups[g][0].engine)
    n_train, n_dev, n_test = _split_counts(len(order), fractions)
    split_of_group = {}
    for i, group in enumerate(order):
        split_of_group[group] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return {s.name: split_of_group[s.group] for s in speakers}


def split_sentences(prompt_ids: Sequence[str], fractions, seed: int) -> dict[str, str]:
    """Sentence id -> split: a seeded shuffle cut by the fractions (test first, then dev)."""
    ids = sorted(prompt_ids)
    order = [ids[i] for i in _rng(seed, "sentence-split").permutation(len(ids))]
    n_train, n_dev, n_test = _split_counts(len(order), fractions)
    return {pid: ("test" if i < n_test else "dev" if i < n_test + n_dev else "train") for i, pid in enumerate(order)}


def estimate_seconds(text: str) -> float:
    """Rough speaking time of ``text`` at rate 1 (fitted on 6000 default-corpus utterances)."""
    return 0.44 + 0.051 * len(text)


def plan_speech_corpus(
    prompts: Sequence[Prompt],
    speakers: Sequence[Speaker],
    seed: int = 0,
    options: SpeechCorpusOptions | None = None,
    controls: Callable[[Speaker], tuple[bool, bool]] | None = None,
    warn: Warn | None = None,
) -> CorpusPlan:
    """Every utterance to synthesise, with its split and random settings; no engine is run.

    ``controls(speaker)`` says whether rate and pitch can be changed for a speaker (a
    factor that cannot is recorded as 1). The plan depends only on its arguments.
    """
    options = (options or SpeechCorpusOptions()).checked()
    warn = warn or _default_warn
    if not speakers:
        raise CorpusError("no speakers")
    names = [s.name for s in speakers]
    if len(set(names)) != len(names):
        raise CorpusError("a speaker is listed twice")
    # prompts: usable ones, a seeded choice of `sentences`
    usable: dict[str, tuple[Prompt, str]] = {}
    skipped: list[str] = []
    for prompt in prompts:
        transcript = normalize_transcript(prompt.text)
        if transcript is None:
            skipped.append(prompt.id)
        else:
            usable[prompt.id] = (prompt, transcript)
    if skipped:
        warn(
            f"{len(skipped)} prompt(s) left out: digits or symbols can be read in more than one way, so no exact "
            f"transcript exists (e.g. {', '.join(skipped[:3])})"
        )
    if not usable:
        raise CorpusError("no usable prompt (every prompt has digits or symbols)")
    ids = sorted(usable)
    if options.sentences is not None and options.sentences < len(ids):
        chosen = _rng(seed, "sentences").permutation(len(ids))[: options.sentences]
        ids = sorted(ids[i] for i in chosen)
    sentence_splits = split_sentences(ids, options.sentence_split, seed)
    speaker_splits = split_speakers(speakers, options.speaker_split, seed)
    for split in _SPLITS:
        has_speakers = any(v == split for v in speaker_splits.values())
        has_sentences = any(v == split for v in sentence_splits.values())
        if has_speakers != has_sentences:
            warn(f"split {split!r} has {'no sentences' if has_speakers else 'no speakers'}: it stays empty")
    # candidate sentences per speaker: its split's sentences, walked from its own offset
    by_split = {split: [] for split in _SPLITS}
    for pid in ids:
        by_split[sentence_splits[pid]].append(pid)
    for split in _SPLITS:
        pool = by_split[split]
        by_split[split] = [pool[i] for i in _rng(seed, "sentence-order", split).permutation(len(pool))]
    ordered = sorted(speakers, key=lambda s: s.name)
    candidates: dict[str, list[str]] = {}
    for split in _SPLITS:
        members = [s for s in ordered if speaker_splits[s.name] == split]
        pool = by_split[split]
        for j, speaker in enumerate(members):
            start = (j * len(pool)) // max(len(members), 1)
            candidates[speaker.name] = pool[start:] + pool[:start]
    budget = options.utterances
    if options.hours is not None:
        mean = float(np.mean([estimate_seconds(usable[pid][0].text) for pid in ids]))
        budget = max(1, int(round(options.hours * 3600.0 / mean)))
    total = sum(len(c) for c in candidates.values())
    if budget is None or budget >= total:
        picked = {name: list(c) for name, c in candidates.items()}
    else:
        # speakers take turns (in a seeded order) so that each gets an equal share
        turn = [ordered[i].name for i in _rng(seed, "turns").permutation(len(ordered))]
        picked = {name: [] for name in candidates}
        taken = 0
        depth = 0
        while taken < budget:
            for name in turn:
                if depth < len(candidates[name]) and taken < budget:
                    picked[name].append(candidates[name][depth])
                    taken += 1
            depth += 1
    utterances: list[PlannedUtterance] = []
    for speaker in ordered:
        chosen = sorted(picked[speaker.name])
        sid = _sid_splits(chosen, seed, speaker.name)
        can_rate, can_pitch = controls(speaker) if controls else (True, True)
        for pid in chosen:
            prompt, transcript = usable[pid]
            uid = f"{speaker.slug}/{pid}"
            r = _rng(seed, "params", uid)
            rate = round(float(r.uniform(*options.rate_range)), 3)
            pitch = round(float(r.uniform(*options.pitch_range)), 3)
            noisy = r.random() < options.noise_prob
            snr = round(float(r.uniform(*options.snr_range)), 1)
            reverberant = r.random() < options.reverb_prob
            rt60 = round(float(r.uniform(*options.rt60_range)), 2)
            utterances.append(
                PlannedUtterance(
                    id=uid,
                    path=f"wav/{uid}.wav",
                    prompt=prompt,
                    transcript=transcript,
                    speaker=speaker,
                    split=speaker_splits[speaker.name],
                    sid_split=sid[pid],
                    rate=rate if can_rate else 1.0,
                    pitch=pitch if can_pitch else 1.0,
                    snr_db=snr if noisy else None,
                    rt60=rt60 if reverberant else None,
                )
            )
    utterances.sort(key=lambda u: u.id)
    if not utterances:
        raise CorpusError("the plan has no utterance (too few sentences or speakers for the splits)")
    return CorpusPlan(utterances, speaker_splits, sentence_splits, skipped)


def _sid_splits(sentence_ids: Sequence[str], seed: int, speaker: str) -> dict[str, str]:
    """A speaker's own 80/10/10 split of its utterances, for closed-set speaker ID."""
    order = [sentence_ids[i] for i in _rng(seed, "sid", speaker).permutation(len(sentence_ids))]
    n_train, n_dev, n_test = _split_counts(len(order), (0.8, 0.1, 0.1))
    return {pid: ("test" if i < n_test else "dev" if i < n_test + n_dev else "train") for i, pid in enumerate(order)}


# --------------------------------------------------------------------------- rendering


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a random 1/f^alpha spectrum (alpha in [0, 2]: white to brown)."""
    alpha = rng.uniform(0.0, 2.0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    shaped = np.fft.irfft(spectrum / freqs ** (alpha / 2.0), n=n)
    return shaped / (np.sqrt(np.mean(shaped**2)) + 1e-12)


def _room_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A direct path plus exponentially decaying noise (60 dB down after ``rt60`` s)."""
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)
    # walls absorb highs: a gentle low-pass on the tail (2nd-order Butterworth magnitude)
    cutoff = rng.uniform(3000.0, 7000.0)
    freqs = np.fft.rfftfreq(length, d=1.0 / SAMPLE_RATE)
    tail = np.fft.irfft(np.fft.rfft(tail) / np.sqrt(1.0 + (freqs / cutoff) ** 4), n=length)
    delay = int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)
    tail[:delay] = 0.0
    drr_db = rng.uniform(0.0, 8.0)  # direct-to-reverberant energy ratio
    tail *= np.sqrt(10 ** (-drr_db / 10.0) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail


def _postprocess(wave: np.ndarray, utt: PlannedUtterance, seed: int) -> np.ndarray:
    x = wave.astype(np.float64)
    if utt.rt60 is not None:
        ir = _room_response(utt.rt60, _rng(seed, "room", utt.id))
        n = len(x) + len(ir) - 1
        size = 1 << (n - 1).bit_length()
        wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), n=size)
        x = wet[: min(n, len(x) + int(_TAIL_SECONDS * SAMPLE_RATE))]
    if utt.snr_db is not None and len(x):
        power = np.mean(x**2)
        noise = _coloured_noise(len(x), _rng(seed, "noise", utt.id))
        x = x + noise * np.sqrt(power / 10 ** (utt.snr_db / 10.0))
    rms = np.sqrt(np.mean(x**2)) if len(x) else 0.0
    if rms > 0:
        x = x * (_TARGET_RMS / rms)
        peak = np.max(np.abs(x))
        if peak > _PEAK:
            x = x * (_PEAK / peak)
    return x.astype(np.float32)


def _write_wav(path: Path, wave: np.ndarray) -> None:
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


def _existing_seconds(path: Path) -> float | None:
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


def _render_batch(
    utts: Sequence[PlannedUtterance], engine: Engine, out_dir: Path, seed: int, overwrite: bool
) -> list[tuple[str, float | None, bool, str | None]]:
    """Make the files of ``utts`` (one engine); ``(id, seconds, synthesised?, error)`` each.

    Files that exist and are complete are kept unless ``overwrite``.
    """
    results: list[tuple[str, float | None, bool, str | None]] = []
    todo: list[PlannedUtterance] = []
    for utt in utts:
        seconds = None if overwrite else _existing_seconds(out_dir / utt.path)
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
                _write_wav(out_dir / utt.path, wave)
            except Exception as err:
                results.append((utt.id, None, False, str(err) or type(err).__name__))
            else:
                results.append((utt.id, len(wave) / SAMPLE_RATE, True, None))
    return results


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(utt: PlannedUtterance, seconds: float) -> dict[str, str]:
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


def _write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- real recordings


@dataclass(frozen=True)
class RealItem:
    source: str
    #: source file (absolute)
    src: str
    #: file name below real/<source>/ (without suffix)
    name: str
    transcript: str
    speaker: str


_DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def real_recordings(root: str | os.PathLike, warn: Warn | None = None) -> list[RealItem]:
    """The real recordings of ``root`` (the project's ../shared/data) for pre-training.

    FSDD's test takes (index 0-4) are left out: FSDD is an evaluation set and its test
    recordings must never be trained on. yesno and pocketsphinx are used whole.
    """
    warn = warn or _default_warn
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: real-recordings folder not found (expected ../shared/data)")
    items: list[RealItem] = []
    fsdd = root / "fsdd" / "labels.csv"
    if fsdd.is_file():
        with open(fsdd, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                try:
                    index = int(row["index"])
                except (KeyError, ValueError):
                    continue
                if index < 5 or row.get("split", "").strip().lower() == "test":
                    continue
                digit = row.get("digit", "").strip()
                transcript = _DIGITS[int(digit)] if digit.isdigit() and len(digit) == 1 else ""
                src = fsdd.parent / row["path"]
                items.append(RealItem("fsdd", str(src), Path(row["path"]).stem, transcript,
                                      f"fsdd:{row.get('speaker', '').strip()}" if row.get("speaker") else ""))
    else:
        warn(f"{fsdd} not found; FSDD skipped")
    yesno = root / "yesno" / "labels.csv"
    if yesno.is_file():
        with open(yesno, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                src = yesno.parent / row["path"]
                items.append(RealItem("yesno", str(src), Path(row["path"]).stem,
                                      " ".join(row.get("transcript", "").upper().split()), "yesno:speaker"))
    else:
        warn(f"{yesno} not found; yesno skipped")
    sphinx = root / "pocketsphinx"
    found_sphinx = False
    for folder, labels in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = sphinx / folder / labels
        if not path.is_file():
            continue
        found_sphinx = True
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
            if not match:
                continue
            fileid = match.group(2).strip()
            src = sphinx / folder / f"{fileid}.wav"
            transcript = normalize_transcript(match.group(1)) or ""
            items.append(RealItem("pocketsphinx", str(src), f"{folder}-{fileid}", transcript, ""))
    if not found_sphinx:
        warn(f"{sphinx}: no pocketsphinx transcriptions found; skipped")
    return items


def _render_real(item: RealItem, out_dir: Path, overwrite: bool) -> tuple[str, float]:
    rel = f"real/{item.source}/{item.name}.wav"
    target = out_dir / rel
    if not overwrite:
        seconds = _existing_seconds(target)
        if seconds is not None:
            return rel, seconds
    try:
        wave = load(item.src, SAMPLE_RATE)
    except AudioError as err:
        raise RuntimeError(str(err)) from None
    _write_wav(target, wave)
    return rel, len(wave) / SAMPLE_RATE


def _real_row(item: RealItem, rel: str, seconds: float) -> dict[str, str]:
    return {
        "path": rel,
        "id": rel[: -len(".wav")],
        "transcript": item.transcript,
        "text": "",
        "speaker": item.speaker,
        "split": "pretrain",
        "domain": DOMAIN,
        "seconds": f"{seconds:.3f}",
        "source": item.source,
    }


# --------------------------------------------------------------------------- the builder


@dataclass
class BuildSummary:
    manifest: Path
    pretrain_manifest: Path
    utterances: int
    seconds: float
    #: files synthesised in this run (the rest existed)
    synthesised: int
    #: speakers per split
    speakers: dict[str, list[str]]
    #: sentences per split
    sentences: dict[str, int]
    utterances_per_split: dict[str, int]
    real: int
    real_seconds: float
    #: id -> reason for every utterance that could not be made
    failed: dict[str, str]
    wall_seconds: float

    def lines(self) -> list[str]:
        out = [
            f"{self.utterances} utterances, {self.seconds / 3600:.2f} h of audio "
            f"({self.synthesised} synthesised in this run) in {self.wall_seconds:.1f} s",
        ]
        for split in _SPLITS:
            out.append(
                f"  {split:<5}: {self.utterances_per_split.get(split, 0)} utterances, "
                f"{len(self.speakers.get(split, []))} speakers, {self.sentences.get(split, 0)} sentences"
            )
        if self.real:
            out.append(f"  real recordings for pre-training: {self.real} ({self.real_seconds / 3600:.2f} h)")
        if self.failed:
            out.append(f"  FAILED: {len(self.failed)} (rerun to retry)")
        out.append(f"manifest: {self.manifest}")
        out.append(f"pre-training manifest: {self.pretrain_manifest}")
        return out


class SpeechCorpusBuilder:
    """Plans, synthesises and writes a speech corpus; :func:`build_speech_corpus` wraps it."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        prompts_path: str | os.PathLike,
        seed: int = 0,
        options: SpeechCorpusOptions | None = None,
        engines: Mapping[str, Engine] | None = None,
        warn: Warn | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.prompts_path = Path(prompts_path)
        self.seed = int(seed)
        self.options = (options or SpeechCorpusOptions()).checked()
        self.engines = dict(default_engines() if engines is None else engines)
        self.warn = warn or _default_warn

    def speakers(self) -> list[Speaker]:
        if self.options.speaker_list:
            return resolve_speakers(self.options.speaker_list, self.engines)
        return default_speakers(self.options.speakers, self.engines, self.warn)

    def plan(self) -> CorpusPlan:
        prompts = read_prompts(self.prompts_path)
        speakers = self.speakers()

        def controls(speaker: Speaker) -> tuple[bool, bool]:
            return self.engines[speaker.engine].controls(speaker.voice)

        return plan_speech_corpus(prompts, speakers, self.seed, self.options, controls, self.warn)

    def _check_settings(self) -> None:
        settings = self.options.audio_settings(self.seed)
        path = self.output_dir / SETTINGS_FILE
        if path.is_file() and not self.options.overwrite:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old is not None and old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise CorpusError(
                    f"{self.output_dir} was built with other audio settings ({', '.join(changed)} differ); "
                    "use a new output folder, the same settings, or overwrite (--overwrite) to re-synthesise"
                )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def run(self) -> BuildSummary:
        started = time.monotonic()
        plan = self.plan()
        real_items = real_recordings(self.options.real_dir, self.warn) if self.options.real_dir else []
        self._check_settings()
        jobs = self.options.jobs or os.cpu_count() or 1
        failed: dict[str, str] = {}
        seconds: dict[str, float] = {}
        synthesised = 0
        real_done: dict[int, tuple[str, float]] = {}
        progress = None
        if self.options.progress:
            from tqdm import tqdm

            progress = tqdm(total=len(plan.utterances) + len(real_items), unit="utt", desc="speech corpus",
                            dynamic_ncols=True)
        overwrite = self.options.overwrite
        # one task per batch of one engine's utterances; slow (batched) engines start first
        by_engine: dict[str, list[PlannedUtterance]] = {}
        for utt in plan.utterances:
            by_engine.setdefault(utt.speaker.engine, []).append(utt)
        batches: list[tuple[str, list[PlannedUtterance]]] = []
        for name, utts in by_engine.items():
            size = max(1, int(self.engines[name].batch_size))
            batches.extend((name, utts[i : i + size]) for i in range(0, len(utts), size))
        batches.sort(key=lambda b: -self.engines[b[0]].batch_size)

        def report(name: str, reason: str) -> None:
            failed[name] = reason
            (progress.write if progress else self.warn)(f"failed: {name}: {reason}")

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = {
                pool.submit(_render_batch, utts, self.engines[name], self.output_dir, self.seed, overwrite): ("tts", k)
                for k, (name, utts) in enumerate(batches)
            }
            futures.update({
                pool.submit(_render_real, item, self.output_dir, overwrite): ("real", i)
                for i, item in enumerate(real_items)
            })
            for future in as_completed(futures):
                kind, index = futures[future]
                if kind == "tts":
                    try:
                        results = future.result()
                    except Exception as err:  # a bug, not one bad sentence: fail the whole batch
                        results = [(u.id, None, False, str(err) or type(err).__name__) for u in batches[index][1]]
                    for uid, secs, made, error in results:
                        if error is not None:
                            report(uid, error)
                        else:
                            seconds[uid] = secs
                            synthesised += made
                    step = len(results)
                else:
                    try:
                        real_done[index] = future.result()
                    except Exception as err:
                        report(real_items[index].src, str(err) or type(err).__name__)
                    step = 1
                if progress:
                    progress.update(step)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            if progress:
                progress.close()
        rows = [_row(utt, seconds[utt.id]) for utt in plan.utterances if utt.id in seconds]
        real_rows = [_real_row(real_items[i], *real_done[i]) for i in sorted(real_done)]
        real_rows.sort(key=lambda r: r["id"])
        manifest = self.output_dir / MANIFEST
        pretrain = self.output_dir / PRETRAIN_MANIFEST
        _write_manifest(manifest, rows)
        _write_manifest(pretrain, [r for r in rows if r["split"] == "train"] + real_rows)
        by_split: dict[str, list[str]] = {s: [] for s in _SPLITS}
        for name, split in sorted(plan.speaker_splits.items()):
            by_split[split].append(name)
        sentences = {s: sum(1 for v in plan.sentence_splits.values() if v == s) for s in _SPLITS}
        per_split = {s: sum(1 for r in rows if r["split"] == s) for s in _SPLITS}
        return BuildSummary(
            manifest=manifest,
            pretrain_manifest=pretrain,
            utterances=len(rows),
            seconds=float(sum(seconds.values())),
            synthesised=synthesised,
            speakers=by_split,
            sentences=sentences,
            utterances_per_split=per_split,
            real=len(real_rows),
            real_seconds=float(sum(float(r["seconds"]) for r in real_rows)),
            failed=failed,
            wall_seconds=time.monotonic() - started,
        )


def build_speech_corpus(
    output_dir: str | os.PathLike,
    *,
    prompts_path: str | os.PathLike,
    seed: int = 0,
    options: SpeechCorpusOptions | None = None,
    engines: Mapping[str, Engine] | None = None,
    warn: Warn | None = None,
) -> Path:
    """Build (or finish) a speech corpus in ``output_dir``; returns the path of ``manifest.csv``.

    ``options`` holds sizes, splits and augmentation (:class:`SpeechCorpusOptions`);
    ``engines`` replaces the built-in engines (e.g. a fake one in tests). Utterances that
    fail are reported through ``warn`` by id and left out of the manifest; use
    :class:`SpeechCorpusBuilder` to get them (and the other figures) back.
    """
    builder = SpeechCorpusBuilder(output_dir, prompts_path=prompts_path, seed=seed, options=options,
                                  engines=engines, warn=warn)
    return builder.run().manifest


# --------------------------------------------------------------------------- command line


def _floats(count: int):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            values = tuple(float(v) for v in value.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise click.BadParameter(f"expected {count} comma-separated numbers, got {value!r}")
        return values

    return parse


@click.command("speech", epilog="""\b
Examples:
  audioembed corpus speech -o corpora/speech --prompts cmuarctic.data
""")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Output folder (required; created; reruns resume).")
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False),
              help="Prompts file (required): festival format ( id \"text\" ), e.g. ../shared/data/text/cmuarctic.data, "
                   "or plain text, one sentence per line.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--sentences", type=int, default=None, help="Use this many prompts (a seeded choice) [default: all].")
@click.option("--speakers", type=int, default=None,
              help=f"Use the first N default speakers [default: all {len(DEFAULT_SPEAKERS)} that are installed]; "
                   "more than that adds espeak-ng voices.")
@click.option("--speaker", "speaker_list", multiple=True, metavar="ENGINE:VOICE",
              help="An explicit speaker, e.g. espeak-ng:en-us+f3, flite:slt, festival:kal_diphone (repeatable).")
@click.option("--utterances", type=int, default=None,
              help=f"At most this many utterances [default: {SpeechCorpusOptions.utterances}].")
@click.option("--hours", type=float, default=None, help="About this many hours of audio (instead of --utterances).")
@click.option("--all", "everything", is_flag=True, help="No cap: every speaker reads every sentence of its split.")
@click.option("--speaker-split", callback=_floats(3), metavar="TRAIN,DEV,TEST", default="0.7,0.15,0.15", show_default=True,
              help="TRAIN,DEV,TEST fractions of the voice groups.")
@click.option("--sentence-split", callback=_floats(3), metavar="TRAIN,DEV,TEST", default="0.8,0.1,0.1", show_default=True,
              help="TRAIN,DEV,TEST fractions of the sentences.")
@click.option("--rate", "rate_range", callback=_floats(2), metavar="MIN,MAX", default="0.85,1.15", show_default=True,
              help="MIN,MAX speaking-rate factor, drawn per utterance.")
@click.option("--pitch", "pitch_range", callback=_floats(2), metavar="MIN,MAX", default="0.85,1.15", show_default=True,
              help="MIN,MAX pitch factor, drawn per utterance (where the voice allows it).")
@click.option("--noise-prob", type=float, default=0.0, show_default=True, help="Share of utterances with additive noise.")
@click.option("--snr", "snr_range", callback=_floats(2), metavar="MIN,MAX", default="5,30", show_default=True, help="MIN,MAX SNR in dB.")
@click.option("--reverb-prob", type=float, default=0.0, show_default=True, help="Share of reverberant utterances.")
@click.option("--rt60", "rt60_range", callback=_floats(2), metavar="MIN,MAX", default="0.2,0.8", show_default=True,
              help="MIN,MAX reverberation time in seconds.")
@click.option("--real", "real_dir", type=click.Path(file_okay=False), default=None,
              help="../shared/data: add FSDD (train takes only), yesno and pocketsphinx to pretrain.csv.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel synthesis jobs [default: CPU count].")
@click.option("--overwrite", is_flag=True, help="Re-synthesise files that exist (e.g. after changing --rate).")
@click.option("--list-speakers", is_flag=True, help="Print the default speakers that are installed and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def speech_command(output, prompts_path, seed, sentences, speakers, speaker_list, utterances, hours, everything,
                   speaker_split, sentence_split, rate_range, pitch_range, noise_prob, snr_range, reverb_prob,
                   rt60_range, real_dir, jobs, overwrite, list_speakers, quiet):
    """Synthesise a speech corpus from text prompts (espeak-ng, flite, festival).

    Splits are speaker- and sentence-disjoint: a test utterance is a test speaker reading a
    test sentence. Writes OUT/wav/..., OUT/manifest.csv (train/dev/test) and
    OUT/pretrain.csv (train + real recordings). Reruns resume. See docs/corpora.md.
    """

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    if list_speakers:
        try:
            found = default_speakers(speakers, warn=warn)
        except CorpusError as err:
            raise click.ClickException(str(err)) from None
        for speaker in found:
            click.echo(f"{speaker.name}\t(group {speaker.group})")
        return
    for value, flag in ((output, "--output"), (prompts_path, "--prompts")):
        if value is None:
            raise click.UsageError(f"Missing option '{flag}'.")
    if sum(x is not None for x in (utterances, hours)) + everything > 1:
        raise click.UsageError("give at most one of --utterances, --hours and --all")
    options = SpeechCorpusOptions(
        sentences=sentences,
        speakers=speakers,
        speaker_list=tuple(speaker_list),
        utterances=None if everything or hours is not None else (
            SpeechCorpusOptions.utterances if utterances is None else utterances),
        hours=hours,
        speaker_split=speaker_split,
        sentence_split=sentence_split,
        rate_range=rate_range,
        pitch_range=pitch_range,
        noise_prob=noise_prob,
        snr_range=snr_range,
        reverb_prob=reverb_prob,
        rt60_range=rt60_range,
        real_dir=real_dir,
        jobs=jobs,
        overwrite=overwrite,
        progress=not quiet,
    )
    try:
        summary = SpeechCorpusBuilder(output, prompts_path=prompts_path, seed=seed, options=options, warn=warn).run()
    except CorpusError as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        raise click.ClickException(
            f"{len(summary.failed)} utterance(s) failed (listed above); the manifest lists the others; rerun to retry"
        )
