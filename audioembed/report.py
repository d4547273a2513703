"""Gather downstream result files into tasks x upstreams tables (one set per dataset) and plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .metrics import paired_bootstrap

#: seed of the paired bootstrap, so that a report is reproducible
BOOTSTRAP_SEED = 0


def load_results(folder: str | Path) -> list[dict]:
    results = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and {"task", "upstream", "results"} <= data.keys():
            data["_file"] = str(path)
            results.append(data)
    return results


def _shots_order(label: str) -> float:
    return float("inf") if label == "all" else float(label)


def _column(result: dict) -> str:
    name = result["upstream"]
    if result.get("model"):
        name += f" ({Path(str(result['model'])).name})"
    if result["config"].get("probe", "linear") != "linear":
        name += f" [{result['config']['probe']}]"
    return name


def dataset_of(result: dict) -> str:
    """The dataset a run was made on (its ``--data`` path), so runs on different data never share a table."""
    return str(result.get("data", {}).get("path") or "(unknown dataset)")


def summary_table(results: list[dict]) -> str:
    """Per dataset, one table per shot setting: rows = tasks (primary metric), columns = upstreams."""
    lines = []
    for dataset in sorted({dataset_of(r) for r in results}):
        lines += [f"## dataset: `{dataset}`", "", _dataset_tables([r for r in results if dataset_of(r) == dataset])]
    return "\n".join(lines)


def pooling_of(result: dict) -> str:
    """The pooling of a result (files written before pooling was recorded used the mean)."""
    recorded = (result.get("protocol") or {}).get("pooling")
    if recorded:
        return recorded
    return "frames" if result.get("task_kind") == "ctc" else "mean"


def _correct_matrix(block: dict) -> dict[tuple[int, str], int] | None:
    """``(seed, test item id) -> 0/1`` of one shot setting, or None when the file has no per-item data."""
    out = {}
    for run in block.get("per_seed", []):
        items = run.get("test_items")
        if not items or "correct" not in items:
            return None
        for item, hit in zip(items["ids"], items["correct"]):
            out[(run["seed"], item)] = int(hit)
    return out or None


def compare_to_best(task: str, entries: dict[str, tuple[dict, dict]]) -> tuple[str | None, dict[str, dict]]:
    """Paired comparison of every upstream with the best one on ``task`` (one shot setting, one pooling).

    ``entries`` maps column -> (result, block). The best column has the highest mean primary
    metric (lowest when lower is better). Each other column is compared with it on the same
    (seed, test item) pairs through a paired bootstrap of per-item exact-match correctness
    (``metrics.paired_bootstrap``, with McNemar's exact test when there is one seed); the
    answer says why when no test is possible (not classification, different protocols, no
    per-item predictions in the file, no common items).
    """
    def mean(column):
        result, block = entries[column]
        value = block["summary"][result["primary_metric"]]["mean"]
        return -value if result["primary_metric"] in result.get("lower_is_better", []) else value

    best = max(sorted(entries), key=mean)
    best_result, best_block = entries[best]
    out: dict[str, dict] = {}
    for column in sorted(entries):
        if column == best:
            continue
        result, block = entries[column]
        if result.get("task_kind") != "classification":
            out[column] = {"note": "no paired test (not a classification task)"}
            continue
        protocols = {(r.get("protocol") or {}).get("split") for r in (result, best_result)}
        if len(protocols) != 1:
            out[column] = {"note": "no paired test (different split protocols)"}
            continue
        a, b = _correct_matrix(best_block), _correct_matrix(block)
        if a is None or b is None:
            out[column] = {"note": "no paired test (a result file without per-item predictions)"}
            continue
        common = sorted(set(a) & set(b))
        if not common:
            out[column] = {"note": "no paired test (no common test items)"}
            continue
        seeds = sorted({seed for seed, _ in common})
        ids = sorted({item for seed, item in common if all((s_, item) in a and (s_, item) in b for s_ in seeds)})
        if not ids:
            out[column] = {"note": "no paired test (no test item common to every seed)"}
            continue
        matrix_a = np.array([[a[(s_, i)] for i in ids] for s_ in seeds])
        matrix_b = np.array([[b[(s_, i)] for i in ids] for s_ in seeds])
        out[column] = paired_bootstrap(matrix_b, matrix_a, seed=BOOTSTRAP_SEED).as_dict() | {"seeds": len(seeds)}
    return best, out


def _dataset_tables(results: list[dict]) -> str:
    """One dataset's tables, one per shot setting and pooling: rows = tasks (primary metric), columns = upstreams.

    Upstreams are only compared under the same pooling: a table never mixes mean-pooled and
    mean+std-pooled runs (frame-level tasks such as ASR have their own "frames" table). In
    each row the best upstream is in bold and those within noise of it (paired bootstrap
    interval of the difference containing 0) are marked with "≈"; the differences follow
    each table.
    """
    columns = sorted({_column(r) for r in results})
    by_table: dict[tuple[str, str], dict[tuple[str, str], tuple[dict, dict]]] = defaultdict(dict)
    metric_of: dict[str, str] = {}
    protocol_of: dict[tuple[str, str], set] = defaultdict(set)
    for r in results:
        metric_of[r["task"]] = r["primary_metric"] + (" (lower is better)" if r["primary_metric"] in r.get("lower_is_better", []) else "")
        pooling = pooling_of(r)
        protocol_of[(r["task"], pooling)].add((r.get("protocol") or {}).get("split", "not recorded"))
        for shots, block in r["results"].items():
            by_table[(shots, pooling)][(r["task"], _column(r))] = (r, block)
    lines = []
    for shots, pooling in sorted(by_table, key=lambda key: (_shots_order(key[0]), key[1])):
        cells = by_table[(shots, pooling)]
        used = [c for c in columns if any(col == c for _, col in cells)]
        lines += [f"### shots per class: {shots}, pooling: {pooling}", "",
                  "| task | metric | protocol | " + " | ".join(used) + " |",
                  "|---|---|---|" + "---|" * len(used)]
        notes = []
        for task in sorted({t for t, _ in cells}):
            entries = {col: cells[(task, col)] for col in used if (task, col) in cells}
            best, compared = compare_to_best(task, entries) if len(entries) > 1 else (None, {})
            row = []
            for col in used:
                if (task, col) not in cells:
                    row.append("-")
                    continue
                result, block = cells[(task, col)]
                s = block["summary"][result["primary_metric"]]
                text = f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})"
                if col == best:
                    text = f"**{text}**"
                elif compared.get(col, {}).get("tied"):
                    text = f"≈ {text}"
                row.append(text)
            protocol = "; ".join(sorted(protocol_of[(task, pooling)]))
            lines.append(f"| {task} | {metric_of[task]} | {protocol} | " + " | ".join(row) + " |")
            for col, c in compared.items():
                if "note" in c:
                    notes.append(f"- {task}: {col} vs {best}: {c['note']}")
                    continue
                verdict = "within noise" if c["tied"] else "different"
                mcnemar = f", McNemar p = {c['mcnemar_p']:.3g}" if c.get("mcnemar_p") is not None else ""
                notes.append(f"- {task}: {col} − {best} = {c['difference']:+.4f} accuracy "
                             f"[95% CI {c['ci_low']:+.4f}, {c['ci_high']:+.4f}] over {c['items']} items x "
                             f"{c['seeds']} seed(s){mcnemar}: {verdict}")
        lines.append("")
        if notes:
            lines += ["Paired comparisons with the best upstream (bold) of each task: per-item exact-match "
                      f"accuracy on the same test items and seeds, paired bootstrap (2000 resamples, seed "
                      f"{BOOTSTRAP_SEED}); ≈ marks an upstream whose interval contains 0.", ""] + notes + [""]
    return "\n".join(lines)


def plot_layer_weights(result: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = next((b for b in result["results"].values() if b["per_seed"] and b["per_seed"][0]["layer_weights"]), None)
    if block is None:
        return False
    weights = [s["layer_weights"] for s in block["per_seed"] if s["layer_weights"]]
    mean = [sum(col) / len(col) for col in zip(*weights)]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([str(layer) for layer in result["layers"]], mean)
    ax.set_xlabel("layer")
    ax.set_ylabel("softmax weight")
    ax.set_title(f"{result['task']} / {_column(result)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_fewshot_curves(results: list[dict], task: str, path: Path, *, label=None, title: str | None = None) -> bool:
    """Few-shot curves of ``task`` (the downstream's name); ``label(result)`` names each line
    (default: upstream and model), ``title`` replaces the task name in the title."""
    label = label or _column
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r["task"] == task and len(r["results"]) > 1]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        labels = sorted(r["results"], key=_shots_order)
        summaries = [r["results"][s]["summary"][r["primary_metric"]] for s in labels]
        xs = list(range(len(labels)))
        # no bar where no interval is computable (a single seed)
        low = [s["mean"] - s["ci_low"] if s.get("ci_low") is not None else 0.0 for s in summaries]
        high = [s["ci_high"] - s["mean"] if s.get("ci_high") is not None else 0.0 for s in summaries]
        ax.errorbar(xs, [s["mean"] for s in summaries], yerr=[low, high],
                    marker="o", capsize=3, label=label(r))
        ax.set_xticks(xs, labels)
    ax.set_xlabel("shots per class")
    ax.set_ylabel(runs[0]["primary_metric"])
    ax.set_title(f"{title or task}: few-shot curve (mean, 95% CI over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(folder: str | Path, output: str | Path) -> Path:
    """Markdown report of every result file under ``folder``, with PNG plots beside it."""
    results = load_results(folder)
    if not results:
        raise FileNotFoundError(f"no audioembed result files (*.json) under {folder}")
    output = Path(output)
    plots = output.with_suffix("").with_name(output.stem + "_plots")
    plots.mkdir(parents=True, exist_ok=True)
    lines = ["# audioembed downstream report", "", f"{len(results)} runs from `{folder}`; mean ± std over seeds "
             "(n = seeds), primary metric of each task.", "", summary_table(results), "## Plots", ""]
    datasets = sorted({dataset_of(r) for r in results})
    for number, dataset in enumerate(datasets):
        on_dataset = [r for r in results if dataset_of(r) == dataset]
        for task in sorted({r["task"] for r in on_dataset}):
            png = plots / (f"fewshot_{task}.png" if len(datasets) == 1 else f"fewshot_{task}_dataset{number + 1}.png")
            if plot_fewshot_curves(on_dataset, task, png):
                lines.append(f"![{task} few-shot on {dataset}]({plots.name}/{png.name})")
    for r in results:
        stem = Path(r["_file"]).stem
        png = plots / f"layers_{stem}.png"
        if plot_layer_weights(r, png):
            lines.append(f"![{stem} layer weights]({plots.name}/{png.name})")
    output.write_text("\n".join(lines) + "\n")
    return output
