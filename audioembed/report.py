"""Gather downstream result files into one tasks x upstreams table and plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


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


def pooling_of(result: dict) -> str:
    """The pooling of a result (files written before pooling was recorded used the mean)."""
    recorded = (result.get("protocol") or {}).get("pooling")
    if recorded:
        return recorded
    return "frames" if result.get("task_kind") == "ctc" else "mean"


def summary_table(results: list[dict]) -> str:
    """One table per shot setting and pooling: rows = tasks (primary metric), columns = upstreams.

    Upstreams are only compared under the same pooling: a table never mixes mean-pooled and
    mean+std-pooled runs (frame-level tasks such as ASR have their own "frames" table).
    """
    columns = sorted({_column(r) for r in results})
    by_table: dict[tuple[str, str], dict[tuple[str, str], dict]] = defaultdict(dict)
    metric_of: dict[str, str] = {}
    protocol_of: dict[tuple[str, str], set] = defaultdict(set)
    for r in results:
        metric_of[r["task"]] = r["primary_metric"] + (" (lower is better)" if r["primary_metric"] in r.get("lower_is_better", []) else "")
        pooling = pooling_of(r)
        protocol_of[(r["task"], pooling)].add((r.get("protocol") or {}).get("split", "not recorded"))
        for shots, block in r["results"].items():
            by_table[(shots, pooling)][(r["task"], _column(r))] = block["summary"][r["primary_metric"]]
    lines = []
    for shots, pooling in sorted(by_table, key=lambda key: (_shots_order(key[0]), key[1])):
        cells = by_table[(shots, pooling)]
        used = [c for c in columns if any(col == c for _, col in cells)]
        lines += [f"## shots per class: {shots}, pooling: {pooling}", "",
                  "| task | metric | protocol | " + " | ".join(used) + " |",
                  "|---|---|---|" + "---|" * len(used)]
        for task in sorted({t for t, _ in cells}):
            row = []
            for col in used:
                s = cells.get((task, col))
                row.append(f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})" if s else "-")
            protocol = "; ".join(sorted(protocol_of[(task, pooling)]))
            lines.append(f"| {task} | {metric_of[task]} | {protocol} | " + " | ".join(row) + " |")
        lines.append("")
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
        ax.errorbar(xs, [s["mean"] for s in summaries],
                    yerr=[[s["mean"] - s["ci_low"] for s in summaries], [s["ci_high"] - s["mean"] for s in summaries]],
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
    for task in sorted({r["task"] for r in results}):
        png = plots / f"fewshot_{task}.png"
        if plot_fewshot_curves(results, task, png):
            lines.append(f"![{task} few-shot]({plots.name}/{png.name})")
    for r in results:
        stem = Path(r["_file"]).stem
        png = plots / f"layers_{stem}.png"
        if plot_layer_weights(r, png):
            lines.append(f"![{stem} layer weights]({plots.name}/{png.name})")
    output.write_text("\n".join(lines) + "\n")
    return output
