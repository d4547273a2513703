"""Metrics used by the downstream tasks.

Every metric here is a thin wrapper over a well-kept library (scikit-learn, jiwer, mir_eval,
scipy): this module only fixes the conventions the results depend on — how absent classes are
treated, corpus-level rather than per-utterance averaging, how key labels are spelled — so
that every task scores the same way and the numbers compare with published ones.
"""

from __future__ import annotations

import math
import re
import unicodedata
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import jiwer
import mir_eval.key
import numpy as np
from scipy import stats
from sklearn import metrics as skm
from sklearn.utils.multiclass import unique_labels

__all__ = [
    "KEY_LABELS",
    "METRIC_RANGES",
    "PairedDifference",
    "Summary",
    "accuracy",
    "char_error_rate",
    "macro_average_precision",
    "macro_f1",
    "macro_roc_auc",
    "mcnemar_exact",
    "paired_bootstrap",
    "mirex_key_score",
    "normalize_key",
    "regression_metrics",
    "summarize",
    "summarize_metric",
    "unweighted_average_recall",
    "word_error_rate",
]


# --------------------------------------------------------------------------- classification


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of exact matches (``sklearn.metrics.accuracy_score``)."""
    return float(skm.accuracy_score(y_true, y_pred))


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1, so rare classes count as much as frequent ones.

    ``labels`` fixes the classes averaged over; by default (scikit-learn's rule) that is every
    label seen in ``y_true`` or ``y_pred``. A class with no true and no predicted examples
    scores 0 (``zero_division=0``) rather than raising a warning and returning nan.
    """
    return float(
        skm.f1_score(
            y_true,
            y_pred,
            labels=None if labels is None else list(labels),
            average="macro",
            zero_division=0,
        )
    )


def unweighted_average_recall(
    y_true: Sequence, y_pred: Sequence, labels: Sequence[str] | None = None
) -> float:
    """UAR: mean per-class recall over the classes present in ``y_true``.

    The usual headline metric for emotion recognition (robust to class imbalance). Recall is
    undefined for a class with no true examples, so such classes — whether listed in
    ``labels`` or only predicted — are left out rather than counted as 0. With ``labels`` the
    mean is over ``labels`` ∩ classes in ``y_true``; when ``labels`` cover ``y_true`` (or are
    omitted) this equals ``sklearn.metrics.balanced_accuracy_score``.
    """
    present = unique_labels(y_true)
    if labels is not None:
        present_set = set(present.tolist())
        present = [label for label in labels if label in present_set]
    if len(present) == 0:
        raise ValueError("unweighted_average_recall: none of the labels occur in y_true")
    return float(
        skm.recall_score(y_true, y_pred, labels=list(present), average="macro", zero_division=0)
    )


# --------------------------------------------------------------------------- speech recognition


def _check_transcripts(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses"
        )
    if not references:
        raise ValueError("no transcripts to score")
    return references, hypotheses


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER: total word edits / total reference words (``jiwer.wer``).

    Corpus-level (not a mean of per-utterance rates) so long utterances weigh in proportion to
    their length, as in published ASR results. An empty hypothesis (a probe that emitted
    nothing) is valid and counts every reference word as a deletion. Text is compared as
    given, apart from jiwer's whitespace handling: normalise case and punctuation beforehand.
    """
    references, hypotheses = _check_transcripts(references, hypotheses)
    return float(jiwer.wer(references, hypotheses))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level CER: total character edits / total reference characters (``jiwer.cer``).

    Spaces count as characters. Empty hypotheses are valid, as for :func:`word_error_rate`.
    """
    references, hypotheses = _check_transcripts(references, hypotheses)
    return float(jiwer.cer(references, hypotheses))


# --------------------------------------------------------------------------- musical key

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

#: The 24 canonical key labels, majors then minors, each ascending from C; sharps are the
#: canonical spelling of black keys. Every key label in results uses one of these strings
#: (which are also valid ``mir_eval`` key strings).
KEY_LABELS: tuple[str, ...] = tuple(
    f"{tonic} {mode}" for mode in ("major", "minor") for tonic in _PITCH_CLASSES
)

_NATURAL_SEMITONE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTAL_SHIFT = {"": 0, "#": 1, "b": -1}
# Mode words are matched case-insensitively, except the bare suffix "m" (as in "C#m"), which
# must be lowercase: an uppercase "M" means major in chord notation, so it is rejected as
# ambiguous rather than guessed.
_MODE_WORDS = {"major": "major", "maj": "major", "minor": "minor", "min": "minor"}
_KEY_RE = re.compile(r"^([A-Ga-g])([#b]?)\s*(?::\s*)?([A-Za-z]*)$")


def normalize_key(label: str) -> str:
    """Map a key label in any common spelling to its canonical form in :data:`KEY_LABELS`.

    Datasets spell keys differently (GiantSteps "Eb major", mir_eval "C# minor", chord style
    "C#m"/"Cm", "A:minor", "F# min", "Bb maj", unicode "B♭ major"); comparing raw strings
    would score enharmonic or differently written equal keys as errors. The tonic is a letter
    A–G in either case with at most one accidental (``#``/``♯`` or ``b``/``♭``); the mode is
    major/maj, minor/min or a lowercase ``m`` suffix, optionally after a space or colon. A bare
    tonic ("E" or "e") is major. Enharmonic spellings map to the sharp form ("Db major" ->
    "C# major", "Cb major" -> "B major", "E# minor" -> "F minor").

    Raises ``ValueError`` for anything else, including mir_eval's unknown key "X".
    """
    if not isinstance(label, str):
        raise ValueError(f"unrecognised key label {label!r}: not a string")
    text = unicodedata.normalize("NFC", label).strip()
    text = text.replace("♯", "#").replace("♭", "b")
    text = re.sub(r"\s+", " ", text)
    match = _KEY_RE.match(text)
    if match is None:
        raise ValueError(f"unrecognised key label {label!r}")
    letter, accidental, mode_text = match.groups()
    if mode_text == "":
        mode = "major"
    elif mode_text == "m":
        mode = "minor"
    else:
        mode = _MODE_WORDS.get(mode_text.lower())
        if mode is None:
            raise ValueError(f"unrecognised key label {label!r}: unknown mode {mode_text!r}")
    semitone = (_NATURAL_SEMITONE[letter.upper()] + _ACCIDENTAL_SHIFT[accidental]) % 12
    return f"{_PITCH_CLASSES[semitone]} {mode}"


def mirex_key_score(references: Sequence[str], estimates: Sequence[str]) -> float:
    """Mean MIREX weighted key score (``mir_eval.key.weighted_score``) after :func:`normalize_key`.

    Per pair: same key 1.0, estimate a perfect fifth *above* the reference (same mode) 0.5,
    relative major/minor 0.3, parallel major/minor 0.2, anything else 0. Note the fifth is
    directional, as in MIREX: reference C major / estimate G major scores 0.5, the reverse 0.
    """
    references, estimates = list(references), list(estimates)
    if len(references) != len(estimates):
        raise ValueError(f"got {len(references)} references but {len(estimates)} estimates")
    if not references:
        raise ValueError("no keys to score")
    scores = [
        mir_eval.key.weighted_score(normalize_key(ref), normalize_key(est))
        for ref, est in zip(references, estimates)
    ]
    return float(np.mean(scores))


# --------------------------------------------------------------------------- multi-label tagging


def _scorable_columns(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a (N, C) binary target matrix and its scores; return the columns to average over."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if scores.ndim == 1:
        scores = scores[:, None]
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise ValueError(
            f"y_true and scores must be (N, C) arrays of the same shape, got {y_true.shape} and {scores.shape}"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must be a binary (0/1) indicator matrix")
    positives = y_true.sum(axis=0)
    keep = np.flatnonzero((positives > 0) & (positives < y_true.shape[0]))
    if keep.size == 0:
        raise ValueError("no class has both positive and negative examples in y_true")
    return y_true.astype(int), scores, keep


def macro_roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro ROC-AUC over the classes that have both positives and negatives in ``y_true``.

    ROC-AUC is undefined for a class that is all-positive or all-negative in the evaluation
    split (common for rare tags in small folds); such classes are skipped instead of making
    the whole metric fail, and ``ValueError`` is raised only if no class is scorable.
    Per-class values come from ``sklearn.metrics.roc_auc_score``. A 1-D input is one class.
    """
    y_true, scores, keep = _scorable_columns(y_true, scores)
    return float(np.mean([skm.roc_auc_score(y_true[:, c], scores[:, c]) for c in keep]))


def macro_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro average precision (PR-AUC), with the class-skipping rule of :func:`macro_roc_auc`.

    Per-class values come from ``sklearn.metrics.average_precision_score`` (step-wise, no
    interpolation).
    """
    y_true, scores, keep = _scorable_columns(y_true, scores)
    return float(np.mean([skm.average_precision_score(y_true[:, c], scores[:, c]) for c in keep]))


# --------------------------------------------------------------------------- regression


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """R², mean absolute error and Pearson correlation of predictions.

    ``r2`` and ``mae`` come from scikit-learn (R² of a constant ``y_true`` is 1.0 for perfect
    predictions and 0.0 otherwise, scikit-learn's ``force_finite`` rule). ``pearson`` comes
    from ``scipy.stats.pearsonr``; it is undefined when either input is constant (a collapsed
    probe predicting one value), and is reported as 0.0 — no linear relation — so that a
    summary over seeds stays finite.
    """
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"got {y_true.size} targets but {y_pred.size} predictions")
    if y_true.size < 2:
        raise ValueError("regression metrics need at least 2 examples")
    r2 = float(skm.r2_score(y_true, y_pred))
    mae = float(skm.mean_absolute_error(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson = float(stats.pearsonr(y_true, y_pred)[0])
    if math.isnan(pearson):
        pearson = 0.0
    return {"r2": r2, "mae": mae, "pearson": pearson}


# --------------------------------------------------------------------------- summaries over seeds


#: the values each metric can take; confidence intervals are clipped to them (a t interval
#: from two seeds near 1.0 would otherwise claim an accuracy above 1)
METRIC_RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, 1.0) for name in ("accuracy", "macro_f1", "uar", "roc_auc", "pr_auc", "map", "mirex")},
    "wer": (0.0, math.inf),
    "cer": (0.0, math.inf),
    "mae": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
    "pearson": (-1.0, 1.0),
}


@dataclass(frozen=True)
class Summary:
    """Mean of repeated runs (seeds, folds) with spread and a Student-t confidence interval.

    ``ci_low``/``ci_high`` are None when no interval can be computed (a single run);
    ``ci_note`` then says why, and says so too when the interval was clipped to the range.
    """

    mean: float
    std: float
    ci_low: float | None
    ci_high: float | None
    n: int
    ci_note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = 0.95,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> Summary:
    """Summarise a metric over runs: mean, sample std (ddof=1) and a two-sided t interval.

    A Student-t interval (``scipy.stats.t``, n-1 degrees of freedom) because the number of
    seeds is small and the spread is estimated from the same runs; it is clipped to
    ``bounds`` (the metric's range, :data:`METRIC_RANGES`). With a single run there is no
    spread to estimate: std is 0 and the interval is None ("not computable"). Runs that agree
    exactly give a zero-width interval.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = np.asarray(values, dtype=float).ravel()
    n = int(array.size)
    if n == 0:
        raise ValueError("cannot summarise an empty list of values")
    if not np.isfinite(array).all():
        raise ValueError("values must be finite")
    mean = float(array.mean())
    if n == 1:
        return Summary(mean=mean, std=0.0, ci_low=None, ci_high=None, n=1,
                       ci_note="not computable from a single run")
    std = float(array.std(ddof=1))
    if std == 0.0:
        return Summary(mean=mean, std=std, ci_low=mean, ci_high=mean, n=n)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    lo, hi = bounds
    note = ""
    if low < lo or high > hi:
        low, high = max(low, lo), min(high, hi)
        note = f"clipped to the metric's range [{lo:g}, {hi:g}]"
    return Summary(mean=mean, std=std, ci_low=float(low), ci_high=float(high), n=n, ci_note=note)


def summarize_metric(name: str, values: Sequence[float], confidence: float = 0.95) -> Summary:
    """:func:`summarize` with the interval kept inside ``name``'s range (unknown names: unbounded)."""
    return summarize(values, confidence, METRIC_RANGES.get(name, (-math.inf, math.inf)))


# --------------------------------------------------------------------------- paired comparisons


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-item difference a - b over the same test items, with a paired bootstrap interval."""

    difference: float
    ci_low: float
    ci_high: float
    items: int
    #: exact McNemar p-value on the discordant items (one seed, 0/1 scores), else None
    mcnemar_p: float | None = None

    @property
    def tied(self) -> bool:
        """True when the interval of the difference contains 0 (the two are within noise)."""
        return self.ci_low <= 0.0 <= self.ci_high

    def as_dict(self) -> dict:
        return {**asdict(self), "tied": self.tied}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int, resamples: int = 2000,
                     confidence: float = 0.95) -> PairedDifference:
    """Paired bootstrap of the mean difference between two systems scored on the same items.

    ``a`` and ``b`` are ``(seeds, items)`` (or ``(items,)``) per-item scores, e.g. 0/1
    correctness, column j being the same test item for both and row s the same seed (same
    few-shot subset). Items are resampled with replacement (all seeds of an item move
    together, since they share the item's difficulty); the statistic is the difference of the
    means over seeds and items. The interval is the percentile interval; seeded, so a report
    is reproducible. With a single seed and 0/1 scores the exact McNemar test is added.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[1] == 0:
        raise ValueError("no paired items")
    per_item = (a - b).mean(axis=0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, per_item.size, size=(resamples, per_item.size))
    means = per_item[draws].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    p = None
    if a.shape[0] == 1 and np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        p = mcnemar_exact(a[0].astype(int), b[0].astype(int))
    return PairedDifference(float(per_item.mean()), float(low), float(high), int(per_item.size), p)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the items exactly one system got right."""
    a_only = int(np.sum((a_correct == 1) & (b_correct == 0)))
    b_only = int(np.sum((a_correct == 0) & (b_correct == 1)))
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
