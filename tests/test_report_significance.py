"""`audioembed report` marks which upstreams are within noise of the best (paired tests)."""

from __future__ import annotations

import numpy as np

from audioembed.metrics import mcnemar_exact, paired_bootstrap
from audioembed.report import compare_to_best, summary_table


def _result(upstream: str, correct: np.ndarray, protocol: str = "stratified k-fold (k=5)", pooling: str = "mean"):
    """A classification result file whose seeds s got the items right where correct[s] is 1."""
    ids = [f"item{i:03d}" for i in range(correct.shape[1])]
    per_seed = [{"seed": s, "metrics": {"accuracy": float(row.mean())},
                 "test_items": {"ids": ids, "predictions": ["x"] * len(ids), "correct": row.tolist()}}
                for s, row in enumerate(correct)]
    acc = [float(row.mean()) for row in correct]
    summary = {"accuracy": {"mean": float(np.mean(acc)), "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                            "ci_low": None, "ci_high": None, "n": len(acc), "ci_note": ""}}
    return {"task": "classify", "task_kind": "classification", "upstream": upstream, "model": None,
            "primary_metric": "accuracy", "lower_is_better": [], "config": {"probe": "linear"},
            "protocol": {"split": protocol, "pooling": pooling},
            "results": {"all": {"summary": summary, "per_seed": per_seed}}}


def test_paired_bootstrap_and_mcnemar_by_hand():
    a = np.array([1] * 30 + [0] * 10)
    b = np.array([1] * 20 + [0] * 20)
    d = paired_bootstrap(a, b, seed=0)
    assert d.difference == 0.25 and d.ci_low > 0 and not d.tied
    assert d.mcnemar_p == mcnemar_exact(a, b)
    # 10 discordant items, all for a: p = 2 * 0.5**10
    assert abs(d.mcnemar_p - 2 * 0.5 ** 10) < 1e-12
    assert paired_bootstrap(a, b, seed=0) == d  # seeded
    assert paired_bootstrap(a, a, seed=0).tied


def test_report_marks_ties_and_differences_with_intervals():
    rng = np.random.default_rng(0)
    strong = (rng.random((3, 300)) < 0.9).astype(int)
    near = strong.copy()
    for row in near:  # differs from the best on 8 items per seed, half each way: a tie
        row[np.flatnonzero(row == 1)[:4]] = 0
        row[np.flatnonzero(row == 0)[-4:]] = 1
    weak = (rng.random((3, 300)) < 0.5).astype(int)
    results = [_result("strong", strong), _result("near", near), _result("weak", weak)]
    entries = {r["upstream"]: (r, r["results"]["all"]) for r in results}
    best, compared = compare_to_best("classify", entries)
    assert best == "strong" or best == "near"
    other = "near" if best == "strong" else "strong"
    assert compared[other]["tied"] and compared[other]["ci_low"] <= 0 <= compared[other]["ci_high"]
    assert not compared["weak"]["tied"] and compared["weak"]["ci_high"] < 0
    text = summary_table(results)
    assert "≈ " in text and "**" in text
    assert "weak − " in text and ": different" in text and ": within noise" in text
    assert "McNemar" not in text  # three seeds: bootstrap only


def test_single_split_gets_mcnemar_and_mismatched_protocols_are_not_paired():
    rng = np.random.default_rng(1)
    a = (rng.random((1, 200)) < 0.8).astype(int)
    b = (rng.random((1, 200)) < 0.6).astype(int)
    text = summary_table([_result("a", a, "given test split"), _result("b", b, "given test split")])
    assert "McNemar p = " in text
    text = summary_table([_result("a", a, "given test split"), _result("b", b, "group k-fold (k=5, by group)")])
    assert "different split protocols" in text


def test_fewshot_plot_with_a_single_seed(tmp_path):
    """One seed: no interval is computable; the curve is drawn without error bars."""
    from audioembed.report import plot_fewshot_curves

    result = _result("a", np.ones((1, 10), dtype=int))
    block = result["results"]["all"]
    result["results"] = {"2": block, "all": block}
    assert plot_fewshot_curves([result], "classify", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
