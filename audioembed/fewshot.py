"""Evaluation splits and few-shot subsets.

Everything here depends only on the examples (ids, targets, groups) and a seed, never on
the upstream: the same seed draws the same subset for every upstream, so comparisons
between upstreams are paired.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from .tasks import Example, TaskKind
from .errors import AudioEmbedError

SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test", "eval": "test"}


@dataclass(frozen=True)
class Fold:
    name: str
    train: list[int]
    dev: list[int]
    test: list[int]


class FoldError(AudioEmbedError, ValueError):
    """The examples cannot be split under the protocol they ask for (e.g. one speaker only)."""


@dataclass(frozen=True)
class FoldPlan:
    """The folds and, in words, the split protocol that made them (stored in every result)."""

    folds: list[Fold]
    #: e.g. "given test split", "group k-fold (k=5, by group)", "leave-one-group-out (3 groups)",
    #: "official folds (column fold, 5 folds)", "stratified k-fold (k=5)"
    protocol: str


def _strat_label(example: Example, kind: TaskKind) -> str:
    if kind is TaskKind.CLASSIFICATION:
        return str(example.target)
    if kind is TaskKind.MULTILABEL and example.target:
        return sorted(example.target)[0]
    return "_"


def make_folds(examples: Sequence[Example], kind: TaskKind, num_folds: int = 5, seed: int = 0,
               fold_column: str | None = None) -> FoldPlan:
    """The evaluation folds, chosen in this order of precedence:

    1. the dataset's own folds (``Example.fold``, set by the loader of a known dataset or from
       ``fold_column``): each fold value is tested in turn, the next one early-stops;
    2. the dataset's own train/dev/test split;
    3. k-fold: fold i tests on part i, early-stops on part i+1 and trains on the rest. When
       groups (speakers) are known the parts are group-disjoint; with fewer groups than ``k``
       every group is tested in turn (leave-one-group-out), never a silent fall back to
       splits that put one speaker on both sides. Examples without a group count as their own.
    The returned plan names the protocol that was used.
    """
    folds_given = [e.fold for e in examples]
    if any(f is not None for f in folds_given):
        return _official_folds(examples, kind, seed, fold_column or "fold")
    splits = [SPLIT_ALIASES.get((e.split or "").lower()) for e in examples]
    if any(splits):
        by = defaultdict(list)
        for i, s in enumerate(splits):
            by[s or "train"].append(i)
        train, dev, test = by["train"], by["dev"], by["test"]
        if not test:
            raise FoldError("the dataset defines splits but no test split")
        protocol = "given test split"
        if not dev:
            train, dev = _carve_dev(examples, train, kind, seed)
            protocol += " (dev carved from train)"
        return FoldPlan([Fold("split", train, dev, test)], protocol)
    labels = [_strat_label(e, kind) for e in examples]
    groups = [e.group for e in examples]
    index = np.arange(len(examples))
    counts = Counter(labels)
    k = max(3, min(num_folds, len(examples)))
    # classes rarer than k cannot be stratified; stratify on the rest
    strat = [lab if counts[lab] >= k else "_rare" for lab in labels]
    if any(g is not None for g in groups):
        unknown = sum(g is None for g in groups)
        named = [g if g is not None else f"\x00ungrouped:{examples[i].id}" for i, g in enumerate(groups)]
        distinct = sorted(set(g for g in groups if g is not None))
        note = f", {unknown} example(s) without a group each counted as their own" if unknown else ""
        if len(set(named)) >= k:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = [test for _, test in splitter.split(index, strat, named)]
            return FoldPlan(_rotate(parts, k), f"group k-fold (k={k}, by group{note})")
        if len(distinct) < 2 or unknown:
            raise FoldError(
                f"only {len(set(named))} group(s) ({', '.join(distinct[:5])}) for {k}-fold cross-validation: "
                "group-independent folds are impossible; give a dataset with more speakers/groups, or "
                "turn grouping off explicitly (-O group_column=)")
        return _leave_one_group_out(examples, kind, groups, distinct, seed)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    parts = [test for _, test in splitter.split(index, strat)]
    return FoldPlan(_rotate(parts, k), f"stratified k-fold (k={k})")


def _rotate(parts, k: int) -> list[Fold]:
    """Fold i tests on part i, early-stops on part i+1 and trains on the rest."""
    folds = []
    for i in range(k):
        test = sorted(np.asarray(parts[i]).tolist())
        dev = sorted(np.asarray(parts[(i + 1) % k]).tolist())
        train = sorted(j for p in range(k) if p not in (i, (i + 1) % k) for j in np.asarray(parts[p]).tolist())
        folds.append(Fold(f"fold{i}", train, dev, test))
    return folds


def _by_value(values: Sequence[str | None], order: Sequence[str]) -> list[list[int]]:
    return [[i for i, v in enumerate(values) if v == value] for value in order]


def _leave_one_group_out(examples, kind: TaskKind, groups, distinct: list[str], seed: int) -> FoldPlan:
    """Each group tested in turn; with 3+ groups the next one early-stops, with 2 the dev
    part is carved from the training group (dev only stops training; the test stays unseen)."""
    parts = _by_value(groups, distinct)
    if len(distinct) >= 3:
        folds = _rotate(parts, len(distinct))
        folds = [Fold(f"group-{distinct[i]}", f.train, f.dev, f.test) for i, f in enumerate(folds)]
    else:
        folds = []
        for i, value in enumerate(distinct):
            train, dev = _carve_dev(examples, parts[1 - i], kind, seed)
            folds.append(Fold(f"group-{value}", train, dev, parts[i]))
    return FoldPlan(folds, f"leave-one-group-out ({len(distinct)} groups)")


def _official_folds(examples, kind: TaskKind, seed: int, column: str) -> FoldPlan:
    values = [e.fold for e in examples]
    missing = [examples[i].id for i, v in enumerate(values) if v is None]
    if missing:
        raise FoldError(f"{len(missing)} example(s) have no value in the fold column '{column}', e.g. {missing[0]}")
    order = sorted(set(values), key=lambda v: (len(v), v) if v.isdigit() else (float("inf"), v))
    if len(order) < 2:
        raise FoldError(f"the fold column '{column}' has a single value ({order[0]}): nothing to test on")
    parts = _by_value(values, order)
    if len(order) >= 3:
        folds = [Fold(f"fold-{order[i]}", f.train, f.dev, f.test) for i, f in enumerate(_rotate(parts, len(order)))]
    else:
        folds = []
        for i, value in enumerate(order):
            train, dev = _carve_dev(examples, parts[1 - i], kind, seed)
            folds.append(Fold(f"fold-{value}", train, dev, parts[i]))
    return FoldPlan(folds, f"official folds (column {column}, {len(order)} folds)")


def _carve_dev(examples, train: list[int], kind: TaskKind, seed: int) -> tuple[list[int], list[int]]:
    labels = [_strat_label(examples[i], kind) for i in train]
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 and len(counts) > 1 else None
    tr, dv = train_test_split(train, test_size=0.1 if len(train) >= 20 else 0.25, random_state=seed, stratify=stratify)
    return sorted(tr), sorted(dv)


def draw_subset(examples: Sequence[Example], pool: Sequence[int], kind: TaskKind, shots: int | None, seed: int) -> list[int]:
    """Indices of the few-shot training subset drawn from ``pool`` (``shots=None``: all of it).

    - classification: ``shots`` examples per class (all of a class when it has fewer);
    - multi-label: a greedy cover that gives every tag >= ``shots`` positives where possible,
      rarest tags first;
    - CTC and regression: ``shots`` utterances.
    Order-independent: candidates are sorted by id before the seeded shuffle.
    """
    pool = sorted(pool, key=lambda i: examples[i].id)
    if shots is None:
        return sorted(pool)
    rng = np.random.default_rng(seed)
    order = [pool[j] for j in rng.permutation(len(pool))]
    if kind is TaskKind.CLASSIFICATION:
        taken: dict[str, int] = Counter()
        chosen = []
        for i in order:
            label = examples[i].target
            if taken[label] < shots:
                taken[label] += 1
                chosen.append(i)
        return sorted(chosen)
    if kind is TaskKind.MULTILABEL:
        positives = Counter(t for i in pool for t in examples[i].target)
        have: Counter = Counter()
        chosen: list[int] = []
        chosen_set: set[int] = set()
        for tag in sorted(positives, key=lambda t: (positives[t], t)):
            for i in order:
                if have[tag] >= shots:
                    break
                if i not in chosen_set and tag in examples[i].target:
                    chosen.append(i)
                    chosen_set.add(i)
                    have.update(examples[i].target)
        return sorted(chosen)
    return sorted(order[:shots])
