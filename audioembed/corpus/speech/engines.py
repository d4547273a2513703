"""The speech synthesisers (espeak-ng, flite, festival) behind one ``Engine`` interface."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


_SUBPROCESS_TIMEOUT = 120.0


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
