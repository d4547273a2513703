"""Per-domain and per-category macro averages for eval and score results.

Every cell says how many tasks it averages, because domains differ widely in how many
instances they hold (and a domain mean over two tasks should not read like one over fifty).
Metrics are averaged only with their own kind (accuracy with accuracy, ...), never mixed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from .catalog import DOMAINS


def macro_average_rows(items: Iterable[dict], group_keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    """Rows of ``{group..., metric: (mean, n)}``: the unweighted mean over the tasks of each group.

    ``items`` are ``{"domain": ..., "category": ..., "values": {metric: value}}``; a task adds to
    a metric's cell only when it has a value for that metric. A final row groups everything.
    """
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        for key in (tuple(item[k] for k in group_keys), ("all",) + ("",) * (len(group_keys) - 1)):
            for metric in metrics:
                value = item["values"].get(metric)
                if value is not None:
                    groups[key][metric].append(float(value))
    rank = {d: i for i, d in enumerate(DOMAINS)}
    ordered = sorted((k for k in groups if k[0] != "all"), key=lambda k: (rank.get(k[0], len(rank)), k))
    ordered += [k for k in groups if k[0] == "all"]
    rows = []
    for key in ordered:
        row = dict(zip(group_keys, key))
        for metric in metrics:
            values = groups[key].get(metric, [])
            row[metric] = {"mean": sum(values) / len(values), "tasks": len(values)} if values else None
        rows.append(row)
    return rows


def markdown_macro_table(items: list[dict], group_keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
    metrics = [m for m in metrics if any(i["values"].get(m) is not None for i in items)]
    if not metrics:
        return ["(no scored task)", ""]
    lines = ["| " + " | ".join([*group_keys, *metrics]) + " |", "|---" * (len(group_keys) + len(metrics)) + "|"]
    for row in macro_average_rows(items, group_keys, metrics):
        cells = [row[k] for k in group_keys]
        for metric in metrics:
            cell = row[metric]
            cells.append(f"{cell['mean']:.3f} (n={cell['tasks']})" if cell else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]
