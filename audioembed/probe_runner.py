"""The probe runner: label encoding, one probe per fold, scores and per-item predictions.

Both ``audioembed downstream`` (``downstream.run_downstream``) and ``audioembed dsuperb eval``
(``dsuperb.evaluate``) train their probes through :func:`run_fold_loop`, so targets are encoded
once, every fold is trained and scored the same way, and every result carries the test items'
predictions that paired significance tests (``report``) need.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .fewshot import Fold
from .probes import (ProbeConfig, as_targets, centroid_scores, decode_ctc, knn_scores, probe_loss, train_ctc_probe,
                     train_utterance_probe)
from .tasks import Task, TaskKind

#: probes that learn nothing (classification only); their scores are similarities
PARAMETER_FREE_PROBES = ("centroid", "knn")
#: weight of the dev loss in the dev score of classification probes (a tie-breaker: on a
#: small dev part accuracy ties often, and one dev example more or less changes accuracy by
#: far more than this times any loss)
DEV_LOSS_TIE_BREAK = 1e-4


class EncodedTargets:
    """Targets of the kept examples in the form the probes and metrics need."""

    def __init__(self, kind: TaskKind, targets: Sequence, labels: list[str] | None):
        self.kind = kind
        self.labels = labels
        self.targets = list(targets)
        if kind is TaskKind.CLASSIFICATION:
            index = {lab: i for i, lab in enumerate(labels)}
            self.y = np.array([index[t] for t in self.targets])
            self.outputs = len(labels)
        elif kind is TaskKind.MULTILABEL:
            index = {lab: i for i, lab in enumerate(labels)}
            self.y = np.zeros((len(self.targets), len(labels)), dtype=np.float32)
            for row, tags in enumerate(self.targets):
                for tag in tags:
                    self.y[row, index[tag]] = 1.0
            self.outputs = len(labels)
        elif kind is TaskKind.REGRESSION:
            self.y = np.array(self.targets, dtype=np.float32)
            self.outputs = 1
        else:
            self.y = None
            self.outputs = 0

    def decode(self, outputs: np.ndarray) -> tuple[list, np.ndarray | None]:
        """Probe outputs -> (predictions in target form, per-class scores)."""
        if self.kind is TaskKind.CLASSIFICATION:
            scores = torch.from_numpy(outputs).float().softmax(-1).numpy()
            return [self.labels[i] for i in outputs.argmax(-1)], scores
        if self.kind is TaskKind.MULTILABEL:
            scores = 1.0 / (1.0 + np.exp(-outputs))
            return [tuple(self.labels[j] for j in np.flatnonzero(row >= 0.5)) for row in scores], scores
        return [float(v) for v in outputs.reshape(-1)], None


def drop_non_finite(ids: Sequence[str], feats: Sequence[np.ndarray]) -> tuple[list[int], list[str]]:
    """Indices of the examples whose features are all finite, and one problem line per other one.

    A single NaN or Inf poisons a probe (layer weights turn NaN, every prediction becomes one
    class), so such utterances are left out by name rather than trained on.
    """
    kept, problems = [], []
    for i, (item, x) in enumerate(zip(ids, feats)):
        finite = np.isfinite(x)
        if finite.all():
            kept.append(i)
        else:
            problems.append(f"{item}: {int((~finite).sum())} non-finite feature value(s) (NaN/Inf); left out")
    return kept, problems


@dataclass
class FoldOutcome:
    """What one probe on one fold produced."""

    metrics: dict[str, float]
    layer_weights: list[float] | None
    epoch: int
    #: predictions on the fold's test items, in target form (label, tag tuple, text, number)
    predictions: list = field(default_factory=list)
    #: the weight decay chosen on dev (linear probe fitted by L-BFGS), else None
    weight_decay: float | None = None
    #: whether another seed could give another outcome on the same train/dev/test rows (False:
    #: parameter-free probes, and the L-BFGS linear probe without seeded cross-validation)
    seed_dependent: bool = True


def primary_score(task: Task, metrics: dict) -> float:
    """The task's primary metric, higher is better."""
    value = metrics[task.primary_metric]
    return -value if task.primary_metric in task.lower_is_better else value


def rows(feats: Sequence[np.ndarray], index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Training rows ``(R, L, D)`` of the examples in ``index`` (one per chunk) and each row's example."""
    x = np.concatenate([feats[i].transpose(1, 0, 2) for i in index]).astype(np.float32)
    owner = np.concatenate([np.full(feats[i].shape[1], j) for j, i in enumerate(index)])
    return x, owner


def per_clip(outputs: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Clip-level outputs: the mean of its chunks' outputs (logits)."""
    return np.stack([outputs[owner == j].mean(axis=0) for j in range(count)])


def fit_and_score(task: Task, encoded: EncodedTargets, feats: Sequence[np.ndarray], layers: Sequence[int],
                  train: Sequence[int], dev: Sequence[int], test: Sequence[int], config: ProbeConfig,
                  seed: int, few_shot: bool = False) -> FoldOutcome:
    """Train on ``train``, select on ``dev``, score on ``test``.

    ``few_shot``: ``train`` is a K-shot subset; the probe then learns from those examples
    only (dev labels select settings, never train), or it would not be a K-shot probe.

    ``feats[i]`` is ``(L, rows, D)`` (one row per chunk, 1 when pooled) for utterance tasks and
    ``(L, T, D)`` frames for CTC.
    """
    test_targets = [encoded.targets[i] for i in test]
    dev_targets = [encoded.targets[i] for i in dev]
    if task.kind is TaskKind.CTC:
        def ctc_dev_score(texts):
            # Early stopping on CER when the task has it: while most words are still wrong a
            # probe's WER sits near 1 and cannot tell its epochs apart; CER can.
            metrics = task.metrics(dev_targets, texts, None, None)
            return -metrics["cer"] if "cer" in metrics else primary_score(task, metrics)

        model, vocab, epoch = train_ctc_probe(
            layers, [feats[i] for i in train], [encoded.targets[i] for i in train], [feats[i] for i in dev],
            ctc_dev_score, config, seed,
        )
        texts = decode_ctc(model, vocab, [feats[i] for i in test])
        return FoldOutcome(task.metrics(test_targets, texts, None, None), model.featurizer.layer_weights(), epoch,
                           texts)

    x_train, owner_train = rows(feats, train)
    x_test, owner_test = rows(feats, test)
    if config.probe in PARAMETER_FREE_PROBES:
        score = centroid_scores if config.probe == "centroid" else knn_scores
        sims = score(x_train, encoded.y[train][owner_train], x_test, encoded.outputs)
        clip = per_clip(np.where(np.isfinite(sims), sims * 10.0, -1e9), owner_test, len(test))
        preds, scores = encoded.decode(clip)
        return FoldOutcome(task.metrics(test_targets, preds, scores, encoded.labels), None, 0, preds,
                           seed_dependent=False)

    x_dev, owner_dev = rows(feats, dev)

    def dev_score(outputs):
        clip = per_clip(outputs, owner_dev, len(dev))
        preds, scores = encoded.decode(clip)
        loss = float(probe_loss(task.kind, torch.from_numpy(clip), as_targets(task.kind, encoded.y[dev])))
        try:
            score = primary_score(task, task.metrics(dev_targets, preds, scores, encoded.labels))
        except (ValueError, KeyError):  # a metric undefined on a tiny dev set: fall back to the dev loss
            return -loss
        if task.kind is TaskKind.CLASSIFICATION:
            score -= DEV_LOSS_TIE_BREAK * min(loss, 100.0)
        return score

    model, epoch = train_utterance_probe(
        task.kind, layers, x_train, encoded.y[train][owner_train], x_dev, dev_score, encoded.outputs, config, seed,
        y_dev=encoded.y[dev][owner_dev], rows_are_examples=len(x_train) == len(train) and len(x_dev) == len(dev),
        refit_with_dev=not few_shot,
    )
    with torch.no_grad():
        outputs = model(torch.from_numpy(x_test)).numpy()
    preds, scores = encoded.decode(per_clip(outputs, owner_test, len(test)))
    return FoldOutcome(task.metrics(test_targets, preds, scores, encoded.labels), model.featurizer.layer_weights(),
                       epoch, preds, model.selected_weight_decay, seed_dependent=model.seed_dependent)


@dataclass
class SeedRun:
    """One seed over every fold: per-fold outcomes, the drawn subsets and per-item predictions."""

    seed: int
    outcomes: list[FoldOutcome]
    subsets: dict[str, list[int]]

    def mean_metrics(self) -> dict[str, float]:
        names = [m for m in self.outcomes[0].metrics]
        names += [m for o in self.outcomes for m in o.metrics if m not in names]
        out = {}
        for name in names:
            values = [o.metrics[name] for o in self.outcomes if name in o.metrics]
            out[name] = float(np.mean(values))
        return out


def run_fold_loop(folds: Sequence[Fold], seed: int, subset_of: Callable[[Fold, int], list[int]],
                  fit: Callable[[Sequence[int], Sequence[int], Sequence[int], int], FoldOutcome]) -> SeedRun:
    """Every fold once for ``seed``: ``subset_of(fold, index)`` picks the training subset,
    ``fit(train, dev, test, index)`` trains (seeded by the caller) and scores."""
    outcomes, subsets = [], {}
    for index, fold in enumerate(folds):
        subset = subset_of(fold, index)
        subsets[fold.name] = list(subset)
        outcomes.append(fit(subset, fold.dev, fold.test, index))
    return SeedRun(seed, outcomes, subsets)


def _comparable(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def per_item_predictions(folds: Sequence[Fold], run: SeedRun, ids: Sequence[str], targets: Sequence) -> dict:
    """``{"ids": [...], "predictions": [...], "correct": [...]}`` over every fold's test items.

    ``correct`` (exact match, 0/1) is what paired tests compare between upstreams; it is given
    for label, tag-set and transcript targets, not for numbers (regression)."""
    item_ids, preds, correct = [], [], []
    for fold, outcome in zip(folds, run.outcomes):
        for i, pred in zip(fold.test, outcome.predictions):
            item_ids.append(ids[i])
            preds.append(list(pred) if isinstance(pred, tuple) else pred)
            truth = targets[i]
            if isinstance(truth, (str, tuple, list)):
                correct.append(int(_comparable(pred) == _comparable(truth)))
    out = {"ids": item_ids, "predictions": preds}
    if len(correct) == len(item_ids):
        out["correct"] = correct
    return out


def split_warnings(kind: TaskKind, folds: Sequence[Fold], targets: Sequence) -> list[str]:
    """Warnings about the split that make a score hard to trust (classification tasks).

    A class with one example cannot be both learned and tested; a class present in a test part
    but absent from its training part can only be scored as an error. (Few-shot subsets are
    drawn per class from the training part, so they miss the same classes.)"""
    if kind is not TaskKind.CLASSIFICATION:
        return []
    warnings = []
    counts = Counter(targets)
    single = sorted(str(c) for c, n in counts.items() if n == 1)
    if single:
        warnings.append(f"{len(single)} class(es) with a single example: {', '.join(single[:10])}")
    for fold in folds:
        seen = {targets[i] for i in fold.train}
        unseen = sorted({str(targets[i]) for i in fold.test} - {str(t) for t in seen})
        if unseen:
            warnings.append(f"{fold.name}: label(s) only in the test part, never in training: {', '.join(unseen[:10])}")
    return warnings


def seed_warning(seeds: int) -> str | None:
    if seeds <= 2:
        return (f"only {seeds} seed(s): the spread over seeds says little"
                + (" and no confidence interval can be computed" if seeds == 1 else
                   "; the confidence interval is very wide"))
    return None
