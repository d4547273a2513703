"""The downstream task contract.

A task plugin says what a dataset looks like on disk (its loader), what is predicted (its
kind, which fixes the head and the loss) and how predictions are scored (its metrics).
Everything else, features, splits, few-shot subsets, probe training and results, is the
runner's job (``audioembed.downstream``), so every task gets caching, paired few-shot
subsets and the same result files for free.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AudioEmbedError


class TaskKind(str, enum.Enum):
    #: one label per utterance (target: str)
    CLASSIFICATION = "classification"
    #: any number of tags per utterance (target: tuple[str, ...])
    MULTILABEL = "multilabel"
    #: character transcript from frame features (target: str)
    CTC = "ctc"
    #: one number per utterance (target: float)
    REGRESSION = "regression"


class TaskDataError(AudioEmbedError, ValueError):
    """The dataset cannot be used at all (not a bad row: those are reported and skipped)."""


@dataclass(frozen=True)
class Example:
    """One labelled audio file."""

    id: str
    path: str  # absolute
    target: str | tuple[str, ...] | float
    #: "train", "dev" or "test" when the dataset defines splits; None otherwise
    split: str | None = None
    #: speaker (or other grouping) for group-independent folds; None when unknown
    group: str | None = None
    #: the dataset's own cross-validation fold (ESC-50's ``fold``, ...); when any example has
    #: one, the runner tests on each fold in turn instead of drawing its own folds
    fold: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)


@dataclass
class TaskData:
    examples: list[Example]
    #: bad rows, each "FILE: reason" (missing audio, unknown label, ...); the run goes on
    problems: list[str] = field(default_factory=list)
    #: label vocabulary in a fixed order (classification and multi-label)
    labels: list[str] | None = None
    #: where ``Example.fold`` came from when the loader set it (e.g. "fold" of ESC-50's meta
    #: file); recorded in the result's protocol
    fold_column: str | None = None


@dataclass(frozen=True)
class TaskOption:
    """A task-specific setting, given on the command line as ``--task-option NAME=VALUE``."""

    name: str
    help: str
    default: str | int | float | None = None
    type: type = str


class Task:
    """Base class of downstream tasks. Subclasses set the class attributes and ``load``."""

    name: str = ""
    kind: TaskKind = TaskKind.CLASSIFICATION
    #: metric used for early stopping and the summary table (higher is better unless listed
    #: in ``lower_is_better``)
    primary_metric: str = "accuracy"
    lower_is_better: tuple[str, ...] = ()
    options: tuple[TaskOption, ...] = ()
    #: long clips (music) are cut into chunks of this length for training, and chunk outputs
    #: are averaged per clip at evaluation (MARBLE's protocol); None = whole utterances.
    chunk_seconds: float | None = None

    def load(self, data: Path, options: dict) -> TaskData:
        raise NotImplementedError

    def metrics(self, targets: Sequence, predictions: Sequence, scores: np.ndarray | None, labels: list[str] | None) -> dict[str, float]:
        """Scores of ``predictions`` (labels, tag tuples, strings or numbers) against ``targets``.

        ``scores`` are per-class probabilities ``(N, C)`` where the kind has them.
        """
        raise NotImplementedError

    def resolve_options(self, given: dict[str, str]) -> dict:
        known = {opt.name: opt for opt in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            names = ", ".join(sorted(known)) or "none"
            raise TaskDataError(f"task '{self.name}' has no option {', '.join(unknown)} (options: {names})")
        resolved = {}
        for name, opt in known.items():
            value = given.get(name, opt.default)
            if value is not None and not isinstance(value, opt.type):
                try:
                    value = opt.type(value)
                except ValueError:
                    raise TaskDataError(f"task option {name}: expected {opt.type.__name__}, got '{value}'") from None
            resolved[name] = value
        return resolved
