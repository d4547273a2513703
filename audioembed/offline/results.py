"""``results.md`` of an offline reproduction, written only from the run's own result files.

Scores are compared across tasks through a per-task min-max normalisation over the
evaluated models (1 = best model on that task, 0 = worst; error rates are inverted first;
ASR is ranked by CER, see RANKING_METRIC), averaged
per domain; the overall score of a model is the mean of its speech and music averages.
That same number picks the unified student that is shipped as the default (the rule itself
is :mod:`.selection`).

Writing the page is two steps, so that a page can be rewritten from a finished run without
loading a model again: :func:`collect` gathers everything the page shows (scores, stage times,
set sizes, parameter counts and speeds) into ``OUT/report/page.json``; :func:`render_page`
and :func:`draw_figures` turn that data alone into the markdown and its plots. The run's own
page is ``OUT/results.md`` with its plots in ``OUT/report/``; :func:`publish_results` writes
the same page elsewhere (``docs/results.md`` with its plots in ``docs/results/``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .pipeline import TASK_DOMAINS, Context, models
from . import selection as rule
from .selection import Selection, select_unified_student

FEW_SHOT = 8  # the default shot count of the few-shot table (evaluation.report_shots)
#: tasks ranked by another metric than their primary one: a small CTC probe's WER sits near 1
#: for every model (most words have an error), so WER differences are noise; CER still ranks
RANKING_METRIC = {"asr": "cer"}
#: file of the page's data inside ``OUT/report/``
PAGE_DATA = "page.json"
#: the label column of each evaluation set (for its class count on the page)
LABEL_COLUMN = {"asr": "transcript", "speaker_id": "speaker", "fsdd": "digit", "key": "key", "style": "style",
                "tagging": "tags", "sonic_pi": "family"}


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
    """model -> speech / music / overall normalised score, over the recipe's task domains."""
    return rule.domain_scores(norm, TASK_DOMAINS)


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


def _sweep_points(dom: dict) -> list[tuple[float, str]]:
    return sorted((lam, name) for name in dom if (lam := _merge_lambda(name)) is not None)


def _plot_sweep(dom: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _sweep_points(dom)
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


def _fewshot_runs(results: dict, names: list[str], task: str) -> dict[str, dict]:
    """model -> result of ``task`` that has a few-shot curve (more than one shot setting)."""
    return {m: results[(m, task)] for m in names if (m, task) in results and len(results[(m, task)]["results"]) > 1}


def _plot_fewshot(results: dict, names: list[str], task: str, path: Path) -> bool:
    from ..report import plot_fewshot_curves

    runs = _fewshot_runs(results, names, task)
    if not runs:
        return False
    model_of = {id(r): m for m, r in runs.items()}
    return plot_fewshot_curves(list(runs.values()), next(iter(runs.values()))["task"], path,
                               label=lambda r: model_of[id(r)], title=task)


def _reading(dom_all: dict, dom_few: dict, kinds: dict[str, str], few: str) -> list[str]:
    """Short answers to the papers' questions, computed from the normalised scores."""
    lines = []
    multi = [m for m, k in kinds.items() if k == "multi" and m in dom_all]
    merges = [m for m, k in kinds.items() if k == "merge" and m in dom_all]
    teachers = [m for m, k in kinds.items() if k == "teacher" and m in dom_all]

    def best_teacher(dom: dict, key: str) -> str | None:
        have = [t for t in teachers if t in dom and math.isfinite(dom[t][key])]
        return max(have, key=lambda t: (dom[t][key], t)) if have else None

    ts, tm = best_teacher(dom_all, "speech"), best_teacher(dom_all, "music")
    base = dom_all.get("mfcc")
    for m in multi:
        d = dom_all[m]
        if ts and tm:
            lines.append(f"- **Paper A, {m}**: speech {d['speech']:.3f} vs the best speech teacher ({ts}) "
                         f"{dom_all[ts]['speech']:.3f}; music {d['music']:.3f} vs the best music teacher ({tm}) "
                         f"{dom_all[tm]['music']:.3f}.")
    if merges and multi:
        best_merge = max(merges, key=lambda m: dom_all[m]["overall"])
        ensemble = "multi_every" if "multi_every" in dom_all else multi[0]
        a, b = dom_all[best_merge]["overall"], dom_all[ensemble]["overall"]
        verdict = "beats" if a > b else "does not beat"
        lines.append(f"- **Paper B**: the best merge ({best_merge}, overall {a:.3f}) {verdict} ensemble "
                     f"distillation ({ensemble}, overall {b:.3f}).")
    few_multi = [m for m in multi if m in dom_few]
    tf = best_teacher(dom_few, "overall") if dom_few else None
    if few_multi and tf:
        best_multi = max(few_multi, key=lambda m: dom_few[m]["overall"])
        u, t = dom_few[best_multi]["overall"], dom_few[tf]["overall"]
        verdict = "wins" if u > t else "does not win"
        lines.append(f"- **Few-shot ({few} shots)**: the best multi-teacher student ({best_multi}, overall {u:.3f}) "
                     f"{verdict} against the best teacher ({tf}, overall {t:.3f}).")
    if base:
        for domain in ("speech", "music"):
            above = sorted(m for m, d in dom_all.items() if m != "mfcc" and d[domain] > base[domain])
            lines.append(f"- **{domain} vs the mfcc baseline** ({base[domain]:.3f}): "
                         + (f"above it: {', '.join(above)}." if above else "no model is above it."))
    return lines


def target_rows(results: dict, tasks: list[str], kinds: dict[str, str], pick: str | None,
                few: str) -> list[tuple[str, str, str, str, float | None, float | None, str]]:
    """The pick against every baseline and every ``previous`` model, per task, on the full
    training sets and at ``few`` shots: (task, column, rival, better?, pick value, rival value, metric).

    "better" compares the task's ranking metric in its own direction; a missing cell is "n/a"."""
    rows = []
    if pick is None:
        return rows
    rivals = sorted(m for m, k in kinds.items() if k in ("baseline", "previous"))
    for task in tasks:
        mine = results.get((pick, task))
        if mine is None:
            continue
        metric = ranking_metric(mine, task)
        lower = _lower_better(mine, metric)
        for column in ("all",) + ((few,) if few and few != "all" else ()):
            a = score(mine, column, metric)
            for rival in rivals:
                theirs = results.get((rival, task))
                b = score(theirs, column, metric) if theirs is not None else None
                if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                    verdict = "n/a"
                else:
                    verdict = "yes" if (a < b if lower else a > b) else "no"
                rows.append((task, "full" if column == "all" else f"{few} shots", rival, verdict, a, b, metric))
    return rows


def _summary(results: dict, names: list[str], tasks: list[str], kinds: dict[str, str], dom_all: dict,
             selection: Selection) -> list[str]:
    """The page's summary, computed from the full-training-set numbers: per task the best model
    (by the ranking metric) and the best model that is not the mfcc baseline; the best model
    overall; the selected unified student."""
    lines = []
    for task in tasks:
        have = {m: results[(m, task)] for m in names if (m, task) in results}
        metric = {m: ranking_metric(r, task) for m, r in have.items()}
        values = {m: score(r, "all", metric[m]) for m, r in have.items()}
        values = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
        if not values:
            continue
        first = next(iter(values))
        lower = _lower_better(have[first], metric[first])
        order = sorted(values, key=lambda m: (values[m] if lower else -values[m], m))
        best = order[0]
        line = f"- **{task}** ({metric[first]}, {'lower' if lower else 'higher'} is better): best {best} {values[best]:.3f}"
        others = [m for m in order if kinds.get(m) != "baseline"]
        if others and others[0] != best:
            line += f"; best pretrained model {others[0]} {values[others[0]]:.3f}"
        lines.append(line + ".")
    finite = {m: d["overall"] for m, d in dom_all.items() if math.isfinite(d["overall"])}
    if finite:
        top = min(finite, key=lambda m: (-finite[m], m))
        lines.append(f"- **Best overall**: {top} ({kinds.get(top, '?')}, overall {finite[top]:.3f}).")
    if selection.best is not None:
        lines.append(f"- **Selected unified student**: {selection.best} (overall {selection.overall:.3f}).")
    else:
        lines.append("- **Selected unified student**: none (no multi-teacher student or merge has results on "
                     "every task).")
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


def _stage_times(ctx: Context) -> list[list]:
    """[stage, seconds] of every finished stage before the report."""
    from .pipeline import STAGES

    times = []
    for stage in STAGES[:-1]:  # every stage before this report
        done = ctx.done(stage)
        if done and "seconds" in done:
            times.append([stage, float(done["seconds"])])
    return times


def _evalset_rows(ctx: Context) -> list[dict]:
    """Size, split and class count of each evaluation set, so the page says what the numbers rest on."""
    from .evalsets import describe

    rows = []
    for name, t in ((ctx.done("evalsets") or {}).get("tasks", {})).items():
        d = describe(Path(t["data"]), LABEL_COLUMN.get(name, "label"))
        rows.append({"task": name, **d})
    return rows


def _slim(result: dict) -> dict:
    """The part of a result file the page shows (summaries only, no per-seed details)."""
    return {"task": result["task"], "primary_metric": result["primary_metric"],
            "lower_is_better": list(result.get("lower_is_better", [])),
            "config": {"seeds": result["config"]["seeds"]},
            "task_kind": result.get("task_kind"), "protocol": result.get("protocol") or {},
            "results": {shots: {"summary": block["summary"]} for shots, block in result["results"].items()}}


def collect(ctx: Context, log=None) -> dict:
    """Everything the page shows, as JSON-ready data (parameter counts and speeds are measured
    here, once; a model that no longer loads is reported, not fatal)."""
    log = log or ctx.log
    results = _load(ctx)
    table = models(ctx)
    names = list(table)
    tasks = [t for t in (ctx.done("evalsets") or {}).get("tasks", {}) if any((m, t) in results for m in names)]
    model_rows = []
    for m, spec in table.items():
        try:
            params, rtf = _params_and_speed(spec)
        except Exception as exc:
            log(f"warning: cannot time {m}: {exc}")
            params, rtf = None, None
        model_rows.append({"name": m, "kind": spec["kind"], "upstream": spec["upstream"],
                           "parameters": params, "speed": rtf})
    return {"run": ctx.output_dir.name, "recipe": Path(ctx.source).name, "few_shot": few_shot_count(ctx, results),
            "stages": _stage_times(ctx), "evalsets": _evalset_rows(ctx), "models": model_rows, "tasks": tasks,
            "results": [{"model": m, "name": t, **_slim(r)} for (m, t), r in sorted(results.items())]}


class PageScores:
    """The page data's numbers, in the shapes the tables, the summary and the rule need."""

    def __init__(self, data: dict):
        self.names = [m["name"] for m in data["models"]]
        self.kinds = {m["name"]: m["kind"] for m in data["models"]}
        self.tasks = list(data["tasks"])
        self.few = data["few_shot"]
        # keyed by the recipe's task name ("name"); "task" is the downstream that ran it (e.g. classify)
        self.results = {(r["model"], r["name"]): r for r in data["results"]}
        self.norm_all = normalised(self.results, self.names, self.tasks, "all")
        self.norm_few = normalised(self.results, self.names, self.tasks, self.few) if self.few else {}
        self.dom_all, self.dom_few = domain_scores(self.norm_all), domain_scores(self.norm_few)
        self.selection = select_unified_student(self.norm_all, self.kinds, TASK_DOMAINS)


def figure_names(data: dict) -> list[str]:
    """The plots the page shows, in page order (file names inside its figure folder)."""
    s = PageScores(data)
    names = ["lambda_sweep.png"] if _sweep_points(s.dom_all) else []
    return names + [f"fewshot_{t}.png" for t in s.tasks if _fewshot_runs(s.results, s.names, t)]


def draw_figures(data: dict, folder: Path) -> list[str]:
    """Draw the page's plots into ``folder``; returns the file names drawn."""
    s = PageScores(data)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = ["lambda_sweep.png"] if _plot_sweep(s.dom_all, folder / "lambda_sweep.png") else []
    return drawn + [f"fewshot_{t}.png" for t in s.tasks
                    if _plot_fewshot(s.results, s.names, t, folder / f"fewshot_{t}.png")]


def _run_lines(data: dict) -> list[str]:
    lines = ["## Run", "", "| stage | wall time |", "|---|---:|"]
    total = 0.0
    for stage, seconds in data["stages"]:
        total += seconds
        lines.append(f"| {stage} | {seconds / 60:.1f} min |")
    lines += [f"| total | {total / 60:.1f} min |", "",
              "A stage's time is that of the invocation that finished it: a stage resumed after an "
              "interruption counts only its last part.", ""]
    if data["evalsets"]:
        lines += ["| task | rows | train / dev / test | classes |", "|---|---:|---|---:|"]
        for d in data["evalsets"]:
            sp = d["splits"]
            split = " / ".join(str(sp.get(k, 0)) for k in ("train", "dev", "test")) if "train" in sp else "k-fold"
            classes = "-" if d["task"] == "asr" else str(d["classes"])
            lines.append(f"| {d['task']} | {d['rows']} | {split} | {classes} |")
        lines.append("")
    return lines


def render_page(data: dict, figures: str, figure_files: list[str] | None = None) -> str:
    """The results page from the page data alone; ``figures`` is the plots' folder relative to
    the page, ``figure_files`` the plots drawn there (default: every plot the data has)."""
    s = PageScores(data)
    shown = figure_names(data) if figure_files is None else figure_files
    lines = ["# Offline reproduction: results", "",
             f"Written by `audioembed reproduce` from the run in `{data['run']}/` "
             f"(recipe `{data['recipe']}`). Primary metric per task; mean ± std over seeds.", "",
             pooling_line(s.results, s.tasks), ""]
    lines += ["## Summary", ""] + _summary(s.results, s.names, s.tasks, s.kinds, s.dom_all, s.selection) + [""]
    lines += _run_lines(data)
    lines += ["## Models", "", "| model | kind | upstream | parameters | speed (x real time, CPU) |", "|---|---|---|---|---|"]
    for m in data["models"]:
        params, rtf = m["parameters"], m["speed"]
        lines.append(f"| {m['name']} | {m['kind']} | {m['upstream']} | "
                     f"{'-' if params is None else f'{params / 1e6:.3g} M'} | {'-' if rtf is None else f'{rtf:.0f}'} |")
    tasks = s.tasks
    tables = [("all", "Full training sets")] + ([(s.few, f"Few-shot: {s.few} examples per class")] if s.few else [])
    for shots, title in tables:
        lines += ["", f"## {title}", "",
                  "| model | " + " | ".join(f"{t} ({TASK_DOMAINS[t]})" for t in tasks) + " | speech | music | overall |",
                  "|---|" + "---|" * (len(tasks) + 3)]
        dom = s.dom_all if shots == "all" else s.dom_few
        for m in s.names:
            cells = [_fmt(s.results.get((m, t)), shots, t) for t in tasks]
            d = dom.get(m, {})
            lines.append(f"| {m} | " + " | ".join(cells) + " | "
                         + " | ".join(f"{d.get(k, float('nan')):.3f}" for k in ("speech", "music", "overall")) + " |")

    def metric_note(t: str) -> str:
        r = next(r for (m, tt), r in s.results.items() if tt == t)
        ranked = ranking_metric(r, t)
        return f"{t}: {r['primary_metric']}" + (f" (ranked by {ranked})" if ranked != r["primary_metric"] else "")

    lines += ["", "Metrics: " + ", ".join(metric_note(t) for t in tasks)
              + ". speech / music / overall: normalised scores (1 = best model on a task, 0 = worst)."]
    if "lambda_sweep.png" in shown:
        lines += ["", "## Lambda sweep", "", f"![lambda sweep]({figures}/lambda_sweep.png)"]
    curves = [t for t in tasks if f"fewshot_{t}.png" in shown]
    if curves:
        lines += ["", "## Few-shot curves", ""] + [f"![{t}]({figures}/fewshot_{t}.png)" for t in curves]
    lines += ["", "## Reading", ""] + _reading(s.dom_all, s.dom_few, s.kinds, s.few)
    if s.selection.best is not None:
        lines += ["", f"**Selected unified student: {s.selection.best}** (highest overall normalised score on the "
                  "full training sets among multi-teacher students and merges); copied to `unified_student/`."]
    targets = target_rows(s.results, tasks, s.kinds, s.selection.best, s.few or "all")
    if targets:
        wins = sum(row[3] == "yes" for row in targets)
        lines += ["", "## The selected student against the baselines and the previous default", "",
                  f"Per task, full training sets and {s.few} shots: is {s.selection.best} better than each baseline and "
                  f"each model of kind `previous` (ranking metric, mean over seeds)? Better in {wins} of "
                  f"{len(targets)} comparisons.", "",
                  "| task | training set | rival | better? | selected | rival |", "|---|---|---|---|---:|---:|"]
        for task, column, rival, verdict, a, b, metric in targets:
            fa = "-" if a is None else f"{a:.3f}"
            fb = "-" if b is None else f"{b:.3f}"
            lines.append(f"| {task} ({metric}) | {column} | {rival} | {verdict} | {fa} | {fb} |")
    if s.selection.skipped:
        lines += ["", "Not eligible for the selection: "
                  + "; ".join(f"{m} ({why})" for m, why in s.selection.skipped.items()) + "."]
    return "\n".join(lines) + "\n"


def write_page(data: dict, page: Path, figures: Path) -> Path:
    """Draw the plots into ``figures`` and write ``page`` with links relative to the page."""
    drawn = draw_figures(data, figures)
    link = Path(os.path.relpath(Path(figures).resolve(), Path(page).resolve().parent)).as_posix()
    page.write_text(render_page(data, link, drawn))
    return page


def write_results(ctx: Context) -> dict:
    """The report stage: gather the page data, write ``OUT/results.md`` and its plots, copy the
    selected unified student to ``OUT/unified_student/``."""
    data = collect(ctx)
    out_dir = ctx.dir("report")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PAGE_DATA).write_text(json.dumps(data, indent=1))
    s = PageScores(data)
    best = s.selection.best
    if best is not None:
        target = ctx.dir("unified_student")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(models(ctx)[best]["model"], target)
    path = write_page(data, ctx.dir("results.md"), out_dir)
    summary = {"results_md": str(path), "best": best, "scores": s.dom_all, "few_shot_scores": s.dom_few}
    (out_dir / "scores.json").write_text(json.dumps(summary, indent=1))
    return summary


def publish_results(run_dir: Path, page: Path) -> Path:
    """Rewrite a finished run's page at ``page`` (e.g. docs/results.md) from its stored page data,
    with the plots redrawn in the folder named after the page (docs/results/)."""
    data_file = Path(run_dir) / "report" / PAGE_DATA
    if not data_file.is_file():
        raise FileNotFoundError(f"{data_file}: no page data; run the recipe's report stage first")
    data = json.loads(data_file.read_text())
    return write_page(data, Path(page), Path(page).with_suffix(""))
