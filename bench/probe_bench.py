#!/usr/bin/env python
"""The linear probe against scikit-learn's LogisticRegression on the same pooled features.

For each real set in the shared data folder (FSDD digits, FSDD speakers, Sonic Pi sample
families), MFCC features (``mfcc`` upstream, pooled ``mean`` and ``mean+std``) are split by the
runner's own protocol (``fewshot.make_folds``). On every fold:

- the toolkit's ``linear`` probe (``probe_runner.fit_and_score``: weight decay chosen on the
  dev part, or by cross-validation on train + dev for small sets), over ``--seeds`` seeds;
- the reference: ``StandardScaler`` + ``LogisticRegression`` (lbfgs), C chosen by 5-fold
  cross-validation on the same training and dev parts together (``LogisticRegressionCV``),
  deterministic.

Both are scored on the same test items. The gap is the probe's mean accuracy minus the
reference's, with a 95 % paired bootstrap interval over the test items (seeds of an item kept
together, ``metrics.paired_bootstrap``); "not worse beyond noise" means the interval reaches 0
or above. Usage::

    python bench/probe_bench.py [--data /work/shared/data] [--seeds 3] [--out docs/benchmarks/probe_bench.md]

Runs on one CPU thread (a few minutes). This is a script, not a test; it writes its own
Markdown file wholly from the measured numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/shared/data")
SONIC_FAMILIES = ("tabla", "elec", "drum", "loop", "bd", "mehackit", "ambi", "perc", "bass", "glitch")


def sonic_pi_manifest(root: Path, out: Path) -> Path:
    """A manifest of the Sonic Pi one-shots whose name prefix is a family with >= 8 files."""
    rows = ["path,label"]
    for path in sorted(root.iterdir()):
        family = path.name.split("_")[0]
        if path.suffix.lower() in (".flac", ".wav") and family in SONIC_FAMILIES:
            rows.append(f"{path},{family}")
    out.write_text("\n".join(rows) + "\n")
    return out


def sets(data: Path, work: Path) -> list[tuple[str, str, Path, dict]]:
    fsdd = data / "fsdd" / "labels.csv"
    return [
        ("FSDD digits", "classify", fsdd, {"label_column": "digit", "group_column": ""}),
        ("FSDD speakers", "speaker_id", fsdd, {"label_column": "speaker"}),
        ("Sonic Pi families", "classify", sonic_pi_manifest(data / "sonic_pi", work / "sonic_pi.csv"),
         {"label_column": "label"}),
    ]


def reference_predictions(x_train, y_train, x_test, seed: int) -> tuple[np.ndarray, float]:
    """StandardScaler + LogisticRegressionCV (C by 5-fold CV on the training data); predictions and C."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y_train)
    folds = int(min(5, counts[counts > 0].min()))
    cv = StratifiedKFold(n_splits=max(2, folds), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 3, 13), cv=cv, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_train, y_train)
    return model.predict(x_test), float(model[-1].C_[0])


def run_set(name, task_name, manifest, options, pooling, seeds, cache_dir, log):
    from audioembed.feature_cache import cached_features
    from audioembed.metrics import paired_bootstrap
    from audioembed.fewshot import make_folds
    from audioembed.probe_runner import EncodedTargets, drop_non_finite, fit_and_score
    from audioembed.probes import ProbeConfig
    from audioembed.registry import get_registry, load_upstream

    task = get_registry().task_spec(task_name).build()
    data = task.load(manifest, task.resolve_options(options))
    upstream = load_upstream("mfcc", device="cpu")
    reader, keys, _ = cached_features(upstream, [e.path for e in data.examples], pooling=pooling,
                                      cache_dir=cache_dir, dtype="float32", device="cpu", progress=False)
    with reader:
        examples = [e for e in data.examples if keys[e.path] in reader]
        feats = [np.atleast_2d(reader.get(keys[e.path], 0))[None] for e in examples]
    kept, _ = drop_non_finite([e.id for e in examples], feats)
    examples, feats = [examples[i] for i in kept], [feats[i] for i in kept]
    labels = sorted({e.target for e in examples})
    encoded = EncodedTargets(task.kind, [e.target for e in examples], labels)
    plan = make_folds(examples, task.kind, 5, seed=0)
    flat = np.concatenate(feats).reshape(len(feats), -1)
    probe_acc = np.zeros((seeds, len(plan.folds)))
    probe_correct: list[list[int]] = [[] for _ in range(seeds)]
    ref_correct: list[int] = []
    probe_seconds = 0.0
    ref_acc, ref_c, ref_seconds = [], [], 0.0
    config = ProbeConfig(probe="linear")
    for f, fold in enumerate(plan.folds):
        truth = [encoded.targets[i] for i in fold.test]
        t0 = time.process_time()
        for seed in range(seeds):
            outcome = fit_and_score(task, encoded, feats, [0], fold.train, fold.dev, fold.test, config, seed)
            probe_acc[seed, f] = outcome.metrics["accuracy"]
            probe_correct[seed] += [int(p == t) for p, t in zip(outcome.predictions, truth)]
        probe_seconds += time.process_time() - t0
        t0 = time.process_time()
        fit_rows = fold.train + fold.dev
        predicted, c = reference_predictions(flat[fit_rows], encoded.y[fit_rows], flat[fold.test], seed=0)
        ref_seconds += time.process_time() - t0
        hits = (predicted == encoded.y[fold.test]).astype(int)
        ref_correct += hits.tolist()
        ref_acc.append(float(hits.mean()))
        ref_c.append(c)
    per_seed = probe_acc.mean(axis=1)
    probe_mean, reference = float(per_seed.mean()), float(np.mean(ref_acc))
    se = float(per_seed.std(ddof=1) / np.sqrt(seeds)) if seeds > 1 else 0.0
    gap = probe_mean - reference
    paired = paired_bootstrap(np.array(probe_correct), np.tile(ref_correct, (seeds, 1)), seed=0)
    within = paired.ci_high >= 0.0
    log(f"{name} / {pooling}: probe {probe_mean:.4f} ± {se:.4f} (se), reference {reference:.4f}, gap {gap:+.4f} "
        f"[{paired.ci_low:+.4f}, {paired.ci_high:+.4f}]")
    return {
        "set": name, "pooling": pooling, "examples": len(examples), "classes": len(labels), "dim": flat.shape[1],
        "protocol": plan.protocol, "folds": len(plan.folds), "probe": probe_mean, "probe_se": se,
        "reference": reference, "gap": gap, "gap_ci": (paired.ci_low, paired.ci_high), "within_noise": within, "ref_c": sorted(set(ref_c)),
        "probe_cpu_s": probe_seconds, "ref_cpu_s": ref_seconds,
    }


def markdown(rows: list[dict], seeds: int, seconds: float, command: str) -> str:
    import sklearn
    import torch

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Linear probe vs scikit-learn LogisticRegression",
        "",
        f"Generated by `bench/probe_bench.py` on {now} (`{command}`); wall time {seconds:.0f} s.",
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"scikit-learn {sklearn.__version__}, {platform.machine()}.",
        "",
        "Features: the `mfcc` upstream (one layer), pooled per utterance as stated. Split: the runner's "
        "protocol for the set (column *protocol*). **probe**: the toolkit's `linear` probe "
        "(full-batch L-BFGS; weight decay chosen on the dev part, or by 5-fold cross-validation on "
        "train + dev for sets of at most 1000 rows, then refitted on train + dev; docs/downstreams.md), "
        f"mean accuracy over {seeds} seeds "
        "± its standard error. **reference**: `StandardScaler` + `LogisticRegressionCV` (lbfgs, C from "
        "13 values in [1e-3, 1e3] by 5-fold CV) fitted on the training and dev parts together, "
        "deterministic. Both are scored on the same test items; accuracy is the mean over folds. "
        "*gap*: probe - reference, with its 95 % paired bootstrap interval over the test items (seeds "
        "of an item kept together; 2000 resamples, seed 0). *not worse beyond noise*: the interval "
        "reaches 0 or above.",
        "",
        "| set | pooling | examples | classes | dim | protocol | probe | reference | gap [95% CI] | not worse beyond noise | "
        "reference C | CPU s probe / reference |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['pooling']} | {r['examples']} | {r['classes']} | {r['dim']} | {r['protocol']} | "
            f"{r['probe']:.4f} ± {r['probe_se']:.4f} | {r['reference']:.4f} | "
            f"{r['gap']:+.4f} [{r['gap_ci'][0]:+.4f}, {r['gap_ci'][1]:+.4f}] | "
            f"{'yes' if r['within_noise'] else 'NO'} | {', '.join(f'{c:g}' for c in r['ref_c'])} | "
            f"{r['probe_cpu_s']:.0f} / {r['ref_cpu_s']:.0f} |")
    worse = [r for r in rows if not r["within_noise"]]
    lines += ["", f"Rows where the probe is worse than the reference beyond noise: {len(worse)} of {len(rows)}."]
    by_pool = {}
    for r in rows:
        by_pool.setdefault(r["set"], {})[r["pooling"]] = r["probe"]
    better = [s for s, p in by_pool.items() if {"mean", "mean+std"} <= p.keys() and p["mean+std"] > p["mean"]]
    lines.append(f"Sets where mean+std pooling gives the probe a higher accuracy than mean pooling: "
                 f"{len(better)} of {len(by_pool)}" + (f" ({', '.join(better)})." if better else "."))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sets", default="all", help="comma-separated set names (default all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "probe_bench.md")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, task_name, manifest, options in sets(args.data, work):
            if args.sets != "all" and name not in args.sets.split(","):
                continue
            for pooling in ("mean", "mean+std"):
                rows.append(run_set(name, task_name, manifest, options, pooling, args.seeds, work / "cache",
                                    lambda m: print(f"probe_bench: {m}", file=sys.stderr, flush=True)))
    command = "python bench/probe_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args.seeds, time.monotonic() - started, command.strip()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
