"""The downstream runner: task data -> cached features -> probes per fold, shot and seed -> results.

One run evaluates one upstream on one task for a list of shot counts. Features come from the
shared cache (``feature_cache``), folds and few-shot subsets depend only on the data and the
seed (``fewshot``), probes are trained fold by fold by ``probe_runner``; this module wires
them together and writes the result files.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import AudioEmbedError
from . import __version__
from .extraction import resolve_layers
from .feature_cache import cached_features
from .fewshot import FoldError, draw_subset, make_folds
from .metrics import summarize_metric
from .probe_runner import (EncodedTargets, FoldOutcome, drop_non_finite, fit_and_score, per_item_predictions, run_fold_loop,
                           seed_warning, split_warnings)
from .probes import CTC_HEADS, PROBES, ProbeConfig
from .registry import get_registry, load_upstream
from .tasks import Example, Task, TaskKind
from .threads import choose_probe_threads, compute_threads

#: how utterance probes pool each layer's frames: the mean, or mean and standard deviation
#: concatenated (twice the width; the usual baseline for MFCC-like features)
UTTERANCE_POOLINGS = ("mean", "mean+std")


class DownstreamError(AudioEmbedError, RuntimeError):
    """The run cannot go ahead as asked; the message says why."""


@dataclass(frozen=True)
class DownstreamConfig:
    """One ``audioembed downstream`` evaluation: a task, an upstream, a probe and its settings."""


    task: str
    upstream: str
    data: str
    model: str | None = None
    shots: tuple[int | None, ...] = (None,)  # None = the whole training set
    seeds: int = 5
    probe: str = "linear"
    #: head of the CTC probe (ASR tasks only): "lstm" or "conv" (probes.CTC_HEADS)
    ctc_head: str = "lstm"
    layers: str = "all"
    folds: int = 5
    #: pooling of utterance features (UTTERANCE_POOLINGS); CTC tasks use frames
    pool: str = "mean"
    #: manifest column holding the dataset's own folds (test on each value in turn)
    fold_column: str | None = None
    layer_norm: bool = False
    max_epochs: int = 200
    #: chunk length for chunk-level training; None = the task's default, 0 = whole clips
    chunk_seconds: float | None = None
    task_options: dict = field(default_factory=dict)
    cache_dir: str | None = None
    device: str = "auto"

    def validate(self) -> None:
        if self.probe not in PROBES:
            raise DownstreamError(f"--probe must be one of {PROBES}, got '{self.probe}'")
        if self.ctc_head not in CTC_HEADS:
            raise DownstreamError(f"--ctc-head must be one of {CTC_HEADS}, got '{self.ctc_head}'")
        if self.pool not in UTTERANCE_POOLINGS:
            raise DownstreamError(f"--pool must be one of {UTTERANCE_POOLINGS}, got '{self.pool}'")


def parse_shots(text: str) -> tuple[int | None, ...]:
    """``"1,2,4,all"`` -> ``(1, 2, 4, None)``."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("all", "full"):
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise DownstreamError(f"--shots takes positive integers or 'all', got '{part}'")
    return tuple(out)


#: what the probes learn from (recorded in every result): K-shot probes never train on dev labels
FIT_PROTOCOL = ("K shots: the K-shot training subset only, dev labels choose settings; "
                "all: the training part, the linear probe refitted on training + dev with the chosen weight decay")


def shots_label(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


def _log(message: str) -> None:
    print(f"audioembed: {message}", file=sys.stderr)


def _apply_fold_column(examples: list, column: str) -> tuple[list, list[str]]:
    """Examples with ``fold`` read from the manifest column ``column``; rows without a value are problems."""
    if not any(column in e.metadata for e in examples):
        known = sorted({k for e in examples for k in e.metadata})
        raise DownstreamError(f"--fold-column {column}: the data has no such column "
                              f"(columns: {', '.join(known) or 'none: not a manifest'})")
    kept, problems = [], []
    for e in examples:
        value = str(e.metadata.get(column, "") or "").strip()
        if value:
            kept.append(replace(e, fold=value))
        else:
            problems.append(f"{e.id}: empty fold column '{column}'; left out")
    return kept, problems


def run_downstream(config: DownstreamConfig, output_dir: str | Path, progress: bool = True, threads: int | None = None) -> dict:
    """Run one task x upstream evaluation and write ``<output_dir>/<name>.json`` and ``.md``.

    ``threads`` (else ``$AUDIOEMBED_THREADS``) fixes the CPU threads of extraction and probes;
    by default each chooses its own (``audioembed.threads``).
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    config.validate()
    try:
        task: Task = get_registry().task_spec(config.task).build()
    except KeyError as exc:
        raise DownstreamError(str(exc.args[0])) from None
    if config.probe in ("centroid", "knn") and task.kind is not TaskKind.CLASSIFICATION:
        raise DownstreamError(f"the {config.probe} probe needs a classification task; '{task.name}' is {task.kind.value}")
    options = task.resolve_options(config.task_options)
    data = task.load(Path(config.data).expanduser().resolve(), options)
    problems = list(data.problems)
    examples = list(data.examples)
    fold_column = data.fold_column
    if config.fold_column:
        examples, fold_problems = _apply_fold_column(examples, config.fold_column)
        problems += fold_problems
        fold_column = config.fold_column
    for problem in problems:
        _log(f"skipping {problem}")
    timings["load_data"] = time.monotonic() - started

    t0 = time.monotonic()
    upstream = load_upstream(config.upstream, model=config.model, device=config.device)
    layers = resolve_layers(config.layers, upstream.num_layers)
    chunk = task.chunk_seconds if config.chunk_seconds is None else (config.chunk_seconds or None)
    if task.kind is TaskKind.CTC:
        pooling, window = "none", 30.0
    elif chunk:
        if config.pool != "mean":
            raise DownstreamError(f"--pool {config.pool} is for whole utterances; '{task.name}' trains on "
                                  f"{chunk:g} s chunks (mean-pooled): add --chunk-seconds 0 to pool whole clips")
        pooling, window = "chunks", float(chunk)
    else:
        pooling, window = config.pool, 30.0
    reader, keys, extraction = cached_features(
        upstream,
        [e.path for e in examples],
        pooling=pooling,
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
        dtype="float16" if pooling == "none" else "float32",
        window_seconds=window,
        device=config.device,
        progress=progress,
        threads=threads,
    )
    timings["features"] = time.monotonic() - t0
    problems += list(extraction.failed.values())
    with reader:
        examples = [e for e in examples if keys[e.path] in reader]
        # (L, T, D) frames for CTC; (L, rows, D) otherwise, one row per chunk (1 when pooled)
        feats = [np.stack([np.atleast_2d(reader.get(keys[e.path], layer)) for layer in layers]) for e in examples]
    finite, non_finite = drop_non_finite([e.id for e in examples], feats)
    for problem in non_finite:
        _log(f"skipping {problem}")
    problems += non_finite
    examples, feats = [examples[i] for i in finite], [feats[i] for i in finite]
    if not examples:
        raise DownstreamError(f"no example of {config.data} could be used (see the messages above)")
    labels = data.labels
    if task.kind is TaskKind.CLASSIFICATION and labels is None:
        labels = sorted({e.target for e in examples})
    encoded = EncodedTargets(task.kind, [e.target for e in examples], labels)
    try:
        plan = make_folds(examples, task.kind, config.folds, seed=0, fold_column=fold_column)
    except FoldError as exc:
        raise DownstreamError(f"{config.data}: {exc}") from None
    folds = plan.folds
    _log(f"protocol: {plan.protocol}; {len(folds)} fold(s), pooling {_pooling_label(task, pooling)}")
    warnings = split_warnings(task.kind, folds, encoded.targets)
    if seed_warning(config.seeds):
        warnings.append(seed_warning(config.seeds))
    probe_config = ProbeConfig(probe=config.probe, layer_norm=config.layer_norm, max_epochs=config.max_epochs,
                               ctc_head=config.ctc_head)
    ids = [e.id for e in examples]


    t0 = time.monotonic()
    results_by_shots = {}
    # Outcomes of fits that no seed can change (same rows, seed-free probe: e.g. the L-BFGS
    # linear probe on the full training set of a given split), reused by the later seeds
    # instead of fitted again: identical numbers, a fraction of the time.
    seed_free: dict[tuple, FoldOutcome] = {}
    notes: list[str] = []
    bar = _probe_bar(len(config.shots) * config.seeds * len(folds), progress)
    with compute_threads(choose_probe_threads(threads)):
        for shots in config.shots:
            per_seed = []
            short = short_classes(examples, folds, task.kind, shots)
            if short:
                note = (f"shots={shots}: {len(short)} class(es) have fewer training examples than {shots} in some fold "
                        f"and use all they have: " + ", ".join(f"{label} ({n})" for label, n in sorted(short.items())))
                notes.append(note)
                _log(note)
            for seed in range(config.seeds):
                def subset_of(fold, index, seed=seed, shots=shots):
                    return draw_subset(examples, fold.train, task.kind, shots, seed=seed * 1000 + index)

                def fit(train, dev, test, index, seed=seed, shots=shots):
                    bar.set_postfix_str(f"shots={shots_label(shots)} seed={seed} {folds[index].name}", refresh=False)
                    key = (shots_label(shots), index, tuple(train), tuple(dev), tuple(test))
                    outcome = seed_free.get(key)
                    if outcome is None:
                        outcome = fit_and_score(task, encoded, feats, layers, train, dev, test, probe_config, seed,
                                                few_shot=shots is not None)
                        if not outcome.seed_dependent:
                            seed_free[key] = outcome
                    bar.update(1)
                    return outcome

                run = run_fold_loop(folds, seed, subset_of, fit)
                subsets = {name: [ids[i] for i in subset] for name, subset in run.subsets.items()}
                weights = [o.layer_weights for o in run.outcomes if o.layer_weights is not None]
                per_seed.append(
                    {
                        "seed": seed,
                        "metrics": run.mean_metrics(),
                        "per_fold": [o.metrics for o in run.outcomes],
                        "layer_weights": np.mean(weights, axis=0).tolist() if weights else None,
                        "best_epochs": [o.epoch for o in run.outcomes],
                        "weight_decays": [o.weight_decay for o in run.outcomes],
                        "subset_ids": subsets,
                        "train_size": {name: len(s) for name, s in subsets.items()},
                        "test_items": per_item_predictions(folds, run, ids, encoded.targets),
                    }
                )
            summary = {m: summarize_metric(m, [s["metrics"][m] for s in per_seed]).as_dict() for m in per_seed[0]["metrics"]}
            results_by_shots[shots_label(shots)] = {"summary": summary, "per_seed": per_seed}
            _log(f"{task.name} / {upstream.name} / shots={shots_label(shots)}: "
                 + ", ".join(f"{m} {v['mean']:.4f} ± {v['std']:.4f}" for m, v in summary.items()))
    bar.close()
    for warning in warnings:
        _log(f"warning: {warning}")
    timings["probes"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - started

    result = {
        "audioembed_version": __version__,
        "task": task.name,
        "task_kind": task.kind.value,
        "primary_metric": task.primary_metric,
        "lower_is_better": list(task.lower_is_better),
        "upstream": upstream.name,
        "model": upstream.source,
        "weights_hash": upstream.weights_hash(),
        "config": {**asdict(config), "shots": [shots_label(s) for s in config.shots], "task_options": options},
        "protocol": {"split": plan.protocol, "folds": len(folds), "pooling": _pooling_label(task, pooling),
                     "training": FIT_PROTOCOL},
        "layers": layers,
        "labels": labels,
        "data": {
            "path": str(Path(config.data).expanduser().resolve()),
            "examples": len(examples),
            "problems": problems,
            "folds": [{"name": f.name, "train": len(f.train), "dev": len(f.dev), "test": len(f.test)} for f in folds],
            "features_extracted": extraction.extracted,
            "features_from_cache": extraction.skipped_done,
        },
        "warnings": warnings,
        "results": results_by_shots,
        "notes": notes,
        "timings": timings,
    }
    write_result(result, Path(output_dir))
    return result


def _probe_bar(total: int, enabled: bool):
    """One bar over every probe to train (shots x seeds x folds), with an ETA."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="probes", unit="probe", disable=not enabled or total == 0, file=sys.stderr)


def short_classes(examples: Sequence[Example], folds, kind: TaskKind, shots: int | None) -> dict[str, int]:
    """Classes with fewer than ``shots`` training examples in some fold -> the fewest they have.

    ``--shots K`` then means "all of them" for those classes; the run says so instead of
    silently training on fewer examples than asked.
    """
    if shots is None or kind is not TaskKind.CLASSIFICATION:
        return {}
    short: dict[str, int] = {}
    labels = sorted({e.target for e in examples})
    for fold in folds:
        counts = dict.fromkeys(labels, 0)
        for i in fold.train:
            counts[examples[i].target] += 1
        for label, count in counts.items():
            if count < shots:
                short[label] = min(count, short.get(label, count))
    return short


def _pooling_label(task: Task, pooling: str) -> str:
    """The pooling as reported: "mean", "mean+std", "chunks of 10 s (mean)" or "frames"."""
    if task.kind is TaskKind.CTC:
        return "frames"
    if pooling == "chunks":
        return "chunks (mean)"
    return pooling


def pooling_of(result: dict) -> str:
    """The pooling a result was computed with (files from before pooling was recorded: mean)."""
    return result.get("protocol", {}).get("pooling") or ("frames" if result["task_kind"] == TaskKind.CTC.value else "mean")


def probe_name(result: dict) -> str:
    """The probe as trained: CTC tasks ignore ``--probe`` and train the ``--ctc-head``."""
    if result["task_kind"] == TaskKind.CTC.value:
        return f"ctc-{result['config'].get('ctc_head', 'lstm')}"
    return result["config"]["probe"]


def result_stem(result: dict) -> str:
    parts = [result["task"], result["upstream"], result["weights_hash"][:8], probe_name(result)]
    if pooling_of(result) == "mean+std":
        parts.append("meanstd")
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts)


def markdown_table(result: dict) -> str:
    metrics = list(next(iter(result["results"].values()))["summary"])
    lines = [
        f"# {result['task']} / {result['upstream']} ({probe_name(result)} probe)",
        "",
        f"model: {result['model'] or '-'}, weights {result['weights_hash']}, layers {result['layers']}, "
        f"{result['data']['examples']} examples, {len(result['data']['folds'])} fold(s), "
        f"{result['config']['seeds']} seed(s); mean ± std [95% CI]",
        "",
        f"protocol: {result.get('protocol', {}).get('split', 'not recorded')}; pooling: {pooling_of(result)}",
        "",
        "| shots | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for shots, block in result["results"].items():
        cells = [f"{s['mean']:.4f} ± {s['std']:.4f} {_interval(s)}" for s in (block["summary"][m] for m in metrics)]
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    warnings = result.get("warnings") or []
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def _interval(summary: dict) -> str:
    if summary.get("ci_low") is None:
        return "[CI not computable]"
    clipped = "*" if summary.get("ci_note") else ""
    return f"[{summary['ci_low']:.4f}, {summary['ci_high']:.4f}]{clipped}"


def write_result(result: dict, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    path = output_dir / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)
    (output_dir / f"{stem}.md").write_text(markdown_table(result))
    return path
