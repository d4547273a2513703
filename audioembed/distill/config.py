"""The distillation config: one TOML or YAML file, overridable from the command line.

The file format, ``--set`` syntax and path rules are the training layer's
(:mod:`audioembed.training.config`); this module declares the sections and their checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..training.config import ConfigError, CropDataSection, TrainerConfig, apply_overrides, build_section, read_raw, resolve_path
from ..training.config import dump_toml as dump_config_toml


def default_target_layers(num_transformer_layers: int, count: int = 3) -> list[int]:
    """Teacher hidden states to predict: 4, 8, 12 for 12 layers, spread evenly otherwise.

    Index 0 is the input to the first transformer layer, so the last layer is
    ``num_transformer_layers``.
    """
    if num_transformer_layers < 1:
        raise ConfigError(f"a teacher needs at least one transformer layer, got {num_transformer_layers}")
    count = max(1, min(count, num_transformer_layers))
    return sorted({max(1, round(num_transformer_layers * (k + 1) / count)) for k in range(count)})


@dataclass
class TeacherSpec:
    """One teacher: an upstream, its target layers, its domains and its loss weight."""

    #: short label used in logs, heads and cache files, e.g. "speech"
    name: str
    #: registry name of the upstream, e.g. "hubert", "mert", "wavlm"
    upstream: str
    #: hub id or folder (``--model`` of the upstream); None for weight-free upstreams
    model: str | None = None
    #: hidden-state indices to predict; None = :func:`default_target_layers`
    layers: list[int] | None = None
    #: sample domains this teacher supervises when ``loss.domain_separated``; [] = all
    domains: list[str] = field(default_factory=list)
    #: weight of this teacher's loss in the sum over teachers
    weight: float = 1.0

    def validate(self, where: str) -> None:
        if self.layers is not None and (not isinstance(self.layers, list) or not all(isinstance(x, int) for x in self.layers)):
            raise ConfigError(f"{where}.layers: expected a list of integers, got {self.layers!r}")
        if isinstance(self.domains, str):
            self.domains = [self.domains]


def _check_range(value: Any, where: str, low: float, high: float, unit: str = "") -> list[float]:
    """``[min, max]`` with ``low <= min <= max <= high``, as floats."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise ConfigError(f"{where}: expected [min, max], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not low <= lo <= hi <= high:
        raise ConfigError(f"{where}: need {low:g} <= min <= max <= {high:g}{unit}, got {value!r}")
    return [lo, hi]


def _check_prob(value: float, where: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: a probability must lie in [0, 1], got {value!r}")


#: generated noise colours and their spectral slope alpha (power ~ 1/f^alpha)
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


@dataclass
class NoiseAugment:
    """Additive noise at a random SNR (signal power over noise power of the crop)."""

    prob: float = 0.0
    #: SNR range in dB, drawn uniformly
    snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])
    #: generated noise colours, one drawn uniformly per noisy crop
    colours: list[str] = field(default_factory=lambda: list(NOISE_COLOURS))
    #: noise recordings (manifests or folders); [] = generated noise only
    files: list[str] = field(default_factory=list)
    #: share of noisy crops that take a random stretch of a noise recording (needs files)
    file_prob: float = 0.5

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        _check_prob(self.file_prob, f"{where}.file_prob")
        self.snr_db = _check_range(self.snr_db, f"{where}.snr_db", -30.0, 100.0, " dB")
        if isinstance(self.files, str):
            self.files = [self.files]
        if not isinstance(self.colours, list) or not self.colours or any(c not in NOISE_COLOURS for c in self.colours):
            raise ConfigError(f"{where}.colours: expected a non-empty list of {', '.join(NOISE_COLOURS)}, got {self.colours!r}")


@dataclass
class ReverbAugment:
    """Synthetic room reverberation (:func:`audioembed.acoustics.room_response`)."""

    prob: float = 0.0
    #: reverberation time range in seconds
    rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        self.rt60 = _check_range(self.rt60, f"{where}.rt60", 0.05, 3.0, " s")


@dataclass
class SpeedAugment:
    """Kaldi-style speed perturbation: resampling changes tempo and pitch together."""

    prob: float = 0.0
    #: speed factor range (1.1 = 10 % faster and higher)
    factor: list[float] = field(default_factory=lambda: [0.9, 1.1])

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        self.factor = _check_range(self.factor, f"{where}.factor", 0.5, 2.0)


@dataclass
class PitchAugment:
    """Pitch shift without tempo change (phase-vocoder stretch, then resampling)."""

    prob: float = 0.0
    #: shift range in semitones
    semitones: list[float] = field(default_factory=lambda: [-2.0, 2.0])

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        self.semitones = _check_range(self.semitones, f"{where}.semitones", -12.0, 12.0)


@dataclass
class BandAugment:
    """Band limiting: a random low-pass, or the telephone band (300-3400 Hz)."""

    prob: float = 0.0
    #: low-pass corner range in Hz
    lowpass_hz: list[float] = field(default_factory=lambda: [3000.0, 8000.0])
    #: share of band-limited crops that get the telephone band-pass instead of a low-pass
    telephone_prob: float = 0.25

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        _check_prob(self.telephone_prob, f"{where}.telephone_prob")
        self.lowpass_hz = _check_range(self.lowpass_hz, f"{where}.lowpass_hz", 100.0, 1e6, " Hz")


@dataclass
class GainAugment:
    """A random gain in dB (the crop's peak is then kept below full scale)."""

    prob: float = 0.0
    #: gain range in dB
    db: list[float] = field(default_factory=lambda: [-12.0, 6.0])

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        self.db = _check_range(self.db, f"{where}.db", -60.0, 30.0, " dB")


#: the augmentations in the order they are applied to a crop
AUGMENTATIONS = {
    "speed": SpeedAugment,
    "pitch": PitchAugment,
    "reverb": ReverbAugment,
    "noise": NoiseAugment,
    "band": BandAugment,
    "gain": GainAugment,
}


@dataclass
class AugmentSection:
    """On-the-fly augmentation of training crops (``[data.augment]``); off by default.

    Each crop's augmentation is drawn from ``(run.seed, crop key)`` only, so the teacher
    cache and the trainer produce the same augmented crop (:mod:`.augment`).
    """

    #: share of crops augmented at all (each augmentation then by its own prob); the rest stays clean
    prob: float = 1.0
    #: sample rate (Hz) at which a crop is augmented once, then resampled to every rate needed
    rate: int = 24000
    speed: SpeedAugment = field(default_factory=SpeedAugment)
    pitch: PitchAugment = field(default_factory=PitchAugment)
    reverb: ReverbAugment = field(default_factory=ReverbAugment)
    noise: NoiseAugment = field(default_factory=NoiseAugment)
    band: BandAugment = field(default_factory=BandAugment)
    gain: GainAugment = field(default_factory=GainAugment)

    def validate(self, where: str) -> None:
        _check_prob(self.prob, f"{where}.prob")
        if not 8000 <= self.rate <= 192000:
            raise ConfigError(f"{where}.rate: expected a sample rate in 8000..192000 Hz, got {self.rate!r}")
        for name, cls in AUGMENTATIONS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, build_section(cls, value, f"{where}.{name}"))
            elif not isinstance(value, cls):
                raise ConfigError(f"{where}.{name}: expected a table, got {value!r}")
            else:
                value.validate(f"{where}.{name}")
        if self.band.prob > 0 and self.band.lowpass_hz[1] >= self.rate / 2:
            raise ConfigError(
                f"{where}.band.lowpass_hz: corners must lie below half the augmentation rate "
                f"({self.rate / 2:g} Hz), got {self.band.lowpass_hz}"
            )

    @property
    def active(self) -> bool:
        """Whether any crop can be augmented."""
        return self.prob > 0 and any(getattr(self, name).prob > 0 for name in AUGMENTATIONS)


@dataclass
class DataSection(CropDataSection):
    #: longest training crop; DistilHuBERT: 250,000 samples at 16 kHz
    crop_seconds: float = 15.625
    #: shorter items (or last windows) are dropped
    min_seconds: float = 1.0
    #: global batch size (all processes together, before gradient accumulation)
    batch_size: int = 24
    #: sampling probability per domain (normalised); {} = in proportion to the data
    domain_weights: dict[str, float] = field(default_factory=dict)
    #: teacher target cache folder (``audioembed distill-cache``); "" = run teachers online
    cache_dir: str = ""
    #: crops per item in the cache: "cover" tiles each item, an integer draws that many
    cache_crops: str | int = "cover"
    #: on-the-fly augmentation ([data.augment]); off unless some augmentation has prob > 0
    augment: AugmentSection = field(default_factory=AugmentSection)

    def validate(self, where: str) -> None:
        if isinstance(self.augment, Mapping):
            self.augment = build_section(AugmentSection, self.augment, f"{where}.augment")
        elif not isinstance(self.augment, AugmentSection):
            raise ConfigError(f"{where}.augment: expected a table, got {self.augment!r}")
        else:
            self.augment.validate(f"{where}.augment")
        super().validate(where)
        if not (self.cache_crops == "cover" or (isinstance(self.cache_crops, int) and self.cache_crops >= 1)):
            raise ConfigError(f"{where} cache_crops must be \"cover\" or a positive integer")
        if self.domain_weights and any((not isinstance(v, (int, float))) or v < 0 for v in self.domain_weights.values()):
            raise ConfigError(f"{where} domain_weights must be non-negative numbers")


@dataclass
class StudentSection:
    #: "random", "teacher:NAME", "average:NAME,NAME" or a student folder (e.g. a shared init)
    init: str = "random"
    #: HubertConfig overrides, e.g. {num_hidden_layers = 2, hidden_size = 384}
    arch: dict[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    #: per-sample zero-mean unit-variance input normalisation
    normalize: bool = False
    #: "mlp", "lightconv", "shared", or a table teacher -> "mlp"/"lightconv" (hybrid)
    head: str | dict[str, str] = "mlp"

    def validate(self, where: str) -> None:
        if isinstance(self.head, str) and self.head not in ("mlp", "lightconv", "shared"):
            raise ConfigError(f"{where} head must be mlp, lightconv, shared or a table, got {self.head!r}")

    def check_teachers(self, names: list[str], where: str) -> None:
        """The fields that name teachers (``head`` table, ``init``) must name real ones."""
        if isinstance(self.head, Mapping):
            missing = sorted(set(names) - set(self.head))
            bad = sorted(k for k, v in self.head.items() if v not in ("mlp", "lightconv"))
            if missing or bad or set(self.head) - set(names):
                raise ConfigError(f"{where} head table must give mlp or lightconv for each teacher {names}")
        if self.init.startswith("teacher:") and self.init[len("teacher:"):] not in names:
            raise ConfigError(f"{where} init {self.init!r} names no teacher (teachers: {', '.join(names)})")
        if self.init.startswith("average:"):
            pair = [p.strip() for p in self.init[len("average:"):].split(",")]
            if len(pair) != 2 or any(p not in names for p in pair):
                raise ConfigError(f"{where} init 'average:A,B' needs two teacher names from {names}")


@dataclass
class LossSection:
    #: lambda of L1 - lambda * log sigmoid(cos)
    cos_weight: float = 1.0
    #: each teacher only supervises samples of its own domains
    domain_separated: bool = False
    #: project conflicting per-teacher gradients (PCGrad)
    pcgrad: bool = False
    #: centre each target dimension and scale each target layer to unit RMS, with statistics
    #: of the first ``target_stats_steps`` global batches: teachers whose outputs live on other
    #: scales (posteriorgrams in [0, 1], L2-normalised embeddings, layer-normed states) then
    #: weigh alike in the L1 term, and an offset shared by every frame no longer makes the
    #: cosine term trivially high
    normalize_targets: bool = False
    target_stats_steps: int = 8

    def validate(self, where: str) -> None:
        if self.target_stats_steps < 1:
            raise ConfigError(f"{where} target_stats_steps must be >= 1")


@dataclass
class OptimSection:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-6
    #: warm-up fraction of max_steps (or a step count if >= 1)
    warmup: float = 0.07
    max_steps: int = 200_000
    grad_clip: float = 5.0
    #: micro-batches per optimiser step
    accumulate: int = 1
    #: "fp32", "bf16" or "fp16" (autocast; CUDA only, fp32 elsewhere)
    precision: str = "fp32"

    def validate(self, where: str) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{where} precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("max_steps", "accumulate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where} {name} must be >= 1")


@dataclass
class RunSection:
    #: fields that may change between a run and its resumption
    RESUMABLE = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "tensorboard", "device", "workers"})

    #: run folder: checkpoints, logs, final student
    output_dir: str = "runs/distill"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    device: str = "auto"
    #: audio decoding threads feeding the loop
    workers: int = 1


@dataclass
class DistillConfig(TrainerConfig):
    teachers: list[TeacherSpec] = field(default_factory=list)
    data: DataSection = field(default_factory=DataSection)
    student: StudentSection = field(default_factory=StudentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    #: the file this came from (for messages); not part of the config
    source: str = field(default="<dict>", compare=False)


SECTIONS = {"data": DataSection, "student": StudentSection, "loss": LossSection, "optim": OptimSection, "run": RunSection}


def config_from_dict(raw: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<dict>") -> DistillConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`DistillConfig`."""
    raw = dict(raw)
    unknown = sorted(set(raw) - set(SECTIONS) - {"teachers"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: teachers, {', '.join(SECTIONS)}")
    teachers_raw = raw.get("teachers") or []
    if not isinstance(teachers_raw, list) or not teachers_raw:
        raise ConfigError(f"{source}: no [[teachers]] given; a distillation needs at least one teacher")
    teachers = []
    for i, t in enumerate(teachers_raw):
        where = f"{source}: teachers[{i}]"
        if not isinstance(t, Mapping) or "name" not in t or "upstream" not in t:
            raise ConfigError(f"{where}: every teacher needs 'name' and 'upstream'")
        teachers.append(build_section(TeacherSpec, t, where))
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: teacher names must be unique, got {names}")
    base = Path(base_dir) if base_dir is not None else None
    sections = {}
    for name, cls in SECTIONS.items():
        loose = ("cache_crops",) if name == "data" else ()
        sections[name] = build_section(cls, raw.get(name) or {}, f"{source}: [{name}]", loose_ints=loose)
    data, student, run = sections["data"], sections["student"], sections["run"]
    data.manifests = [resolve_path(m, base) for m in data.manifests]
    if data.cache_dir:
        data.cache_dir = resolve_path(data.cache_dir, base)
    data.augment.noise.files = [resolve_path(f, base) for f in data.augment.noise.files]
    run.output_dir = resolve_path(run.output_dir, base)
    if student.init not in ("random",) and not student.init.startswith(("teacher:", "average:")):
        student.init = resolve_path(student.init, base)
    student.check_teachers(names, f"{source}: [student]")
    return DistillConfig(teachers=teachers, source=source, **sections)


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> DistillConfig:
    """Read a ``.toml`` / ``.yaml`` config (or none: overrides only) and apply ``--set`` overrides."""
    raw, base_dir, source = read_raw(path)
    raw = apply_overrides(raw, list(overrides))
    return config_from_dict(raw, base_dir, source)


def dump_toml(config: DistillConfig) -> str:
    """The resolved config as TOML (written into the run folder for the record)."""
    return dump_config_toml(config.as_dict())
