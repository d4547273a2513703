"""Speakers (engine + voice), their voice groups and the default speaker set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .common import CorpusError, Warn, default_warn, interleave
from .engines import Engine, FestivalEngine, default_engines


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


#: the default speakers, interleaved across engines so that the first N stay varied (21)
DEFAULT_SPEAKERS: tuple[str, ...] = tuple(
    interleave(
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
    warn = warn or default_warn
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
