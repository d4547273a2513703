"""What to build: :class:`MusicCorpusOptions`, its validation and the settings recorded on disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .. import midi_styles as ms
from .common import ANALYSIS_VERSION, DEFAULTS, GENERATOR_VERSION, RENDER_RATE, SAMPLE_RATE, MusicCorpusError


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
        settings["versions"] = {**package_versions(), "generator": GENERATOR_VERSION, "analysis": ANALYSIS_VERSION}
        return settings


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("music21", "pretty_midi", "tinysoundfont", "soxr"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
