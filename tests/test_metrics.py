"""Metrics against values worked out by hand on small fixed predictions."""

from __future__ import annotations

import math
import warnings

import mir_eval.key
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from audioembed.metrics import (
    KEY_LABELS,
    Summary,
    accuracy,
    char_error_rate,
    macro_average_precision,
    macro_f1,
    macro_roc_auc,
    mirex_key_score,
    normalize_key,
    regression_metrics,
    summarize,
    summarize_metric,
    unweighted_average_recall,
    word_error_rate,
)

# --------------------------------------------------------------------------- classification

# Fixed confusion:   idx    0  1  2  3  4  5
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]
#   a: TP=2 (0,1)  FP=0      FN=1 (2)  -> P=1    R=2/3  F1=2*1*(2/3)/(1+2/3) = 0.8
#   b: TP=1 (3)    FP=1 (2)  FN=1 (4)  -> P=1/2  R=1/2  F1=1/2
#   c: TP=1 (5)    FP=1 (4)  FN=0      -> P=1/2  R=1    F1=2*(1/2)*1/(3/2) = 2/3


def test_accuracy_by_hand():
    # correct at 0, 1, 3, 5 -> 4 / 6
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert accuracy(["x"], ["x"]) == 1.0


def test_macro_f1_by_hand():
    # (0.8 + 0.5 + 2/3) / 3 = 1.96667 / 3 = 0.65556
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # an explicit label never seen in y_true or y_pred contributes F1 = 0 (zero_division=0)
    # (0.8 + 0.5 + 2/3 + 0) / 4 = 0.49167
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0 must not warn
        assert macro_f1(Y_TRUE, Y_PRED, labels=["a", "b", "c", "d"]) == pytest.approx(
            (0.8 + 0.5 + 2 / 3) / 4
        )
    # restricting labels averages over those only: (0.8 + 0.5) / 2
    assert macro_f1(Y_TRUE, Y_PRED, labels=["a", "b"]) == pytest.approx(0.65)


def test_unweighted_average_recall_by_hand():
    # (2/3 + 1/2 + 1) / 3 = (13/6) / 3 = 13/18 = 0.72222
    assert unweighted_average_recall(Y_TRUE, Y_PRED) == pytest.approx(13 / 18)
    assert unweighted_average_recall(Y_TRUE, Y_PRED) == pytest.approx(
        balanced_accuracy_score(Y_TRUE, Y_PRED)
    )
    # a listed class absent from y_true ("d") is skipped, not counted as recall 0
    assert unweighted_average_recall(Y_TRUE, Y_PRED, labels=["a", "b", "c", "d"]) == pytest.approx(13 / 18)
    # subset of labels: (2/3 + 1/2) / 2 = 7/12
    assert unweighted_average_recall(Y_TRUE, Y_PRED, labels=["a", "b"]) == pytest.approx(7 / 12)
    # a class that is only predicted does not enter the mean either:
    # true [a, a, b], pred [a, z, b] -> recall a = 1/2, b = 1 -> 3/4
    assert unweighted_average_recall(["a", "a", "b"], ["a", "z", "b"]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        unweighted_average_recall(Y_TRUE, Y_PRED, labels=["d"])


# --------------------------------------------------------------------------- WER / CER


def test_word_error_rate_by_hand():
    # "the cat sat" -> "the cat sit on": sat->sit (1 sub) + "on" (1 ins) = 2 edits / 3 words
    assert word_error_rate(["the cat sat"], ["the cat sit on"]) == pytest.approx(2 / 3)
    assert word_error_rate(["the cat sat"], ["the cat sat"]) == 0.0


def test_word_error_rate_is_corpus_level_and_accepts_empty_hypotheses():
    # utt 1: empty hypothesis -> 3 deletions; utt 2: perfect.
    # corpus: 3 edits / (3 + 2) words = 0.6   (mean of per-utterance rates would be 0.5)
    assert word_error_rate(["the cat sat", "a b"], ["", "a b"]) == pytest.approx(0.6)
    # all-empty hypotheses delete everything: 2 / 2
    assert word_error_rate(["a b"], [""]) == pytest.approx(1.0)


def test_char_error_rate_by_hand():
    # "the cat sat" (11 chars incl. spaces) -> "the cat sit on":
    # a->i (1 sub) + " on" (3 ins) = 4 / 11
    assert char_error_rate(["the cat sat"], ["the cat sit on"]) == pytest.approx(4 / 11)
    # corpus: "abc"->"abd" 1 sub, "de"->"" 2 del -> 3 / (3 + 2) = 0.6
    assert char_error_rate(["abc", "de"], ["abd", ""]) == pytest.approx(0.6)


def test_transcript_length_mismatch_and_empty_raise():
    with pytest.raises(ValueError):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        char_error_rate([], [])


# --------------------------------------------------------------------------- keys


def test_key_labels_fixed_order():
    assert len(KEY_LABELS) == 24 and len(set(KEY_LABELS)) == 24
    assert KEY_LABELS[:3] == ("C major", "C# major", "D major")
    assert KEY_LABELS[11] == "B major"
    assert KEY_LABELS[12] == "C minor"
    assert KEY_LABELS[-1] == "B minor"
    for label in KEY_LABELS:
        assert normalize_key(label) == label  # canonical labels are fixed points
        mir_eval.key.validate_key(label)  # and valid mir_eval key strings


@pytest.mark.parametrize(
    "label, expected",
    [
        ("C major", "C major"),
        ("c minor", "C minor"),
        ("Db major", "C# major"),
        ("C#m", "C# minor"),
        ("Cm", "C minor"),
        ("F# min", "F# minor"),
        ("Bb maj", "A# major"),
        ("A:minor", "A minor"),
        ("a:min", "A minor"),
        ("E", "E major"),  # bare tonic is major ...
        ("e", "E major"),  # ... in either case
        ("Cb major", "B major"),  # wraps below C
        ("E# minor", "F minor"),
        ("B# major", "C major"),  # wraps above B
        ("Fb minor", "E minor"),
        ("B♭ major", "A# major"),  # unicode flat
        ("F♯ minor", "F# minor"),  # unicode sharp
        ("Eb major", "D# major"),  # GiantSteps style
        ("C# minor", "C# minor"),  # mir_eval style
        ("Gb Major", "F# major"),
        ("ab MINOR", "G# minor"),
        ("bb", "A# major"),  # lowercase b tonic with flat
        ("Bbm", "A# minor"),
        ("  D   minor \n", "D minor"),  # stray whitespace
        ("G : maj", "G major"),
    ],
)
def test_normalize_key_spellings(label, expected):
    assert normalize_key(label) == expected


@pytest.mark.parametrize(
    "label",
    ["", "   ", "H major", "C dorian", "X", "C##", "C major minor", "major", "CM", "B- major",
     "C maj7", "Cmb", "#C"],
)
def test_normalize_key_rejects(label):
    with pytest.raises(ValueError, match="unrecognised key label"):
        normalize_key(label)


def test_normalize_key_rejects_non_strings():
    with pytest.raises(ValueError, match="unrecognised key label"):
        normalize_key(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reference, estimate, expected",
    [
        ("C major", "G major", 0.5),  # estimate a fifth above (C -> G = 7 semitones)
        ("G major", "C major", 0.0),  # a fifth below is not credited (MIREX/mir_eval rule)
        ("A minor", "C major", 0.3),  # relative major
        ("C major", "A minor", 0.3),  # relative minor
        ("C minor", "C major", 0.2),  # parallel
        ("C major", "F# major", 0.0),  # tritone: unrelated
        ("Db major", "C# major", 1.0),  # enharmonic spellings are the same key
        ("A:min", "Cmaj", 0.3),  # mixed spellings normalised before scoring
    ],
)
def test_mirex_key_score_pairs(reference, estimate, expected):
    assert mirex_key_score([reference], [estimate]) == pytest.approx(expected)


def test_mirex_key_score_mean_over_list():
    refs = ["Db major", "C major", "A minor", "C minor", "C major"]
    ests = ["C# major", "G major", "C major", "C major", "F# major"]
    # (1.0 + 0.5 + 0.3 + 0.2 + 0.0) / 5 = 2.0 / 5 = 0.4
    assert mirex_key_score(refs, ests) == pytest.approx(0.4)


def test_mirex_key_score_errors():
    with pytest.raises(ValueError):
        mirex_key_score(["C major"], [])
    with pytest.raises(ValueError):
        mirex_key_score([], [])
    with pytest.raises(ValueError, match="unrecognised key label"):
        mirex_key_score(["C major"], ["X"])


# --------------------------------------------------------------------------- tagging

# class 0: labels [0,0,1,1], scores [0.1,0.4,0.35,0.8]
#   ROC-AUC = fraction of (pos, neg) pairs ranked right:
#     0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes  -> 3/4 = 0.75
#   AP: ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-) -> precision at the hits 1/1, 2/3
#     AP = 0.5*1 + 0.5*(2/3) = 5/6 = 0.83333
# class 1: labels [1,0,1,0], scores [0.9,0.2,0.8,0.7]
#   both positives (0.9, 0.8) above both negatives (0.7, 0.2) -> ROC-AUC 1.0, AP 1.0
# class 2: all negative -> skipped; class 3: all positive -> skipped
Y_TAGS = np.array(
    [
        [0, 1, 0, 1],
        [0, 0, 0, 1],
        [1, 1, 0, 1],
        [1, 0, 0, 1],
    ]
)
S_TAGS = np.array(
    [
        [0.10, 0.9, 0.3, 0.2],
        [0.40, 0.2, 0.1, 0.9],
        [0.35, 0.8, 0.7, 0.4],
        [0.80, 0.7, 0.2, 0.1],
    ]
)


def test_macro_roc_auc_by_hand():
    assert macro_roc_auc(Y_TAGS[:, :1], S_TAGS[:, :1]) == pytest.approx(0.75)
    assert macro_roc_auc(Y_TAGS[:, 0], S_TAGS[:, 0]) == pytest.approx(0.75)  # 1-D = one class
    # classes 2 and 3 skipped: (0.75 + 1.0) / 2 = 0.875
    assert macro_roc_auc(Y_TAGS, S_TAGS) == pytest.approx(0.875)
    # ties count half: one positive and one negative with equal scores -> 0.5
    assert macro_roc_auc(np.array([[0], [1]]), np.array([[0.5], [0.5]])) == pytest.approx(0.5)


def test_macro_average_precision_by_hand():
    assert macro_average_precision(Y_TAGS[:, :1], S_TAGS[:, :1]) == pytest.approx(5 / 6)
    # (5/6 + 1.0) / 2 = 11/12 = 0.91667 (classes 2 and 3 skipped)
    assert macro_average_precision(Y_TAGS, S_TAGS) == pytest.approx(11 / 12)


def test_tagging_metrics_errors():
    only_unscorable = Y_TAGS[:, 2:]
    for metric in (macro_roc_auc, macro_average_precision):
        with pytest.raises(ValueError, match="both positive and negative"):
            metric(only_unscorable, S_TAGS[:, 2:])
        with pytest.raises(ValueError, match="same shape"):
            metric(Y_TAGS, S_TAGS[:, :3])
        with pytest.raises(ValueError, match="binary"):
            metric(Y_TAGS * 2, S_TAGS)


# --------------------------------------------------------------------------- regression


def test_regression_metrics_by_hand():
    # y = [1,2,3,4], p = [1,3,3,5]; errors 0,1,0,1 -> MAE 0.5
    # SS_res = 0+1+0+1 = 2; mean(y) = 2.5, SS_tot = 2.25+0.25+0.25+2.25 = 5 -> R2 = 1 - 2/5 = 0.6
    # Pearson: dy = [-1.5,-.5,.5,1.5], dp = [-2,0,0,2]; sum(dy*dp) = 6, Syy = 5, Spp = 8
    #   r = 6 / sqrt(5*8) = 0.948683
    out = regression_metrics([1, 2, 3, 4], [1, 3, 3, 5])
    assert set(out) == {"r2", "mae", "pearson"}
    assert out["r2"] == pytest.approx(0.6)
    assert out["mae"] == pytest.approx(0.5)
    assert out["pearson"] == pytest.approx(6 / math.sqrt(40))


def test_regression_metrics_constant_prediction_gives_zero_pearson():
    # p = [2,2,2,2]: |errors| 1,0,1,2 -> MAE 1.0; SS_res = 1+0+1+4 = 6 -> R2 = 1 - 6/5 = -0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant-input warning is handled, not leaked
        out = regression_metrics([1, 2, 3, 4], [2, 2, 2, 2])
    assert out["pearson"] == 0.0
    assert out["mae"] == pytest.approx(1.0)
    assert out["r2"] == pytest.approx(-0.2)


def test_regression_metrics_errors():
    with pytest.raises(ValueError):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        regression_metrics([1], [1])


# --------------------------------------------------------------------------- summaries


def test_summarize_by_hand():
    # [1..5]: mean 3; sample var = (4+1+0+1+4)/4 = 2.5, std = 1.58114
    # se = 1.58114/sqrt(5) = 0.707107; t(0.975, df=4) = 2.776445 -> half-width 1.963243
    s = summarize([1, 2, 3, 4, 5])
    assert isinstance(s, Summary) and s.n == 5
    assert s.mean == pytest.approx(3.0)
    assert s.std == pytest.approx(1.5811388, abs=1e-6)
    assert s.ci_low == pytest.approx(3 - 1.963243, abs=1e-5)
    assert s.ci_high == pytest.approx(3 + 1.963243, abs=1e-5)
    # 90%: t(0.95, df=4) = 2.131847 -> half-width 0.707107 * 2.131847 = 1.507443
    s90 = summarize([1, 2, 3, 4, 5], confidence=0.90)
    assert s90.ci_high - s90.mean == pytest.approx(1.507443, abs=1e-5)


def test_summarize_single_value_and_no_spread():
    s = summarize([0.7])
    assert (s.mean, s.std, s.ci_low, s.ci_high, s.n) == (0.7, 0.0, None, None, 1)
    assert "not computable" in s.ci_note
    s = summarize([2.0, 2.0, 2.0])
    assert (s.std, s.ci_low, s.ci_high) == (0.0, 2.0, 2.0)


def test_summary_as_dict_and_frozen():
    s = summarize([1, 2, 3, 4, 5])
    d = s.as_dict()
    assert list(d) == ["mean", "std", "ci_low", "ci_high", "n", "ci_note"]
    assert d["mean"] == pytest.approx(3.0) and d["n"] == 5
    with pytest.raises(AttributeError):
        s.mean = 0.0  # type: ignore[misc]


def test_summarize_errors():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], confidence=1.0)


def test_interval_stays_inside_the_metric_range():
    # two seeds near the ceiling: the raw t interval (df=1) reaches far above 1.0
    s = summarize_metric("accuracy", [0.97, 1.0])
    assert 0.0 <= s.ci_low <= s.mean <= s.ci_high <= 1.0
    assert s.ci_high == 1.0 and "clipped" in s.ci_note
    raw = summarize([0.97, 1.0])
    assert raw.ci_high > 1.0 and raw.ci_note == ""
    # lower-bounded error rates
    assert summarize_metric("wer", [0.01, 0.3]).ci_low == 0.0
    assert summarize_metric("pearson", [-0.99, 0.2]).ci_low >= -1.0
