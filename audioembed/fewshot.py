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

SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test", "eval": "test"}


@dataclass(frozen=True)
class Fold:
    name: str
    train: list[int]
    dev: list[int]
    test: list[int]


def _strat_label(example: Example, kind: TaskKind) -> str:
    if kind is TaskKind.CLASSIFICATION:
        return str(example.target)
    if kind is TaskKind.MULTILABEL and example.target:
        return sorted(example.target)[0]
    return "_"


def make_folds(examples: Sequence[Example], kind: TaskKind, num_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Dataset splits when the dataset has them, else stratified (group-aware) k-fold.

    With k-fold, fold i tests on part i, early-stops on part i+1 and trains on the rest;
    parts keep groups (speakers) apart whenever groups are known.
    """
    splits = [SPLIT_ALIASES.get((e.split or "").lower()) for e in examples]
    if any(splits):
        by = defaultdict(list)
        for i, s in enumerate(splits):
            by[s or "train"].append(i)
        train, dev, test = by["train"], by["dev"], by["test"]
        if not test:
            raise ValueError("the dataset defines splits but no test split")
        if not dev:
            train, dev = _carve_dev(examples, train, kind, seed)
        return [Fold("split", train, dev, test)]
    labels = [_strat_label(e, kind) for e in examples]
    groups = [e.group for e in examples]
    index = np.arange(len(examples))
    counts = Counter(labels)
    k = max(3, min(num_folds, len(examples)))
    # classes rarer than k cannot be stratified; stratify on the rest
    strat = [lab if counts[lab] >= k else "_rare" for lab in labels]
    if all(g is not None for g in groups) and len(set(groups)) >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = [test for _, test in splitter.split(index, strat, groups)]
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = [test for _, test in splitter.split(index, strat)]
    folds = []
    for i in range(k):
        test = sorted(parts[i].tolist())
        dev = sorted(parts[(i + 1) % k].tolist())
        train = sorted(j for p in range(k) if p not in (i, (i + 1) % k) for j in parts[p].tolist())
        folds.append(Fold(f"fold{i}", train, dev, test))
    return folds


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
