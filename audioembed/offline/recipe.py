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
TEACHERS = ("speech", "music")


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


@dataclass
class TeachersSection:
    #: a pretraining config table (``kind``, ``model``, ``units``, ``optim``, ...) per teacher
    speech: dict = field(default_factory=dict)
    music: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for name in TEACHERS:
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{where}.{name} must be a table")

    def spec(self, name: str) -> dict:
        return dict(getattr(self, name))


@dataclass
class StudentRun:
    """One ``[[students.runs]]`` entry: a student trained from ``theta_0``."""

    name: str = ""
    #: label of the kind of model in the results ("single", "multi", ...)
    kind: str = ""
    teachers: list[str] = field(default_factory=lambda: list(TEACHERS))
    #: loss weight per teacher name
    weights: dict[str, float] = field(default_factory=dict)
    #: distillation config table merged over ``[students] config``
    config: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        if not self.name:
            raise ConfigError(f"{where}: every [[students.runs]] needs a name")
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        unknown = [t for t in self.teachers if t not in TEACHERS]
        if not self.teachers or unknown:
            raise ConfigError(f"{where}: teachers must be a non-empty list of {', '.join(TEACHERS)}")
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
    #: the two student runs whose task vectors are merged
    pair: list[str] = field(default_factory=lambda: ["speech_only", "music_only"])
    #: also a TIES merge at lambda 0.5 / 0.5
    ties: bool = True
    ties_k: float = 0.3

    def validate(self, where: str) -> None:
        if not isinstance(self.pair, list) or len(self.pair) != 2:
            raise ConfigError(f"{where} pair must name two student runs")
        if not 0 < self.ties_k <= 1:
            raise ConfigError(f"{where} ties_k must be in (0, 1]")


@dataclass
class EvaluationSection:
    tasks: list[str] = field(default_factory=lambda: list(TASK_DOMAINS))
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
    sections = {name: build_section(cls, raw.get(name) or {}, f"{source}: [{name}]") for name, cls in SECTIONS.items()}
    return RecipeConfig(source=source, **sections)


def read_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[dict, RecipeConfig, Path]:
    """``(raw mapping, typed config, base folder)`` of a recipe file with ``--set`` overrides."""
    raw, base, source = read_raw(path)
    raw = apply_overrides(raw, list(overrides))
    return raw, recipe_from_dict(raw, source), base
