#!/usr/bin/env python
"""How CPU thread counts change the speed of ``audioembed extract`` and probe training.

Runs each case as a user would (the ``audioembed`` console script in a fresh process), with
several thread settings, once with the other load the machine already has and once with an
added competing load: one busy-loop process per usable core, started and stopped by this
script (each also stops by itself after ``--busy-seconds``). Cases:

* ``quickstart``: the README Quickstart, ``audioembed extract --upstream unified_student
  FSDD -o fsdd.h5`` on ``/work/shared/data/fsdd`` (or ``--fsdd PATH``; ``--quickstart-files N``
  takes the first N recordings in name order through a manifest, for a busy machine);
* ``small-files``: ``--small-files`` (default 2,000) tiny synthetic files of 0.1-0.4 s;
* ``probes``: ``audioembed downstream classify`` on the Quickstart recordings from cached features
  (the features are extracted once beforehand), shots 8, 2 seeds, 3 folds.

Settings: ``auto`` (the default policy of ``audioembed.threads``; on this project's small
student it is one thread), ``--threads N`` (N = usable cores; ``--threads 1`` on a one-core
machine), and ``spin`` (``--threads N`` with ``OMP_WAIT_POLICY=ACTIVE``:
busy-waiting OpenMP threads, close to torch's own default before this policy). With
``--baseline REV`` the code of git revision REV (e.g. the commit before the thread policy) is
run too, from ``git archive``, as ``before``.

The busy condition runs first (it is the one the default must not make slow), the Quickstart
first within it. Every finished run is saved to ``WORK/rows.json``; ``--render-only`` rewrites
the page from it. Writes ``docs/benchmarks/threads_bench.md`` (``--markdown``) wholly from the
measurements::

    python bench/threads_bench.py --baseline 5b9873c --quickstart-files 300 --small-files 1000
    python bench/threads_bench.py --quick --markdown /tmp/t.md  # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SEED = 20261203
SUMMARY = re.compile(r"([\d.]+) s of audio in ([\d.]+) s, ([\d.]+)x real time(?:; (\d+) CPU thread)?")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def make_small_files(folder: Path, count: int) -> Path:
    """``count`` tiny seeded wav files (tones in noise, 0.1-0.4 s, 16 kHz)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.wav"))) == count:
        return folder
    rng = np.random.default_rng(SEED)
    for i in range(count):
        n = int(rng.uniform(0.1, 0.4) * 16000)
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(n)
        sf.write(folder / f"tiny_{i:05d}.wav", wave.astype(np.float32), 16000)
    return folder


def fsdd_manifest(fsdd: Path, count: int | None, out: Path) -> Path:
    """A manifest of the first ``count`` FSDD recordings (all when None), with labels for probes."""
    lines = (fsdd / "labels.csv").read_text().splitlines()
    header, rows = lines[0], sorted(lines[1:])
    if count:
        rows = rows[:count]
    text = header + "\n" + "\n".join(str(fsdd / r.split(",", 1)[0]) + "," + r.split(",", 1)[1] for r in rows) + "\n"
    out.write_text(text)
    return out


class BusyLoad:
    """One busy-loop process per usable core, each stopping by itself after ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        code = f"import time\nend = time.time() + {self.seconds}\nwhile time.time() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(usable_cores())]
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


def baseline_tree(rev: str, where: Path) -> Path:
    """The ``audioembed`` package of git revision ``rev``, unpacked under ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "audioembed"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def run_cli(args: list[str], env_extra: dict, timeout: float, pythonpath: Path | None = None,
            cwd: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "AUDIOEMBED_THREADS",
                                                           "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, **env_extra)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
        command = [sys.executable, "-c", "from audioembed.cli import main; main()", *args]
    else:
        command = [shutil.which("audioembed") or "audioembed", *args]
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    try:
        # never the repository root as cwd: `python -c` would import the working tree's package
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(cwd or Path(tempfile.gettempdir())))
    except subprocess.TimeoutExpired:
        return {"wall": None, "timeout": timeout, "loadavg": load_before}
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found = SUMMARY.search(proc.stdout)
    result = {"wall": wall, "loadavg": load_before}
    if found:
        result.update(audio=float(found[1]), extract_wall=float(found[2]), speed=float(found[3]),
                      threads=int(found[4]) if found[4] else None)
    return result


def settings(cores: int, baseline: Path | None) -> list[tuple[str, dict, list[str], Path | None]]:
    """(label, extra environment, extra CLI options, PYTHONPATH) per thread setting."""
    out = [("auto (default)", {}, [], None)]
    if cores == 1:
        out.append(("--threads 1", {}, ["--threads", "1"], None))
    if cores > 1:
        out += [(f"--threads {cores}", {}, ["--threads", str(cores)], None),
                (f"spin: --threads {cores}, OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"},
                 ["--threads", str(cores)], None)]
    if baseline is not None:
        out.append(("before (torch defaults, previous code)", {}, [], baseline))
    return out


def fmt(value, digits=1, suffix=""):
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def exit_on_sigterm(signum, frame):
    raise SystemExit(143)  # so that `finally` stops the busy processes


def main() -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", type=Path, default=Path("/work/shared/data/fsdd"))
    parser.add_argument("--quickstart-files", type=int, default=None, help="FSDD recordings (default: all)")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--baseline", default=None, help="git revision to run as 'before'")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds before a run is stopped")
    parser.add_argument("--busy-seconds", type=float, default=3600.0)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "threads")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks" / "threads_bench.md")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the markdown from WORK/rows.json of the last run, measuring nothing")
    args = parser.parse_args()
    if args.quick:
        args.small_files, args.quickstart_files = 200, 120

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    saved = work / "rows.json"
    if args.render_only:
        stored = json.loads(saved.read_text())
        write_markdown(stored["meta"], stored["rows"], cores)
        return
    meta = {"argv": sys.argv[1:], "small_files": args.small_files,
            "quickstart_files": args.quickstart_files, "markdown": str(args.markdown)}
    small = make_small_files(work / f"small-{args.small_files}", args.small_files)
    quick_manifest = fsdd_manifest(args.fsdd, args.quickstart_files, work / "fsdd-quickstart.csv")
    baseline = baseline_tree(args.baseline, work / "baseline") if args.baseline else None
    cache = work / "feature-cache"

    def extract_args(inputs: Path, name: str) -> list[str]:
        out = work / f"{name}.h5"
        for f in work.glob(f"{name}*.h5*"):
            f.unlink() if f.is_file() else shutil.rmtree(f)
        return ["extract", "--upstream", "unified_student", str(inputs), "-o", str(out), "-q"]

    probe_args = ["downstream", "classify", "--upstream", "unified_student", "--data", str(quick_manifest),
                  "--label-column", "digit", "--shots", "8", "--seeds", "2", "--folds", "3", "--max-epochs", "30",
                  "--cache-dir", str(cache), "-o", str(work / "results"), "-q"]
    run_cli(probe_args, {"AUDIOEMBED_THREADS": "1"}, args.timeout)  # fill the feature cache once

    rows: list[dict] = []

    def record(load: str, label: str, case: str, result: dict) -> None:
        rows.append({"load": load, "setting": label, "case": case, **result})
        print(rows[-1], flush=True)
        saved.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    # the busy machine first: it is the case the defaults must not make slow, and the target
    cases = (
        ("README Quickstart", lambda: extract_args(quick_manifest, "quickstart")),
        ("small files", lambda: extract_args(small, "small")),
        ("probes (cached features)", lambda: probe_args),
    )
    for load in ("+1 busy process per core", "machine as is"):
        busy = BusyLoad(args.busy_seconds) if load.startswith("+") else None
        if busy:
            busy.__enter__()
        try:
            for case, command in cases:
                for label, env, extra, path in settings(cores, baseline):
                    if path is not None and case.startswith("probes"):
                        continue
                    # command() deletes the previous output: every run extracts everything
                    record(load, label, case, run_cli(command() + extra, env, args.timeout, path))
        finally:
            if busy:
                busy.__exit__()
    meta["complete"] = True
    saved.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_markdown(meta, rows, cores)


def write_markdown(meta: dict, rows: list[dict], cores: int) -> None:
    import torch

    quick_files = meta["quickstart_files"] or "all 3000"
    lines = [
        "# Thread counts: extraction and probes on a quiet and on a busy machine",
        "",
        f"Generated by `bench/threads_bench.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(command: `python bench/threads_bench.py {' '.join(meta['argv'])}`).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {cores} usable cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}. \"machine as is\" includes whatever else was running; the load average at the "
        "start of each run is in the table. \"+1 busy process per core\" adds one pure-Python busy loop per usable core.",
        "",
        "Cases: README Quickstart = `audioembed extract --upstream unified_student` on FSDD "
        f"({quick_files} recordings, first in name order); "
        f"small files = {meta['small_files']} synthetic files of 0.1-0.4 s; probes = `audioembed downstream classify` "
        "(shots 8, 2 seeds, 3 folds, at most 30 epochs) on the Quickstart recordings from cached features. "
        "\"x real time\" is audio seconds per second: of the extraction as the command reports it (model "
        "loading excluded), and of the whole process (start-up and model loading included).",
        "",
    ]
    if not meta.get("complete"):
        lines += [f"This page was written from a run stopped after {len(rows)} measurements (`--render-only`); "
                  "the cases and settings missing below were not measured.", ""]
    lines += [
        "| case | load | setting | wall s | x real time (extraction) | x real time (whole process) | threads used | "
        "load avg at start |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        wall = f"> {r['timeout']:.0f} (stopped)" if r.get("wall") is None else f"{r['wall']:.1f}"
        whole = r["audio"] / r["wall"] if r.get("audio") and r.get("wall") else None
        lines.append(f"| {r['case']} | {r['load']} | {r['setting']} | {wall} | {fmt(r.get('speed'))} | {fmt(whole)} | "
                     f"{r.get('threads') or '-'} | {r['loadavg']:.1f} |")
    # the target of issue 17: the Quickstart under one busy process per core
    target = [r for r in rows if r["case"] == "README Quickstart" and r["load"].startswith("+")]
    lines.append("")
    if target and target[0].get("speed"):
        speed, whole = target[0]["speed"], target[0]["audio"] / target[0]["wall"]
        lines.append(f"README Quickstart with one busy process per core, default settings: {speed:.1f}x real time "
                     f"for the extraction, {whole:.1f}x for the whole command "
                     f"(target >= 20x: {'met' if whole >= 20 else 'met for the extraction only' if speed >= 20 else 'not met'}).")
    fastest = {}
    for r in rows:
        if r.get("wall") is not None and r["setting"] != "auto (default)":
            key = (r["case"], r["load"])
            fastest[key] = min(fastest.get(key, float("inf")), r["wall"])
    lines += ["", "| case | load | default wall s | fastest other setting wall s | default / fastest |", "|---|---|---:|---:|---:|"]
    for r in rows:
        key = (r["case"], r["load"])
        if r["setting"] == "auto (default)" and key in fastest and r.get("wall"):
            lines.append(f"| {r['case']} | {r['load']} | {r['wall']:.1f} | {fastest[key]:.1f} | {r['wall'] / fastest[key]:.2f} |")
    markdown = Path(meta["markdown"])
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {markdown}")


if __name__ == "__main__":
    main()
