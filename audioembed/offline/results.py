"""``results.md`` of an offline reproduction, written only from the run's own result files.

Scores are compared across tasks through a per-task min-max normalisation over the
evaluated models (1 = best model on that task, 0 = worst; error rates are inverted first;
ASR is ranked by CER, see RANKING_METRIC), averaged
per domain; the overall score of a model is the mean of its speech and music averages.
That same number picks the unified student that is shipped as the default.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .pipeline import TASK_DOMAINS, Context, models

FEW_SHOT = 8  # the default shot count of the few-shot table (evaluation.report_shots)
#: tasks ranked by another metric than their primary one: a small CTC probe's WER sits near 1
#: for every model (most words have an error), so WER differences are noise; CER still ranks
RANKING_METRIC = {"asr": "cer"}


def few_shot_count(ctx: Context, results: dict) -> str:
    """The shot count of the few-shot table: ``evaluation.report_shots`` when the results have
    it, else the largest few-shot count they have ("" when none)."""
    wanted = str(ctx.section("evaluation").get("report_shots", FEW_SHOT))
    have = {s for r in results.values() for s in r["results"] if s != "all"}
    if wanted in have:
        return wanted
    return str(max(map(int, have))) if have else ""


def _load(ctx: Context) -> dict[tuple[str, str], dict]:
    """Every finished (model, task) result, read from the per-result markers of ``evaluate``
    (so a page can be written while evaluation is still running: ``--only report``)."""
    out = {}
    for marker in sorted(ctx.dir("results").glob("*/*.json")):
        record = json.loads(marker.read_text())
        out[(record["model"], record["task"])] = json.loads(Path(record["result"]).read_text())
    return out


def ranking_metric(result: dict, task: str) -> str:
    wanted = RANKING_METRIC.get(task)
    block = next(iter(result["results"].values()), {})
    return wanted if wanted and wanted in block.get("summary", {}) else result["primary_metric"]


def score(result: dict, shots: str = "all", metric: str | None = None) -> float | None:
    block = result["results"].get(shots)
    if block is None:
        return None
    return float(block["summary"][metric or result["primary_metric"]]["mean"])


def _lower_better(result: dict, metric: str) -> bool:
    return metric in result.get("lower_is_better", [])


def normalised(results: dict[tuple[str, str], dict], names: list[str], tasks: list[str], shots: str) -> dict:
    """model -> task -> score in [0, 1] (1 = best of the models on that task)."""
    table: dict[str, dict[str, float]] = {m: {} for m in names}
    for task in tasks:
        metric = {m: ranking_metric(results[(m, task)], task) for m in names if (m, task) in results}
        values = {m: score(results[(m, task)], shots, metric[m]) for m in metric}
        values = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
        if not values:
            continue
        first = next(iter(values))
        sign = -1.0 if _lower_better(results[(first, task)], metric[first]) else 1.0
        lo, hi = min(sign * v for v in values.values()), max(sign * v for v in values.values())
        for m, v in values.items():
            table[m][task] = 1.0 if hi == lo else (sign * v - lo) / (hi - lo)
    return table


def domain_scores(norm: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for model, per_task in norm.items():
        speech = [v for t, v in per_task.items() if TASK_DOMAINS.get(t) == "speech"]
        music = [v for t, v in per_task.items() if TASK_DOMAINS.get(t) == "music"]
        s = float(np.mean(speech)) if speech else float("nan")
        mu = float(np.mean(music)) if music else float("nan")
        out[model] = {"speech": s, "music": mu, "overall": float(np.nanmean([s, mu])) if speech or music else float("nan")}
    return out


def _params_and_speed(spec: dict, device: str = "cpu", seconds: float = 10.0) -> tuple[int, float]:
    """Parameter count and real-time factor (audio seconds per wall second) on 10 s of noise."""
    import torch

    from .. import load_upstream

    upstream = load_upstream(spec["upstream"], model=spec["model"], device=device)
    params = sum(p.numel() for p in upstream.parameters())
    rng = np.random.default_rng(0)
    wav = torch.from_numpy(rng.standard_normal(int(seconds * upstream.sample_rate)).astype(np.float32) * 0.1)[None]
    lengths = torch.tensor([wav.shape[1]])
    with torch.no_grad():
        upstream(wav, lengths)  # warm-up
        started = time.perf_counter()
        for _ in range(3):
            upstream(wav, lengths)
        elapsed = (time.perf_counter() - started) / 3
    return params, seconds / elapsed


def _fmt(result: dict | None, shots: str, task: str) -> str:
    if result is None or shots not in result["results"]:
        return "-"
    summary = result["results"][shots]["summary"]
    cells = []
    for metric in dict.fromkeys([result["primary_metric"], ranking_metric(result, task)]):
        s = summary[metric]
        value = f"{s['mean']:.3f} ± {s['std']:.3f}" if s.get("std") is not None and result["config"]["seeds"] > 1 else f"{s['mean']:.3f}"
        cells.append(value if metric == result["primary_metric"] else f"({metric} {value})")
    return " ".join(cells)


def _merge_lambda(name: str) -> float | None:
    m = re.fullmatch(r"merge_l([0-9.]+)-([0-9.]+)", name)
    return float(m.group(1)) if m else None


def _plot_sweep(ctx: Context, dom: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((lam, name) for name in dom if (lam := _merge_lambda(name)) is not None)
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [lam for lam, _ in points]
    for key, marker in (("speech", "o"), ("music", "s"), ("overall", "^")):
        ax.plot(xs, [dom[n][key] for _, n in points], marker=marker, label=f"merge: {key}")
    for name, d in dom.items():
        if name.startswith("multi"):
            ax.axhline(d["overall"], linestyle="--", linewidth=1, label=f"{name}: overall")
    ax.set_xlabel("lambda_speech (lambda_music = 1 - lambda_speech)")
    ax.set_ylabel("normalised score (1 = best model per task)")
    ax.set_title("Task-vector merges over the lambda grid")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_fewshot(results: dict, names: list[str], task: str, path: Path) -> bool:
    from ..report import plot_fewshot_curves

    runs = {m: results[(m, task)] for m in names if (m, task) in results}
    if not runs:
        return False
    model_of = {id(r): m for m, r in runs.items()}
    return plot_fewshot_curves(list(runs.values()), next(iter(runs.values()))["task"], path,
                               label=lambda r: model_of[id(r)], title=task)


def _reading(dom_all: dict, dom_few: dict, kinds: dict[str, str], few: str) -> list[str]:
    """Short answers to the papers' questions, computed from the normalised scores."""
    lines = []
    multi = [m for m, k in kinds.items() if k == "multi"]
    merges = [m for m, k in kinds.items() if k == "merge"]
    ts, tm = dom_all.get("teacher_speech"), dom_all.get("teacher_music")
    base = dom_all.get("mfcc")
    for m in multi:
        d = dom_all[m]
        if ts and tm:
            lines.append(f"- **Paper A, {m}**: speech {d['speech']:.3f} vs speech teacher {ts['speech']:.3f}; "
                         f"music {d['music']:.3f} vs music teacher {tm['music']:.3f}.")
    if merges and multi:
        best_merge = max(merges, key=lambda m: dom_all[m]["overall"])
        ensemble = "multi_every" if "multi_every" in dom_all else multi[0]
        a, b = dom_all[best_merge]["overall"], dom_all[ensemble]["overall"]
        verdict = "beats" if a > b else "does not beat"
        lines.append(f"- **Paper B**: the best merge ({best_merge}, overall {a:.3f}) {verdict} ensemble "
                     f"distillation ({ensemble}, overall {b:.3f}).")
    if dom_few and multi and ts and tm:
        best_multi = max(multi, key=lambda m: dom_few.get(m, {}).get("overall", float("-inf")))
        u = dom_few[best_multi]["overall"]
        t = max(dom_few["teacher_speech"]["overall"], dom_few["teacher_music"]["overall"])
        verdict = "wins" if u > t else "does not win"
        lines.append(f"- **Few-shot ({few} shots)**: the best multi-teacher student ({best_multi}, overall {u:.3f}) "
                     f"{verdict} against the better teacher (overall {t:.3f}).")
    if base:
        for domain in ("speech", "music"):
            above = sorted(m for m, d in dom_all.items() if m != "mfcc" and d[domain] > base[domain])
            lines.append(f"- **{domain} vs the mfcc baseline** ({base[domain]:.3f}): "
                         + (f"above it: {', '.join(above)}." if above else "no model is above it."))
    return lines


def _run_summary(ctx: Context) -> list[str]:
    """Stage wall times and evaluation-set sizes, so the page says what the numbers rest on."""
    from .evalsets import describe
    from .pipeline import STAGES

    lines = ["## Run", "", "| stage | wall time |", "|---|---:|"]
    total = 0.0
    for stage in STAGES[:-1]:  # every stage before this report
        done = ctx.done(stage)
        if done and "seconds" in done:
            total += float(done["seconds"])
            lines.append(f"| {stage} | {float(done['seconds']) / 60:.1f} min |")
    lines += [f"| total | {total / 60:.1f} min |", "",
              "A stage's time is that of the invocation that finished it: a stage resumed after an "
              "interruption counts only its last part.", ""]
    label = {"asr": "transcript", "speaker_id": "speaker", "fsdd": "digit", "key": "key", "style": "style",
             "tagging": "tags", "sonic_pi": "family"}
    tasks = (ctx.done("evalsets") or {}).get("tasks", {})
    if tasks:
        lines += ["| task | rows | train / dev / test | classes |", "|---|---:|---|---:|"]
        for name, t in tasks.items():
            d = describe(Path(t["data"]), label.get(name, "label"))
            sp = d["splits"]
            split = " / ".join(str(sp.get(k, 0)) for k in ("train", "dev", "test")) if "train" in sp else "k-fold"
            classes = "-" if name == "asr" else str(d["classes"])
            lines.append(f"| {name} | {d['rows']} | {split} | {classes} |")
        lines.append("")
    return lines


def pooling_line(results: dict[tuple[str, str], dict], tasks: list[str]) -> str:
    """Which pooling each task's probes saw, read from the result files (never assumed)."""
    from ..report import pooling_of

    by_pooling: dict[str, list[str]] = {}
    for t in tasks:
        used = sorted({pooling_of(r) for (m, tt), r in results.items() if tt == t})
        by_pooling.setdefault(", ".join(used), []).append(t)
    parts = [f"{pooling} ({', '.join(ts)})" for pooling, ts in sorted(by_pooling.items())]
    return "Pooling of the probes' features: " + ("; ".join(parts) if parts else "no results yet") + "."


def write_results(ctx: Context) -> dict:
    results = _load(ctx)
    table = models(ctx)
    names = list(table)
    tasks = [t for t in (ctx.done("evalsets") or {}).get("tasks", {}) if any((m, t) in results for m in names)]
    kinds = {m: spec["kind"] for m, spec in table.items()}
    norm_all = normalised(results, names, tasks, "all")
    few = few_shot_count(ctx, results)
    norm_few = normalised(results, names, tasks, few) if few else {}
    dom_all, dom_few = domain_scores(norm_all), domain_scores(norm_few)
    out_dir = ctx.dir("report")
    out_dir.mkdir(parents=True, exist_ok=True)

    speed = {}
    for m, spec in table.items():
        try:
            speed[m] = _params_and_speed(spec)
        except Exception as exc:  # a model that no longer loads is reported, not fatal
            ctx.log(f"warning: cannot time {m}: {exc}")
            speed[m] = (None, None)

    unified = [m for m in names if kinds[m] in ("multi", "merge") and m in dom_all]
    best = max(unified, key=lambda m: dom_all[m]["overall"]) if unified else None
    if best is not None:
        target = ctx.dir("unified_student")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(table[best]["model"], target)

    lines = ["# Offline reproduction: results", "",
             f"Written by `audioembed reproduce` from the run in `{ctx.output_dir.name}/` "
             f"(recipe `{Path(ctx.source).name}`). Primary metric per task; mean ± std over seeds.",
             "", pooling_line(results, tasks), ""]
    lines += _run_summary(ctx)
    lines += ["## Models", "", "| model | kind | upstream | parameters | speed (x real time, CPU) |", "|---|---|---|---|---|"]
    for m in names:
        params, rtf = speed[m]
        lines.append(f"| {m} | {kinds[m]} | {table[m]['upstream']} | "
                     f"{'-' if params is None else f'{params / 1e6:.3g} M'} | {'-' if rtf is None else f'{rtf:.0f}'} |")
    tables = [("all", "Full training sets")] + ([(few, f"Few-shot: {few} examples per class")] if few else [])
    for shots, title in tables:
        lines += ["", f"## {title}", "",
                  "| model | " + " | ".join(f"{t} ({TASK_DOMAINS[t]})" for t in tasks) + " | speech | music | overall |",
                  "|---|" + "---|" * (len(tasks) + 3)]
        dom = dom_all if shots == "all" else dom_few
        for m in names:
            cells = [_fmt(results.get((m, t)), shots, t) for t in tasks]
            d = dom.get(m, {})
            lines.append(f"| {m} | " + " | ".join(cells) + " | "
                         + " | ".join(f"{d.get(k, float('nan')):.3f}" for k in ("speech", "music", "overall")) + " |")
    def metric_note(t: str) -> str:
        r = next(r for (m, tt), r in results.items() if tt == t)
        ranked = ranking_metric(r, t)
        return f"{t}: {r['primary_metric']}" + (f" (ranked by {ranked})" if ranked != r["primary_metric"] else "")

    lines += ["", "Metrics: " + ", ".join(metric_note(t) for t in tasks)
              + ". speech / music / overall: normalised scores (1 = best model on a task, 0 = worst)."]
    if _plot_sweep(ctx, dom_all, out_dir / "lambda_sweep.png"):
        lines += ["", "## Lambda sweep", "", "![lambda sweep](report/lambda_sweep.png)"]
    plots = [t for t in tasks if _plot_fewshot(results, names, t, out_dir / f"fewshot_{t}.png")]
    if plots:
        lines += ["", "## Few-shot curves", ""] + [f"![{t}](report/fewshot_{t}.png)" for t in plots]
    lines += ["", "## Reading", ""] + _reading(dom_all, dom_few, kinds, few)
    if best is not None:
        lines += ["", f"**Selected unified student: {best}** (highest overall normalised score on the full "
                  "training sets among multi-teacher students and merges); copied to `unified_student/`."]
    path = ctx.dir("results.md")
    path.write_text("\n".join(lines) + "\n")
    summary = {"results_md": str(path), "best": best, "scores": dom_all, "few_shot_scores": dom_few}
    (out_dir / "scores.json").write_text(json.dumps(summary, indent=1))
    return summary
