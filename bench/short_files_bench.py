#!/usr/bin/env python
"""What ``audioembed extract`` costs per file when the files are short (the README Quickstart).

The bundled student computes a 0.5 s clip in a few milliseconds, so on many short files the
cost is in what is done once per file and per forward pass. This script measures it as a
user runs it (the ``audioembed`` command in a fresh process, ``--threads 1``), for this tree
and, with ``--baseline REV``, for the code of git revision REV (``git archive`` into a
temporary folder; the built-in plugins are the installed ones for both), on

* ``fsdd``: the first ``--fsdd-files`` FSDD recordings in name order (``/work/shared/data/fsdd``
  or ``--fsdd``; 0.14-2.3 s at 8 kHz; ``--fsdd-files 0`` = all 3000, the whole Quickstart);
* ``tiny``: ``--tiny-files`` seeded synthetic files of 0.1-0.4 s at 16 kHz.

CPU time is the main figure: other load on the machine stretches wall time far more than CPU
time. The whole process's CPU time comes from ``getrusage``; the extraction's own (from opening
the feature file to closing it: input check, decoding, model, store; without start-up, imports
and model loading) is taken in the process, by running the command line through a small wrapper
that subclasses the public ``FeatureWriter`` the command uses. Runs are interleaved (before,
after, before, ...) ``--repeats`` times; medians are reported. ``--busy`` adds a
second pass with one busy-loop process per usable core (each stops by itself after
``--busy-seconds``). Writes ``docs/benchmarks/short_files_bench.md`` (``--markdown``) wholly
from the measurements; ``WORK/rows.json`` keeps the raw runs and ``--render-only`` rewrites the
page from it::

    python bench/short_files_bench.py --baseline bb0c51b
    python bench/short_files_bench.py --quick --markdown /tmp/s.md    # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# shared with the threads benchmark (same folder): the same busy load and the same seeded tiny files
from threads_bench import BusyLoad, exit_on_sigterm, make_small_files, usable_cores  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) extracted.*?([\d.]+) s of audio in ([\d.]+) s, ([\d.]+)x real time")
#: runs the command line in-process and reports the CPU time between opening the feature file and
#: closing it: the extraction itself (input check, decoding, model, store), without start-up and model loading
CLI = """
import sys, time
import audioembed.extraction as extraction

class TimedWriter(extraction.FeatureWriter):
    def __init__(self, *args, **kwargs):
        self.cpu_started = time.process_time()
        super().__init__(*args, **kwargs)

    def close(self):
        try:
            super().close()
        finally:
            print(f"EXTRACTION_CPU={time.process_time() - self.cpu_started}", file=sys.stderr)

extraction.FeatureWriter = TimedWriter
sys.argv = ["audioembed", *sys.argv[1:]]
from audioembed.cli import main
main()
"""
EXTRACTION_CPU = re.compile(r"EXTRACTION_CPU=([\d.]+)")


def fsdd_manifest(fsdd: Path, count: int, out: Path) -> Path:
    """A manifest (``path`` column) of the first ``count`` FSDD recordings in name order (all when 0)."""
    rows = sorted(line.split(",", 1)[0] for line in (fsdd / "labels.csv").read_text().splitlines()[1:] if line)
    rows = rows[:count] if count else rows
    out.write_text("path\n" + "".join(f"{fsdd / r}\n" for r in rows))
    return out


def baseline_tree(rev: str, where: Path) -> Path:
    """The ``audioembed`` package of git revision ``rev``, unpacked under ``where``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "audioembed"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def run_extract(inputs: Path, out: Path, pythonpath: Path | None, timeout: float) -> dict:
    """One ``audioembed extract`` in a fresh process: wall, child CPU, and the command's own summary."""
    for old in out.parent.glob(out.name + "*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "AUDIOEMBED_THREADS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    args = ["extract", "--upstream", "unified_student", str(inputs), "-o", str(out), "-q", "--threads", "1"]
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-c", CLI, *args]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    # never the repository root as cwd: `python -c` would import the working tree's package
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found, extraction_cpu = SUMMARY.search(proc.stdout), EXTRACTION_CPU.search(proc.stderr)
    if not found or not extraction_cpu:
        raise RuntimeError(f"no summary in the output of {' '.join(args)}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "extraction_cpu": float(extraction_cpu[1]), "files": int(found[1]),
            "audio": float(found[2]), "extract_wall": float(found[3]), "speed": float(found[4]), "loadavg": load}


def main() -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", type=Path, default=Path("/work/shared/data/fsdd"))
    parser.add_argument("--fsdd-files", type=int, default=300, help="first N FSDD recordings (0 = all)")
    parser.add_argument("--tiny-files", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="git revision to run as 'before'")
    parser.add_argument("--busy", action="store_true", help="also measure with one busy process per core")
    parser.add_argument("--busy-seconds", type=float, default=3600.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as failed")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "short_files")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks" / "short_files_bench.md")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from WORK/rows.json")
    args = parser.parse_args()
    if args.quick:
        args.fsdd_files, args.tiny_files, args.repeats = 40, 60, 1
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "rows.json"
    if args.render_only:
        stored = json.loads(saved.read_text())
        write_markdown(stored["meta"], stored["rows"])
        return

    cases = {"fsdd": fsdd_manifest(args.fsdd, args.fsdd_files, work / "fsdd.csv"),
             "tiny": make_small_files(work / f"tiny-{args.tiny_files}", args.tiny_files)}
    meta = {"argv": sys.argv[1:], "fsdd_files": args.fsdd_files, "tiny_files": args.tiny_files,
            "repeats": args.repeats, "baseline": args.baseline, "markdown": str(args.markdown),
            "cores": usable_cores()}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="short_files_bench-") as tmp:
        trees = [("after (working tree)", None)]
        if args.baseline:
            trees.insert(0, (f"before ({args.baseline})", baseline_tree(args.baseline, Path(tmp))))
        loads = ["machine as is"] + (["+1 busy process per core"] if args.busy else [])
        for load in loads:
            busy = BusyLoad(args.busy_seconds) if load.startswith("+") else None
            if busy:
                busy.__enter__()
            try:
                for case, inputs in cases.items():
                    for repeat in range(args.repeats):
                        for code, path in trees:
                            result = run_extract(inputs, work / f"{case}.h5", path, args.timeout)
                            rows.append({"load": load, "case": case, "code": code, "repeat": repeat, **result})
                            print(json.dumps(rows[-1]), flush=True)
                            saved.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            finally:
                if busy:
                    busy.__exit__()
    meta["complete"] = True
    saved.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_markdown(meta, rows)


def summarise(rows: list[dict]) -> list[dict]:
    """Medians per (load, case, code) over the repeats."""
    out = []
    for load, case, code in dict.fromkeys((r["load"], r["case"], r["code"]) for r in rows):
        runs = [r for r in rows if (r["load"], r["case"], r["code"]) == (load, case, code)]
        extraction_cpu = statistics.median(r["extraction_cpu"] for r in runs)
        out.append({
            "load": load, "case": case, "code": code, "files": runs[0]["files"], "audio": runs[0]["audio"],
            "cpu": statistics.median(r["cpu"] for r in runs),
            "fixed_cpu": statistics.median(r["cpu"] - r["extraction_cpu"] for r in runs),
            "per_file_ms": 1000 * extraction_cpu / runs[0]["files"],
            "rt_per_cpu": runs[0]["audio"] / extraction_cpu,
            "wall": statistics.median(r["wall"] for r in runs),
            "speed": statistics.median(r["speed"] for r in runs),
            "whole": statistics.median(r["audio"] / r["wall"] for r in runs),
            "loadavg": statistics.median(r["loadavg"] for r in runs),
        })
    return out


def write_markdown(meta: dict, rows: list[dict]) -> None:
    import torch

    fsdd = f"the first {meta['fsdd_files']} FSDD recordings" if meta["fsdd_files"] else "all 3000 FSDD recordings"
    lines = [
        "# Many short files: the cost of `audioembed extract` per file",
        "",
        f"Generated by `bench/short_files_bench.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(command: `python bench/short_files_bench.py {' '.join(meta['argv'])}`).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {meta['cores']} usable cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}. Command: `audioembed extract --upstream "
        "unified_student INPUTS -o OUT -q --threads 1`, each run in a fresh process. Cases: "
        f"fsdd = {fsdd} (8 kHz, 0.14-2.3 s); tiny = {meta['tiny_files']} synthetic files of 0.1-0.4 s. "
        f"Medians of {meta['repeats']} interleaved runs per row.",
        "",
        "CPU s is user + system time of the whole process; fixed CPU s is its part outside the extraction itself "
        "(start-up, imports, model loading); CPU ms per file = CPU time of the extraction itself (input check, "
        "decoding, model, store) / files; x real time per CPU s = audio seconds / that CPU time, the speed of the "
        "extraction on one fully used core. "
        "Wall figures depend on the other load on the machine (load average in the last column): "
        "\"extraction\" is the command's own figure (model loading excluded), \"whole\" is audio / wall "
        "of the whole process.",
        "",
    ]
    if not meta.get("complete"):
        lines += [f"Written from a run stopped after {len(rows)} runs (`--render-only`): missing rows were not measured.", ""]
    lines += [
        "| load | case | code | files | audio s | CPU s | fixed CPU s | CPU ms per file | x real time per CPU s | "
        "wall s | x real time (extraction) | x real time (whole) | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table = summarise(rows)
    for r in table:
        lines.append(f"| {r['load']} | {r['case']} | {r['code']} | {r['files']} | {r['audio']:.1f} | {r['cpu']:.1f} | "
                     f"{r['fixed_cpu']:.1f} | {r['per_file_ms']:.2f} | {r['rt_per_cpu']:.1f} | {r['wall']:.1f} | {r['speed']:.1f} | "
                     f"{r['whole']:.1f} | {r['loadavg']:.1f} |")
    befores = {(r["load"], r["case"]): r for r in table if r["code"].startswith("before")}
    ratios = [(r, befores[(r["load"], r["case"])]) for r in table
              if not r["code"].startswith("before") and (r["load"], r["case"]) in befores]
    if ratios:
        lines += ["", "| load | case | CPU per file, before / after | whole-process CPU, before / after |",
                  "|---|---|---:|---:|"]
        for after, before in ratios:
            lines.append(f"| {after['load']} | {after['case']} | {before['per_file_ms'] / after['per_file_ms']:.2f} | "
                         f"{before['cpu'] / after['cpu']:.2f} |")
    markdown = Path(meta["markdown"])
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {markdown}")


if __name__ == "__main__":
    main()
