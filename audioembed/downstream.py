"""The downstream runner: task data -> cached features -> probes per fold, shot and seed -> results.

One run evaluates one upstream on one task for a list of shot counts. Features come from the
shared cache (``feature_cache``), folds and few-shot subsets depend only on the data and the
seed (``fewshot``), probes are trained by ``probes``; this module wires them together and
writes the result files.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import AudioEmbedError
from . import __version__
from .extraction import resolve_layers
from .feature_cache import cached_features
from .fewshot import draw_subset, make_folds
from .metrics import summarize
from .probes import CTC_HEADS, PROBES, ProbeConfig, as_targets, centroid_scores, probe_loss, decode_ctc, train_ctc_probe, train_utterance_probe
from .registry import get_registry, load_upstream
from .tasks import Example, Task, TaskKind
from .threads import choose_probe_threads, compute_threads


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


def shots_label(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


def _log(message: str) -> None:
    print(f"audioembed: {message}", file=sys.stderr)


class _Encoded:
    """Targets of the kept examples in the form the probes and metrics need."""

    def __init__(self, task: Task, examples: Sequence[Example], labels: list[str] | None):
        self.kind = task.kind
        self.labels = labels
        targets = [e.target for e in examples]
        self.targets = targets
        if self.kind is TaskKind.CLASSIFICATION:
            index = {lab: i for i, lab in enumerate(labels)}
            self.y = np.array([index[t] for t in targets])
            self.outputs = len(labels)
        elif self.kind is TaskKind.MULTILABEL:
            index = {lab: i for i, lab in enumerate(labels)}
            self.y = np.zeros((len(targets), len(labels)), dtype=np.float32)
            for row, tags in enumerate(targets):
                for tag in tags:
                    self.y[row, index[tag]] = 1.0
            self.outputs = len(labels)
        elif self.kind is TaskKind.REGRESSION:
            self.y = np.array(targets, dtype=np.float32)
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


def _score(task: Task, metrics: dict) -> float:
    value = metrics[task.primary_metric]
    return -value if task.primary_metric in task.lower_is_better else value


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
    if config.probe == "centroid" and task.kind is not TaskKind.CLASSIFICATION:
        raise DownstreamError(f"the centroid probe needs a classification task; '{task.name}' is {task.kind.value}")
    options = task.resolve_options(config.task_options)
    data = task.load(Path(config.data).expanduser().resolve(), options)
    for problem in data.problems:
        _log(f"skipping {problem}")
    timings["load_data"] = time.monotonic() - started

    t0 = time.monotonic()
    upstream = load_upstream(config.upstream, model=config.model, device=config.device)
    layers = resolve_layers(config.layers, upstream.num_layers)
    chunk = task.chunk_seconds if config.chunk_seconds is None else (config.chunk_seconds or None)
    if task.kind is TaskKind.CTC:
        pooling, window = "none", 30.0
    elif chunk:
        pooling, window = "chunks", float(chunk)
    else:
        pooling, window = "mean", 30.0
    reader, keys, extraction = cached_features(
        upstream,
        [e.path for e in data.examples],
        pooling=pooling,
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
        dtype="float16" if pooling == "none" else "float32",
        window_seconds=window,
        device=config.device,
        progress=progress,
        threads=threads,
    )
    timings["features"] = time.monotonic() - t0
    problems = list(data.problems) + list(extraction.failed.values())
    with reader:
        examples = [e for e in data.examples if keys[e.path] in reader]
        # (L, T, D) frames for CTC; (L, rows, D) otherwise, one row per chunk (1 when pooled)
        feats = [np.stack([np.atleast_2d(reader.get(keys[e.path], layer)) for layer in layers]) for e in examples]
    if not examples:
        raise DownstreamError(f"no example of {config.data} could be used (see the messages above)")
    labels = data.labels
    if task.kind is TaskKind.CLASSIFICATION and labels is None:
        labels = sorted({e.target for e in examples})
    encoded = _Encoded(task, examples, labels)
    folds = make_folds(examples, task.kind, config.folds, seed=0)
    probe_config = ProbeConfig(probe=config.probe, layer_norm=config.layer_norm, max_epochs=config.max_epochs,
                               ctc_head=config.ctc_head)

    t0 = time.monotonic()
    results_by_shots = {}
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
                fold_metrics, weights, subsets, epochs = [], [], {}, []
                for fold_index, fold in enumerate(folds):
                    subset = draw_subset(examples, fold.train, task.kind, shots, seed=seed * 1000 + fold_index)
                    subsets[fold.name] = [examples[i].id for i in subset]
                    bar.set_postfix_str(f"shots={shots_label(shots)} seed={seed} {fold.name}", refresh=False)
                    metrics, layer_weights, epoch = _fit_and_score(
                        task, encoded, feats, layers, subset, fold.dev, fold.test, probe_config, seed
                    )
                    bar.update(1)
                    fold_metrics.append(metrics)
                    if layer_weights is not None:
                        weights.append(layer_weights)
                    epochs.append(epoch)
                names = fold_metrics[0].keys()
                per_seed.append(
                    {
                        "seed": seed,
                        "metrics": {m: float(np.mean([fm[m] for fm in fold_metrics])) for m in names},
                        "per_fold": fold_metrics,
                        "layer_weights": np.mean(weights, axis=0).tolist() if weights else None,
                        "best_epochs": epochs,
                        "subset_ids": subsets,
                        "train_size": {name: len(ids) for name, ids in subsets.items()},
                    }
                )
            summary = {m: summarize([s["metrics"][m] for s in per_seed]).as_dict() for m in per_seed[0]["metrics"]}
            results_by_shots[shots_label(shots)] = {"summary": summary, "per_seed": per_seed}
            _log(f"{task.name} / {upstream.name} / shots={shots_label(shots)}: "
                 + ", ".join(f"{m} {v['mean']:.4f} ± {v['std']:.4f}" for m, v in summary.items()))
    bar.close()
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


def _fit_and_score(task, encoded: _Encoded, feats, layers, train, dev, test, config: ProbeConfig, seed: int):
    """Train on ``train``, early-stop on ``dev``, score on ``test``; returns metrics, weights, epoch."""
    test_targets = [encoded.targets[i] for i in test]
    dev_targets = [encoded.targets[i] for i in dev]
    if task.kind is TaskKind.CTC:
        def dev_score(texts):
            # Early stopping on CER when the task has it: while most words are still wrong a
            # probe's WER sits near 1 and cannot tell its epochs apart; CER can.
            metrics = task.metrics(dev_targets, texts, None, None)
            return -metrics["cer"] if "cer" in metrics else _score(task, metrics)

        model, vocab, epoch = train_ctc_probe(
            layers, [feats[i] for i in train], [encoded.targets[i] for i in train], [feats[i] for i in dev],
            dev_score, config, seed,
        )
        texts = decode_ctc(model, vocab, [feats[i] for i in test])
        return task.metrics(test_targets, texts, None, None), model.featurizer.layer_weights(), epoch

    x_train, owner_train = _rows(feats, train)
    x_dev, owner_dev = _rows(feats, dev)
    x_test, owner_test = _rows(feats, test)
    if config.probe == "centroid":
        sims = centroid_scores(x_train, encoded.y[train][owner_train], x_test, encoded.outputs)
        clip = _per_clip(np.where(np.isfinite(sims), sims * 10.0, -1e9), owner_test, len(test))
        preds, scores = encoded.decode(clip)
        return task.metrics(test_targets, preds, scores, encoded.labels), None, 0

    def dev_score(outputs):
        clip = _per_clip(outputs, owner_dev, len(dev))
        preds, scores = encoded.decode(clip)
        try:
            return _score(task, task.metrics(dev_targets, preds, scores, encoded.labels))
        except ValueError:  # a metric undefined on a tiny dev set: fall back to the dev loss
            y_dev = as_targets(task.kind, encoded.y[dev])
            return -float(probe_loss(task.kind, torch.from_numpy(clip), y_dev))

    model, epoch = train_utterance_probe(
        task.kind, layers, x_train, encoded.y[train][owner_train], x_dev, dev_score, encoded.outputs, config, seed
    )
    with torch.no_grad():
        outputs = model(torch.from_numpy(x_test)).numpy()
    preds, scores = encoded.decode(_per_clip(outputs, owner_test, len(test)))
    return task.metrics(test_targets, preds, scores, encoded.labels), model.featurizer.layer_weights(), epoch


def _rows(feats: Sequence[np.ndarray], index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Training rows ``(R, L, D)`` of the examples in ``index`` (one per chunk) and each row's example."""
    x = np.concatenate([feats[i].transpose(1, 0, 2) for i in index]).astype(np.float32)
    owner = np.concatenate([np.full(feats[i].shape[1], j) for j, i in enumerate(index)])
    return x, owner


def _per_clip(outputs: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Clip-level outputs: the mean of its chunks' outputs (logits)."""
    return np.stack([outputs[owner == j].mean(axis=0) for j in range(count)])


def probe_name(result: dict) -> str:
    """The probe as trained: CTC tasks ignore ``--probe`` and train the ``--ctc-head``."""
    if result["task_kind"] == TaskKind.CTC.value:
        return f"ctc-{result['config'].get('ctc_head', 'lstm')}"
    return result["config"]["probe"]


def result_stem(result: dict) -> str:
    parts = [result["task"], result["upstream"], result["weights_hash"][:8], probe_name(result)]
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
        "| shots | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for shots, block in result["results"].items():
        cells = [f"{s['mean']:.4f} ± {s['std']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}]"
                 for s in (block["summary"][m] for m in metrics)]
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_result(result: dict, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    path = output_dir / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)
    (output_dir / f"{stem}.md").write_text(markdown_table(result))
    return path
