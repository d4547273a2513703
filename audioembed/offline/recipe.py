"""The offline recipe's config (``recipes/offline/*.toml``), typed.

Sections that configure another module pass their tables through to that module's own
config (``[teachers.*]`` -> :class:`~audioembed.pretrain.config.PretrainConfig`,
``[students] config`` and ``[[students.runs]] config`` ->
:class:`~audioembed.distill.config.DistillConfig`, ``[corpus.*]`` -> the corpus options),
which validate them. ``[evaluation]`` takes its probe defaults from
:class:`~audioembed.downstream.DownstreamConfig`, so a default is stated once, by its owner.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..training.config import ConfigError, apply_overrides, build_section, read_raw

#: the evaluation tasks and the domain each one speaks for (for the speech/music averages)
TASK_DOMAINS = {"asr": "speech", "speaker_id": "speech", "fsdd": "speech",
                "key": "music", "style": "music", "tagging": "music", "sonic_pi": "music"}


def _downstream_default(name: str) -> Any:
    """The default of ``DownstreamConfig.<name>`` (imported when a recipe is read, not before)."""
    from ..downstream import DownstreamConfig

    return next(f.default for f in dataclasses.fields(DownstreamConfig) if f.name == name)


@dataclass
class RunSection:
    #: the run folder, relative to the recipe file
    output_dir: str = "runs/offline"
    seed: int = 0
    device: str = "auto"


@dataclass
class CorpusSection:
    #: SpeechCorpusOptions fields, plus ``prompts`` (required) and ``real`` (a folder)
    speech: dict = field(default_factory=dict)
    #: MusicCorpusOptions fields, plus ``soundfonts`` (files, or "default")
    music: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for name in ("speech", "music"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{where}.{name} must be a table")


#: teachers a recipe without a [teachers] section pretrains (the papers' pair)
DEFAULT_TEACHERS = {"speech": {"kind": "hubert"}, "music": {"kind": "mert"}}
#: pretraining families and the domain their teacher supervises when the loss is domain-separated
PRETRAIN_KINDS = {"hubert": "speech", "mert": "music"}
#: keys of a teacher table that belong to the recipe, not to the pretraining config
TEACHER_KEYS = ("upstream", "model", "layers", "domains")


@dataclass
class TeacherEntry:
    """One ``[teachers.NAME]`` table.

    Either pretrained by the recipe (``kind`` = hubert or mert, plus any section of the
    pretraining config) or a ready-made upstream used as it is (``upstream``, optional
    ``model``: e.g. ``small_hubert``, ``ge2e``, ``crepe`` with ``model = "tiny:320"``).
    ``layers`` (target hidden states) and ``domains`` (what it supervises when the loss is
    domain-separated; default: the pretraining family's domain, every domain for a
    ready-made upstream) apply to both.
    """

    name: str
    #: the pretraining config table (``kind``, ``model``, ``units``, ``optim`` ...); {} for ready-made
    pretrain: dict = field(default_factory=dict)
    upstream: str = ""
    model: str | None = None
    layers: list[int] | None = None
    domains: list[str] = field(default_factory=list)

    @property
    def pretrained_here(self) -> bool:
        return not self.upstream

    @classmethod
    def from_table(cls, name: str, table: Any, where: str) -> "TeacherEntry":
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}.{name} must be a table")
        table = dict(table)
        upstream = table.pop("upstream", "")
        model = table.pop("model", None) if upstream else None
        layers = table.pop("layers", None)
        domains = table.pop("domains", None)
        if upstream:
            if not isinstance(upstream, str):
                raise ConfigError(f"{where}.{name}.upstream must be an upstream name")
            if table:
                raise ConfigError(f"{where}.{name}: a ready-made upstream takes only {', '.join(TEACHER_KEYS)}; "
                                  f"got {', '.join(sorted(table))} (pretraining settings need kind = hubert|mert)")
            if model is not None and not isinstance(model, str):
                raise ConfigError(f"{where}.{name}.model must be a string")
        else:
            kind = table.setdefault("kind", "hubert" if name != "music" else "mert")
            if kind not in PRETRAIN_KINDS:
                raise ConfigError(f"{where}.{name}.kind must be one of {', '.join(PRETRAIN_KINDS)} "
                                  f"(or give upstream = NAME for a ready-made teacher), got {kind!r}")
        if layers is not None and (not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers)):
            raise ConfigError(f"{where}.{name}.layers must be a list of integers")
        if isinstance(domains, str):
            domains = [domains]
        if domains is None:
            domains = [] if upstream else [PRETRAIN_KINDS[table["kind"]]]
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError(f"{where}.{name}.domains must be a list of domain names")
        return cls(name=name, pretrain=table, upstream=upstream, model=model, layers=layers, domains=domains)


@dataclass
class TeachersSection:
    """``[teachers.NAME]`` tables, in file order (see :class:`TeacherEntry`)."""

    entries: dict[str, TeacherEntry] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: Any, where: str) -> "TeachersSection":
        if raw is None or raw == {}:
            raw = DEFAULT_TEACHERS
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a table of teachers ([teachers.NAME])")
        return cls({name: TeacherEntry.from_table(name, table, where) for name, table in raw.items()})

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def spec(self, name: str) -> dict:
        """The pretraining config table of a teacher the recipe pretrains."""
        return dict(self.entries[name].pretrain)


@dataclass
class StudentRun:
    """One ``[[students.runs]]`` entry: a student trained from ``theta_0``."""

    name: str = ""
    #: label of the kind of model in the results ("single", "multi", ...)
    kind: str = ""
    #: teacher names of ``[teachers]``; [] = every teacher
    teachers: list[str] = field(default_factory=list)
    #: loss weight per teacher name
    weights: dict[str, float] = field(default_factory=dict)
    #: distillation config table merged over ``[students] config``
    config: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        if not self.name:
            raise ConfigError(f"{where}: every [[students.runs]] needs a name")
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        if not isinstance(self.teachers, list) or not all(isinstance(t, str) for t in self.teachers):
            raise ConfigError(f"{where}: teachers must be a list of [teachers] names")
        if not isinstance(self.config, Mapping) or not isinstance(self.weights, Mapping):
            raise ConfigError(f"{where}: config and weights must be tables")


@dataclass
class StudentsSection:
    #: initialisation of theta_0, the shared start of every run (a DistillConfig student.init)
    init: str = "teacher:speech"
    #: architecture overrides of theta_0 (a DistillConfig student.arch)
    arch: dict = field(default_factory=dict)
    #: train on cached teacher targets
    cache: bool = True
    #: distillation config table shared by every run
    config: dict = field(default_factory=dict)
    runs: list[StudentRun] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if not isinstance(self.runs, list):
            raise ConfigError(f"{where} runs must be a list of tables ([[students.runs]])")
        self.runs = [r if isinstance(r, StudentRun) else build_section(StudentRun, r, f"{where} runs[{i}]")
                     for i, r in enumerate(self.runs)]
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where} run names must be unique, got {names}")


@dataclass
class MergeSection:
    #: the two student runs whose task vectors are merged; [] = no merges
    pair: list[str] = field(default_factory=lambda: ["speech_only", "music_only"])
    #: also a TIES merge at lambda 0.5 / 0.5
    ties: bool = True
    ties_k: float = 0.3

    def validate(self, where: str) -> None:
        if not isinstance(self.pair, list) or len(self.pair) not in (0, 2):
            raise ConfigError(f"{where} pair must name two student runs (or be [] for no merges)")
        if not 0 < self.ties_k <= 1:
            raise ConfigError(f"{where} ties_k must be in (0, 1]")


@dataclass
class EvaluationSection:
    tasks: list[str] = field(default_factory=lambda: list(TASK_DOMAINS))
    #: weight-free upstreams evaluated as baselines, e.g. ["mfcc", "logmel"]
    baselines: list[str] = field(default_factory=lambda: ["mfcc"])
    #: evaluate every teacher too (as ``teacher_NAME``)
    teachers: bool = True
    #: further models by name: {upstream, model (a folder relative to the recipe, or a source
    #: string), kind}, e.g. the previous default student for comparison
    models: dict[str, dict] = field(default_factory=dict)
    #: shots per class, as for ``audioembed downstream --shots``
    shots: str = "1,2,4,8,16,all"
    seeds: int = field(default_factory=lambda: _downstream_default("seeds"))
    probe: str = field(default_factory=lambda: _downstream_default("probe"))
    ctc_head: str = field(default_factory=lambda: _downstream_default("ctc_head"))
    max_epochs: int = field(default_factory=lambda: _downstream_default("max_epochs"))
    #: pooling of utterance tasks ("mean" or "mean+std"); chunk and frame tasks keep their own
    pool: str = field(default_factory=lambda: _downstream_default("pool"))
    #: per task: shots, seeds, epochs that replace the values above
    task_shots: dict[str, str] = field(default_factory=dict)
    task_seeds: dict[str, int] = field(default_factory=dict)
    task_max_epochs: dict[str, int] = field(default_factory=dict)
    #: the few-shot column of the results page (None: the page's own default)
    report_shots: int | None = None
    #: ASR training utterances (0 = all of the speech corpus' train split)
    asr_train: int = 0
    #: optional real-recording tasks: folders, relative to the recipe
    fsdd: str = ""
    sonic_pi: str = ""

    def validate(self, where: str) -> None:
        from ..downstream import DownstreamError, parse_shots

        self.shots = str(self.shots)
        self.task_shots = {k: str(v) for k, v in dict(self.task_shots).items()}
        for text in [self.shots, *self.task_shots.values()]:
            try:
                parse_shots(text)
            except DownstreamError as exc:
                raise ConfigError(f"{where} shots {text!r}: {exc}") from None
        if isinstance(self.baselines, str):
            self.baselines = [self.baselines]
        if not isinstance(self.baselines, list) or not all(isinstance(b, str) for b in self.baselines):
            raise ConfigError(f"{where} baselines must be a list of upstream names")
        if not isinstance(self.models, Mapping):
            raise ConfigError(f"{where} models must be a table of name = {{upstream, model, kind}}")
        for name, spec in self.models.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("upstream"), str):
                raise ConfigError(f"{where} models.{name} needs upstream = NAME")
            extra = sorted(set(spec) - {"upstream", "model", "kind"})
            if extra:
                raise ConfigError(f"{where} models.{name}: unknown key(s) {', '.join(extra)}; known: upstream, model, kind")
        unknown = [t for t in self.tasks if t not in TASK_DOMAINS]
        if unknown:
            raise ConfigError(f"{where} tasks: unknown {unknown}; known: {', '.join(TASK_DOMAINS)}")
        for name in ("seeds", "max_epochs", "asr_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "asr_train" else 1):
                raise ConfigError(f"{where} {name} must be a {'non-negative' if name == 'asr_train' else 'positive'} integer")
        from ..downstream import UTTERANCE_POOLINGS

        if self.pool not in UTTERANCE_POOLINGS:
            raise ConfigError(f"{where} pool must be one of {UTTERANCE_POOLINGS}, got {self.pool!r}")
        for table in ("task_seeds", "task_max_epochs"):
            values = dict(getattr(self, table))
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values.values()):
                raise ConfigError(f"{where} {table} values must be positive integers")

    def shots_for(self, task: str) -> str:
        return self.task_shots.get(task, self.shots)

    def seeds_for(self, task: str) -> int:
        return int(self.task_seeds.get(task, self.seeds))

    def max_epochs_for(self, task: str) -> int:
        return int(self.task_max_epochs.get(task, self.max_epochs))


SECTIONS = {"run": RunSection, "corpus": CorpusSection, "teachers": TeachersSection,
            "students": StudentsSection, "merge": MergeSection, "evaluation": EvaluationSection}


@dataclass
class RecipeConfig:
    run: RunSection = field(default_factory=RunSection)
    corpus: CorpusSection = field(default_factory=CorpusSection)
    teachers: TeachersSection = field(default_factory=TeachersSection)
    students: StudentsSection = field(default_factory=StudentsSection)
    merge: MergeSection = field(default_factory=MergeSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    #: the file this came from (for messages)
    source: str = field(default="<dict>", compare=False)


def recipe_from_dict(raw: Mapping, source: str = "<dict>") -> RecipeConfig:
    """Validate a raw mapping (parsed file + overrides) into a :class:`RecipeConfig`."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    sections = {name: (TeachersSection.from_raw(raw.get(name), f"{source}: [{name}]") if cls is TeachersSection
                       else build_section(cls, raw.get(name) or {}, f"{source}: [{name}]"))
                for name, cls in SECTIONS.items()}
    recipe = RecipeConfig(source=source, **sections)
    check_teacher_names(recipe)
    return recipe


def init_teachers(init: str) -> list[str]:
    """Teacher names a student ``init`` needs (``teacher:NAME``, ``average:NAME,NAME``)."""
    kind, _, names = init.partition(":")
    return [n.strip() for n in names.split(",") if n.strip()] if kind in ("teacher", "average") else []


def check_teacher_names(recipe: RecipeConfig) -> None:
    """Student runs and the init may name only teachers the recipe has."""
    known = recipe.teachers.names
    where = f"{recipe.source}: [students]"
    for run in recipe.students.runs:
        unknown = [t for t in run.teachers if t not in known]
        if unknown:
            raise ConfigError(f"{where} run '{run.name}': teachers must be among [teachers] "
                              f"({', '.join(known)}); unknown: {', '.join(unknown)}")
        if not run.teachers:
            run.teachers = list(known)
        bad_weights = sorted(set(run.weights) - set(run.teachers))
        if bad_weights:
            raise ConfigError(f"{where} run '{run.name}': weights for teachers it does not use: {', '.join(bad_weights)}")
    missing = [t for t in init_teachers(recipe.students.init) if t not in known]
    if missing:
        raise ConfigError(f"{where} init {recipe.students.init!r} names unknown teacher(s) {', '.join(missing)}")


def read_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[dict, RecipeConfig, Path]:
    """``(raw mapping, typed config, base folder)`` of a recipe file with ``--set`` overrides."""
    raw, base, source = read_raw(path)
    raw = apply_overrides(raw, list(overrides))
    return raw, recipe_from_dict(raw, source), base
