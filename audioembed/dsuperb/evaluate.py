"""``audioembed dsuperb eval``: how one upstream fares across Dynamic-SUPERB's probe-able tasks.

Each instance is only a test set (tens to a few thousand rows), so every task is scored by
stratified k-fold cross-validation *inside* that set: fold i tests on part i, early-stops on
part i+1 and trains on the rest (``fewshot.make_folds``), and the metric is reported as mean ±
std over the folds. Features are clip-level means of every layer from the shared feature cache
(``feature_cache.cached_features``), so reruns and other tools reuse them; a row whose
features hold NaN or Inf is named in the problems and left out. Folds are trained and scored
by the shared probe runner (``probe_runner.run_fold_loop``, the same as ``audioembed
downstream``). Probes:

- single-label (and multi-clip): the layer-weighted linear (or MLP) probe of ``probes.py``,
  i.e. multinomial logistic regression on a learned mix of layers (weight decay chosen on the
  dev part); accuracy and macro-F1;
- multi-label: the same probe with a sigmoid per tag; macro average precision and ROC-AUC;
- regression: ridge regression (alpha by generalised cross-validation on train + dev) on the
  standardised, concatenated layers; Pearson r, MAE and R².

Classes with fewer examples than folds cannot appear in every test part; they are kept in
every fold's training part only (so the probe still has to tell them apart from the rest) and
listed in the result as ``train_only_classes``; a task needs two classes with at least
``folds`` examples. Multi-clip rows are compared through pair features ``[a, b, |a-b|, a*b]``
(per layer; with a third clip c, ``|a-c|, a*c`` are appended too).

A broken or missing instance is reported and the run goes on; each finished task is written
to its own JSON file at once, and a rerun with the same upstream, data and settings skips it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AudioEmbedError
from .. import __version__
from ..extraction import resolve_layers
from ..feature_cache import cached_features, default_cache_dir
from ..fewshot import Fold, make_folds
from ..metrics import (accuracy, macro_average_precision, macro_f1, macro_roc_auc, regression_metrics,
                       summarize_metric)
from ..probe_runner import (EncodedTargets, FoldOutcome, drop_non_finite, fit_and_score, per_item_predictions,
                           run_fold_loop)
from ..probes import PROBES, ProbeConfig
from ..registry import load_upstream
from ..tasks import Example, Task, TaskKind
from ..threads import choose_probe_threads, compute_threads
from .catalog import Catalog, TaskEntry, label_summary, parse_float, split_label_set
from .loader import Instance, InstanceNotFound, locate_instance, materialize_audio, open_instance
from .report import macro_average_rows, markdown_macro_table

RESULT_FORMAT = "audioembed-dsuperb-eval/1"
#: the metric each probe kind is summarised by (higher is better for all three)
PRIMARY_METRIC = {TaskKind.CLASSIFICATION: "accuracy", TaskKind.MULTILABEL: "map", TaskKind.REGRESSION: "pearson"}
REPORT_METRICS = ("accuracy", "map", "pearson")
RIDGE_ALPHAS = np.logspace(-2, 5, 15)
#: problems listed in a result file; the rest are counted
MAX_LISTED_PROBLEMS = 20
EVAL_PROBES = tuple(p for p in PROBES if p != "centroid")


class DsuperbError(AudioEmbedError, RuntimeError):
    """One task (or the whole run) cannot be evaluated as asked; the message says why."""


@dataclass(frozen=True)
class EvalConfig:
    upstream: str
    tasks: str = "all"
    data_root: str | None = None
    model: str | None = None
    folds: int = 5
    seed: int = 0
    layers: str = "all"
    probe: str = "linear"
    max_epochs: int = 200
    device: str = "auto"
    cache_dir: str | None = None
    registry: str | None = None


@dataclass
class TaskOutcome:
    task: str
    #: "done" (computed now), "cached" (finished earlier), "skipped", "missing" or "failed"
    status: str
    reason: str = ""
    result: dict | None = None


@dataclass
class EvalSummary:
    run_dir: Path
    outcomes: list[TaskOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def __str__(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("done", "cached", "skipped", "missing", "failed") if self.count(s)]
        return f"{self.run_dir}: {len(self.outcomes)} tasks: " + ", ".join(parts)


def _log(message: str) -> None:
    print(f"audioembed: {message}", file=sys.stderr)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def probe_kind(entry: TaskEntry) -> TaskKind:
    if entry.kind == "multi-label":
        return TaskKind.MULTILABEL
    if entry.kind == "regression":
        return TaskKind.REGRESSION
    return TaskKind.CLASSIFICATION


def parse_targets(labels: list, kind: TaskKind) -> tuple[list, list[str]]:
    """Per row the probe target (or None, with a problem message naming the row)."""
    targets, problems = [], []
    for row, label in enumerate(labels):
        text = "" if label is None else str(label).strip()
        target = None
        if not text:
            problems.append(f"row {row}: empty label")
        elif kind is TaskKind.REGRESSION:
            target = parse_float(text)
            if target is None:
                problems.append(f"row {row}: label '{text[:40]}' is not a number")
        elif kind is TaskKind.MULTILABEL:
            target = tuple(sorted({part.strip() for part in split_label_set(text)}))
        else:
            target = text
        targets.append(target)
    return targets, problems


def pair_features(clips: list[np.ndarray]) -> np.ndarray:
    """``(L, D)`` clip features -> ``(L, D')``: one clip unchanged, else ``[a, b, ..., |a-b|, a*b, ...]``
    with the first clip as anchor, which lets a linear probe see both the clips and how they differ."""
    if len(clips) == 1:
        return clips[0]
    anchor, others = clips[0], clips[1:]
    parts = [anchor, *others]
    for other in others:
        parts += [np.abs(anchor - other), anchor * other]
    return np.concatenate(parts, axis=-1)


def resume_key(entry: TaskEntry, instance: Instance, upstream, layers: list[int], config: EvalConfig) -> str:
    """What a finished result depends on; a rerun skips a task only when all of it matches."""
    identity = {
        "format": RESULT_FORMAT, "task": entry.id, "kind": entry.kind, "data": instance.fingerprint(),
        "upstream": upstream.name, "weights_hash": upstream.weights_hash(), "layers": layers,
        "folds": config.folds, "seed": config.seed, "probe": config.probe, "max_epochs": config.max_epochs,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _features(instance: Instance, entry: TaskEntry, text, targets, upstream, layers, config: EvalConfig,
              cache_dir: Path, progress: bool):
    """Pooled per-layer features ``(N, L, D)`` of the usable rows, their row indices and problems."""
    columns = instance.audio_columns
    if not columns:
        raise DsuperbError(f"{instance.source}: no audio column (columns: {', '.join(instance.columns)})")
    audio_dir = cache_dir / "dsuperb-audio" / _safe(entry.id) / _safe(entry.revision or "local")
    clips = materialize_audio(instance, text.ids, columns, audio_dir)
    rows = [i for i, t in enumerate(targets) if t is not None and i in clips.clips]
    paths = [clips.clips[i][c] for i in rows for c in columns]
    if not paths:
        raise DsuperbError(f"{instance.source}: no row with a usable label and audio")
    reader, keys, extraction = cached_features(upstream, paths, pooling="mean", cache_dir=cache_dir,
                                               dtype="float32", window_seconds=30.0, device=config.device,
                                               progress=progress)
    problems = clips.problems + [f"audio: {reason}" for reason in extraction.failed.values()]
    kept, feats = [], []
    with reader:
        for i in rows:
            wanted = [keys[clips.clips[i][c]] for c in columns]
            if not all(k in reader for k in wanted):
                continue  # extraction failed for a clip of this row; reported above
            feats.append(pair_features([np.stack([reader.get(k, layer) for layer in layers]) for k in wanted]))
            kept.append(i)
    finite, non_finite = drop_non_finite([f"row {i}" for i in kept], feats)
    problems += non_finite
    kept, feats = [kept[j] for j in finite], [feats[j] for j in finite]
    stats = {"features_extracted": extraction.extracted, "features_from_cache": extraction.skipped_done}
    return np.stack(feats).astype(np.float32) if feats else None, kept, problems, columns, stats


class ProbeTask(Task):
    """The scoring of one Dynamic-SUPERB instance, in the form the shared probe runner takes."""

    def __init__(self, kind: TaskKind, scored_labels: list[str] | None = None):
        self.kind = kind
        self.name = "dsuperb"
        self.primary_metric = PRIMARY_METRIC[kind]
        #: classes averaged in macro-F1: those that appear in test parts (train-only classes
        #: would only add zeros)
        self.scored_labels = scored_labels

    def metrics(self, targets, predictions, scores, labels) -> dict[str, float]:
        if self.kind is TaskKind.CLASSIFICATION:
            return {"accuracy": accuracy(targets, predictions),
                    "macro_f1": macro_f1(targets, predictions, labels=self.scored_labels)}
        if self.kind is TaskKind.MULTILABEL:
            y = np.array([[tag in t for tag in labels] for t in targets], dtype=np.float32)
            out = {}
            for name, fn in (("map", macro_average_precision), ("roc_auc", macro_roc_auc)):
                try:
                    out[name] = fn(y, scores)
                except ValueError:  # undefined on this part; the fold is left out of this metric
                    pass
            return out
        return regression_metrics(targets, predictions)


def _classification_folds(y: list[str], folds: int, seed: int) -> tuple[list[Fold], list[str], list[str]]:
    """Stratified folds over the classes with >= ``folds`` examples; rarer ones train only."""
    counts = Counter(y)
    common = sorted(c for c, n in counts.items() if n >= folds)
    if len(common) < 2:
        raise DsuperbError(f"needs at least 2 classes with >= {folds} examples each for {folds}-fold "
                           f"cross-validation; labels: {label_summary(y)}")
    common_rows = [i for i, label in enumerate(y) if label in common]
    rare_rows = [i for i, label in enumerate(y) if label not in common]
    examples = [Example(id=str(i), path="", target=y[i]) for i in common_rows]
    out = []
    for fold in make_folds(examples, TaskKind.CLASSIFICATION, folds, seed=seed).folds:
        out.append(Fold(fold.name, [common_rows[j] for j in fold.train] + rare_rows,
                        [common_rows[j] for j in fold.dev], [common_rows[j] for j in fold.test]))
    return out, common, sorted(set(counts) - set(common))


def _ridge_fit(x: np.ndarray, encoded: EncodedTargets, task: ProbeTask):
    """The regression probe: ridge (alpha by leave-one-out on train + dev) on the standardised,
    concatenated layers."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = x.reshape(len(x), -1)
    y = np.asarray(encoded.y, dtype=np.float64)

    def fit(train, dev, test, index) -> FoldOutcome:
        rows = list(train) + list(dev)  # RidgeCV picks alpha by leave-one-out on these
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(flat[rows], y[rows])
        predicted = model.predict(flat[test])
        metrics = task.metrics(y[test], predicted, None, None)
        metrics.update(alpha=float(model[-1].alpha_), train=len(rows), test=len(test))
        return FoldOutcome(metrics, None, 0, [float(v) for v in predicted])

    return fit


def probe_instance(x: np.ndarray, targets: list, kind: TaskKind, layers, config: EvalConfig) -> dict:
    """Cross-validated scores of one instance's pooled features ``(N, L, D)`` through the shared
    probe runner (``probe_runner``): per-fold metrics, mean layer weights and class counts."""
    if kind is TaskKind.CLASSIFICATION:
        folds, common, rare = _classification_folds(list(targets), config.folds, config.seed)
        labels = sorted(set(targets))
        task = ProbeTask(kind, scored_labels=common)
    else:
        examples = [Example(id=str(i), path="", target=t) for i, t in enumerate(targets)]
        folds, rare = make_folds(examples, kind, config.folds, seed=config.seed).folds, []
        labels = sorted({tag for t in targets for tag in t}) if kind is TaskKind.MULTILABEL else None
        task = ProbeTask(kind)
    encoded = EncodedTargets(kind, targets, labels)
    if kind is TaskKind.REGRESSION:
        fit = _ridge_fit(x, encoded, task)
    else:
        feats = [row[:, None, :] for row in x]  # (L, 1, D): one pooled row per example
        probe_config = ProbeConfig(probe=config.probe, max_epochs=config.max_epochs)

        def fit(train, dev, test, index) -> FoldOutcome:
            outcome = fit_and_score(task, encoded, feats, layers, train, dev, test, probe_config,
                                    config.seed * 1000 + index)
            outcome.metrics.update(train=len(train), dev=len(dev), test=len(test), best_epoch=outcome.epoch)
            return outcome

    run = run_fold_loop(folds, config.seed, lambda fold, index: fold.train, fit)
    weights = [o.layer_weights for o in run.outcomes if o.layer_weights is not None]
    out = {"per_fold": [o.metrics for o in run.outcomes],
           "layer_weights": np.mean(weights, axis=0).tolist() if weights else None,
           "test_items": per_item_predictions(folds, run, [str(i) for i in range(len(targets))], targets)}
    if kind is TaskKind.CLASSIFICATION:
        out.update(classes={label: int(n) for label, n in sorted(Counter(targets).items())}, train_only_classes=rare)
    elif kind is TaskKind.MULTILABEL:
        out["classes"] = {tag: int(encoded.y[:, i].sum()) for i, tag in enumerate(labels)}
    else:
        out["target_range"] = [float(np.min(encoded.y)), float(np.max(encoded.y))]
    return out


def evaluate_instance(entry: TaskEntry, instance: Instance, upstream, layers: list[int], config: EvalConfig,
                      cache_dir: Path, progress: bool = True) -> dict:
    """Cross-validated probe scores of one instance (see the module docstring)."""
    started = time.monotonic()
    kind = probe_kind(entry)
    text = instance.read_text()
    targets, problems = parse_targets(text.labels, kind)
    x, rows, feature_problems, columns, stats = _features(instance, entry, text, targets, upstream, layers, config,
                                                          cache_dir, progress)
    problems = text.notes + problems + feature_problems
    if x is None or len(rows) < 2 * config.folds:
        raise DsuperbError(f"{instance.source}: only {len(rows)} usable rows, too few for {config.folds}-fold "
                           f"cross-validation" + (f" (first problem: {problems[0]})" if problems else ""))
    kept = [targets[i] for i in rows]
    with compute_threads(choose_probe_threads(None)):  # one thread unless --threads / $AUDIOEMBED_THREADS
        probed = probe_instance(x, kept, kind, layers, config)
    metric_names = [m for m in probed["per_fold"][0] if m not in ("train", "dev", "test", "best_epoch", "alpha")]
    metric_names += [m for fold in probed["per_fold"] for m in fold if m not in metric_names
                     and m not in ("train", "dev", "test", "best_epoch", "alpha")]
    summary = {}
    for name in metric_names:
        values = [fold[name] for fold in probed["per_fold"] if name in fold]
        summary[name] = summarize_metric(name, values).as_dict()
    primary = PRIMARY_METRIC[kind]
    if primary not in summary:
        raise DsuperbError(f"{instance.source}: {primary} is undefined on every test fold (too few positives per tag)")
    # the clip columns present decide, not the name-based guess in the registry
    effective_kind = entry.kind
    if kind is TaskKind.CLASSIFICATION:
        effective_kind = "multi-clip" if len(columns) > 1 else "single-label"
    return {
        "format": RESULT_FORMAT,
        "audioembed_version": __version__,
        "task": entry.id,
        "hub_id": entry.hub_id,
        "revision": entry.revision,
        "domain": entry.domain,
        "category": entry.category,
        "registry_kind": entry.kind,
        "kind": effective_kind,
        "clips": columns,
        "primary_metric": primary,
        "metrics": summary,
        "per_fold": probed["per_fold"],
        "test_items": probed["test_items"],
        "layer_weights": probed["layer_weights"],
        "classes": probed.get("classes"),
        "train_only_classes": probed.get("train_only_classes", []),
        "target_range": probed.get("target_range"),
        "examples": len(rows),
        "rows": len(text.ids),
        "problems": problems[:MAX_LISTED_PROBLEMS],
        "problem_count": len(problems),
        "upstream": upstream.name,
        "model": upstream.source,
        "weights_hash": upstream.weights_hash(),
        "layers": layers,
        "config": {"folds": config.folds, "seed": config.seed, "max_epochs": config.max_epochs,
                   "probe": "ridge" if kind is TaskKind.REGRESSION else config.probe},
        "data": {"path": str(instance.source), "layout": instance.layout, "fingerprint": instance.fingerprint()},
        **stats,
        "seconds": round(time.monotonic() - started, 2),
    }


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def run_eval(config: EvalConfig, output_dir: str | Path, progress: bool = True) -> EvalSummary:
    """Evaluate ``config.upstream`` on every selected task; writes per-task JSON, ``summary.json``
    and ``report.md`` under ``output_dir/<upstream>-<weights hash>/``."""
    if config.folds < 3:
        raise DsuperbError(f"--folds must be at least 3 (train, dev and test parts), got {config.folds}")
    if config.probe not in EVAL_PROBES:
        raise DsuperbError(f"--probe must be one of {', '.join(EVAL_PROBES)}, got '{config.probe}'")
    entries = Catalog.load(config.registry).select(config.tasks)
    upstream = load_upstream(config.upstream, model=config.model, device=config.device)
    layers = resolve_layers(config.layers, upstream.num_layers)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    run_dir = Path(output_dir).expanduser() / f"{_safe(upstream.name)}-{upstream.weights_hash()[:8]}"
    summary = EvalSummary(run_dir=run_dir)
    for number, entry in enumerate(entries, start=1):
        where = f"[{number}/{len(entries)}] {entry.id}"
        if not entry.probed:
            why = "no audio input" if not entry.has_audio else f"{entry.kind} task ({entry.metric}): nothing to probe"
            summary.outcomes.append(TaskOutcome(entry.id, "skipped", why))
            continue
        try:
            instance = open_instance(locate_instance(entry, config.data_root))
        except InstanceNotFound as exc:
            summary.outcomes.append(TaskOutcome(entry.id, "missing", str(exc)))
            continue
        except Exception as exc:  # a broken instance must not stop the other tasks
            summary.outcomes.append(_failed(entry, where, exc))
            continue
        result_path = run_dir / "tasks" / f"{_safe(entry.id)}.json"
        try:
            key = resume_key(entry, instance, upstream, layers, config)
            previous = _read_result(result_path)
            if previous is not None and previous.get("resume_key") == key:
                # the grouping may have been corrected in the registry since; the scores stand
                previous.update(domain=entry.domain, category=entry.category)
                summary.outcomes.append(TaskOutcome(entry.id, "cached", "", previous))
                _log(f"{where}: already done ({result_path})")
                continue
            _log(f"{where}: {entry.domain}/{entry.category}, {entry.kind}, {instance.source}")
            result = evaluate_instance(entry, instance, upstream, layers, config, cache_dir, progress)
            result["resume_key"] = key
            _write_json(result_path, result)
        except Exception as exc:  # a broken instance must not stop the other tasks
            summary.outcomes.append(_failed(entry, where, exc))
            continue
        primary = result["metrics"][result["primary_metric"]]
        left_out = (f"; {result['problem_count']} row(s) left out, e.g. {result['problems'][0]}"
                    if result["problem_count"] else "")
        _log(f"{where}: {result['primary_metric']} {primary['mean']:.4f} ± {primary['std']:.4f} "
             f"over {primary['n']} folds, {result['examples']} examples{left_out}")
        summary.outcomes.append(TaskOutcome(entry.id, "done", "", result))
    write_eval_report(summary, config)
    return summary


def _failed(entry: TaskEntry, where: str, exc: Exception) -> TaskOutcome:
    known = isinstance(exc, (DsuperbError, ValueError, OSError))
    reason = str(exc) if known else f"{type(exc).__name__}: {exc}"
    _log(f"{where}: FAILED {reason}")
    return TaskOutcome(entry.id, "failed", reason)


def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _report_item(result: dict) -> dict:
    return {"domain": result["domain"], "category": result["category"],
            "values": {result["primary_metric"]: result["metrics"][result["primary_metric"]]["mean"]}}


def eval_report_markdown(summary: EvalSummary, config: EvalConfig) -> str:
    results = [o.result for o in summary.outcomes if o.result]
    head = results[0] if results else {}
    lines = [
        f"# Dynamic-SUPERB probes: {config.upstream}" + (f" ({config.model})" if config.model else ""),
        "",
        f"weights {head.get('weights_hash', '-')}, layers {head.get('layers', config.layers)}; "
        f"{config.folds}-fold cross-validation inside each instance's test set, seed {config.seed}, "
        f"{config.probe} probe (ridge for regression). Each cell: mean ± std over folds; "
        "primary metric per kind: single-label/multi-clip accuracy, multi-label macro AP (map), "
        "regression Pearson r.",
        "",
        f"{summary}",
        "",
        "## Per task",
        "",
        "| task | domain | category | kind | examples | metric | mean ± std (folds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"][r["primary_metric"]]
        lines.append(f"| {r['task']} | {r['domain']} | {r['category']} | {r['kind']} | {r['examples']} | "
                     f"{r['primary_metric']} | {m['mean']:.3f} ± {m['std']:.3f} ({m['n']}) |")
    items = [_report_item(r) for r in results]
    lines += ["", "## By domain (macro average over tasks; n = tasks in the cell)", ""]
    lines += markdown_macro_table(items, ("domain",), REPORT_METRICS)
    lines += ["## By category", ""]
    lines += markdown_macro_table(items, ("domain", "category"), REPORT_METRICS)
    failed = [o for o in summary.outcomes if o.status == "failed"]
    missing = [o.task for o in summary.outcomes if o.status == "missing"]
    skipped = [o.task for o in summary.outcomes if o.status == "skipped"]
    if failed or missing or skipped:
        lines += ["## Not evaluated", ""]
        lines += [f"- failed: {o.task}: {o.reason}" for o in failed]
        if missing:
            lines.append(f"- missing (no local copy under {config.data_root or '(no --data-root)'}): "
                         f"{len(missing)} task(s): {', '.join(missing[:12])}"
                         + (f", ... (+{len(missing) - 12} more, listed in summary.json)" if len(missing) > 12 else ""))
        if skipped:
            lines.append(f"- skipped: {len(skipped)} generation or text-only task(s) (nothing to probe)")
        lines.append("")
    return "\n".join(lines)


def write_eval_report(summary: EvalSummary, config: EvalConfig) -> Path:
    summary.run_dir.mkdir(parents=True, exist_ok=True)
    items = [_report_item(o.result) for o in summary.outcomes if o.result]
    data = {
        "format": RESULT_FORMAT,
        "config": asdict(config),
        "outcomes": [{"task": o.task, "status": o.status, "reason": o.reason} for o in summary.outcomes],
        "results": {o.task: {k: o.result[k] for k in ("domain", "category", "kind", "primary_metric", "metrics",
                                                      "examples")}
                    for o in summary.outcomes if o.result},
        "by_domain": macro_average_rows(items, ("domain",), REPORT_METRICS),
        "by_category": macro_average_rows(items, ("domain", "category"), REPORT_METRICS),
    }
    _write_json(summary.run_dir / "summary.json", data)
    path = summary.run_dir / "report.md"
    path.write_text(eval_report_markdown(summary, config))
    return path
