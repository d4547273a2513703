#!/usr/bin/env python
"""Throughput and memory benchmark of ``audioembed extract`` (HuBERT Base, random weights).

Compares, on one synthetic corpus and in one run:

(a)  the ``audioembed extract`` CLI, exactly as a user runs it;
(b)  the naive loop users write today (soundfile -> soxr -> Wav2Vec2FeatureExtractor ->
     HubertModel -> mean-pool -> np.save per file), which does the same work;
(c)  the model-only bound over pre-decoded 16 kHz audio: (c1) one forward per file,
     (c2) length-sorted padded batches of about 60 s; c = the faster of the two;

plus the peak RSS of the CLI on a long file against a short one. Every measurement runs in
a fresh process so its peak RSS is its own. Usage::

    python bench/extract_bench.py [--quick] [--out bench/out] [--device cpu|cuda] [--markdown PAGE]
    python bench/extract_bench.py --disk [--quick]    # file size of --pool none on short clips only

Writes its own page (see ``default_page``): docs/benchmarks/extract_bench.md, or
extract_bench_cuda.md for ``--device cuda``; ``--quick`` writes OUT/extract_bench-quick.md
instead, never a page under docs/. See bench/README.md. This is a script, not a test:
nothing here is imported by tests/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SEED = 20240611
SR = 16000
BATCH_SECONDS_C2 = 60.0
TARGETS = {"a/c": 0.9, "a/b": 1.1, "rss_ratio": 1.5}
# (n files, min s, max s, long-file seconds, short-file seconds)
SIZES = {"full": (200, 1.0, 20.0, 3600.0, 60.0), "quick": (12, 1.0, 5.0, 120.0, 30.0)}
MEMORY_CONFIGS = {"all/mean": ["--layers", "all", "--pool", "mean"], "last/none": ["--layers", "last", "--pool", "none"]}


# ---------------------------------------------------------------------------- audio


def synth(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """1-3 tones/chirps/noise bursts under a slow envelope: cheap, varied, never silent."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.zeros_like(t)
    for _ in range(int(rng.integers(1, 4))):
        kind, amp, f0 = int(rng.integers(3)), rng.uniform(0.05, 0.3), rng.uniform(80.0, 2000.0)
        if kind == 0:
            x += amp * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
        elif kind == 1:
            f1 = rng.uniform(80.0, min(6000.0, 0.45 * sr))
            x += amp * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / max(seconds, 1e-3) * t * t))
        else:
            x += amp * rng.standard_normal(len(t))
    x *= 0.4 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t) ** 2  # syllable-like rhythm
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_atomic(path: Path, x: np.ndarray, sr: int) -> None:
    """Write then rename, so an existing file is always a complete one (safe to skip)."""
    tmp = path.with_name(".tmp-" + path.name)
    sf.write(tmp, x, sr, format=path.suffix[1:].upper(), subtype="PCM_16")
    os.replace(tmp, path)


def build_corpus(folder: Path, n: int, min_s: float, max_s: float) -> list[Path]:
    """``n`` files, durations uniform in [min_s, max_s], wav/flac x 16/44.1 kHz, every 4th stereo.

    Files already there are kept (they are deterministic); ``corpus.json`` guards against
    reusing a folder built with other settings.
    """
    spec = {"seed": SEED, "n": n, "min_s": min_s, "max_s": max_s}
    stamp = folder / "corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) != spec:
        sys.exit(f"{folder} was built with other settings ({stamp.read_text()}); use another --out or delete it")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    paths = []
    for i in range(n):
        sr = 16000 if i % 2 == 0 else 44100
        fmt = ("wav", "flac")[(i // 2) % 2]
        seconds = float(rng.uniform(min_s, max_s))
        file_rng = np.random.default_rng([SEED, i])
        path = folder / f"utt{i:03d}_{sr // 1000}k.{fmt}"
        if not path.exists():
            x = synth(file_rng, seconds, sr)
            if i % 4 == 3:
                x = np.stack([x, synth(file_rng, seconds, sr)], axis=1)
            write_atomic(path, x, sr)
        paths.append(path)
    stamp.write_text(json.dumps(spec))
    return paths


def build_long(path: Path, seconds: float) -> Path:
    """A 16 kHz mono flac of ``seconds``, written in 10 s blocks so the generator stays small."""
    if path.exists() and sf.info(str(path)).frames == int(seconds * SR):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    rng = np.random.default_rng([SEED, int(seconds)])
    with sf.SoundFile(tmp, "w", SR, 1, format="FLAC", subtype="PCM_16") as f:
        left = int(seconds * SR)
        while left > 0:
            block = synth(rng, min(10.0, left / SR), SR)[:left]
            f.write(block)
            left -= len(block)
    os.replace(tmp, path)
    return path


def duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def decode_16k(path: Path) -> np.ndarray:
    """The naive decode: whole file, average channels, one-shot soxr (HQ) to 16 kHz."""
    import soxr

    wav, sr = sf.read(str(path), dtype="float32")
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    return soxr.resample(wav, sr, SR) if sr != SR else wav


# ---------------------------------------------------------------------------- model


def build_model(folder: Path) -> int:
    """HubertConfig() defaults (= HuBERT Base), seeded random weights, plus the preprocessor
    config a Hub checkpoint ships; returns the parameter count."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if all((folder / f).exists() for f in ("config.json", "preprocessor_config.json", "params.json")):
        return json.loads((folder / "params.json").read_text())["params"]
    torch.manual_seed(SEED)
    model = HubertModel(HubertConfig())
    tmp = folder.with_name(".tmp-" + folder.name)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False,
                             return_attention_mask=False).save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    (tmp / "params.json").write_text(json.dumps({"params": params}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return params


# ---------------------------------------------------------------------------- children


def child_main(args) -> None:
    """Body of a measurement subprocess: times only the work loop, prints one JSON line.

    CPU time (all threads) is reported next to wall time as a second opinion: on a shared
    machine wall time also counts the time other people's jobs held the cores.
    """
    import torch

    torch.set_num_threads(args.threads)
    files = [Path(p) for p in Path(args.files).read_text().split("\n") if p]
    device = torch.device(args.device)
    run = {"naive": run_naive, "c1": run_per_file, "c2": run_batched}[args.child]
    wall, cpu = run(files, args.model, device, args.npy_dir)
    extra = {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device.type == "cuda" else {}
    print(json.dumps({"work_s": wall, "work_cpu_s": cpu, **extra}))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def load_hubert(model_dir: str, device):
    from transformers import HubertModel

    return HubertModel.from_pretrained(model_dir).to(device).eval()


def run_naive(files, model_dir, device, npy_dir) -> tuple[float, float]:
    """(b): what a user writes by hand; one .npy of shape (13, 768) per file."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = load_hubert(model_dir, device)
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        wav = decode_16k(path)
        inputs = extractor(wav, sampling_rate=SR, return_tensors="pt")
        with torch.inference_mode():
            out = model(inputs.input_values.to(device), output_hidden_states=True)
        pooled = torch.stack([h[0].mean(dim=0) for h in out.hidden_states]).cpu().numpy()
        np.save(Path(npy_dir) / f"{path.stem}.npy", pooled)
    _sync(device)
    return time.perf_counter() - started, time.process_time() - cpu


def run_per_file(files, model_dir, device, _npy_dir) -> tuple[float, float]:
    """(c1): one forward per pre-decoded file, pooling kept (it is part of the job), no I/O."""
    import torch

    wavs = [torch.from_numpy(decode_16k(p)) for p in files]
    model = load_hubert(model_dir, device)
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for wav in wavs:
            out = model(wav[None].to(device), output_hidden_states=True)
            torch.stack([h[0].mean(dim=0) for h in out.hidden_states]).cpu()
    _sync(device)
    return time.perf_counter() - started, time.process_time() - cpu


def run_batched(files, model_dir, device, _npy_dir) -> tuple[float, float]:
    """(c2): length-sorted, zero-padded batches of <= ~60 s padded audio, with attention mask."""
    import torch

    wavs = sorted((torch.from_numpy(decode_16k(p)) for p in files), key=len, reverse=True)
    batches, budget = [[]], int(BATCH_SECONDS_C2 * SR)
    for wav in wavs:  # longest first, so the first item of a batch sets its padded length
        if batches[-1] and len(batches[-1][0]) * (len(batches[-1]) + 1) > budget:
            batches.append([])
        batches[-1].append(wav)
    model = load_hubert(model_dir, device)
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for batch in batches:
            lengths = torch.tensor([len(w) for w in batch])
            x = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long()
            out = model(x.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            frames = model._get_feat_extract_output_lengths(lengths).tolist()
            for row, n in enumerate(frames):
                torch.stack([h[row, :n].mean(dim=0) for h in out.hidden_states]).cpu()
    _sync(device)
    return time.perf_counter() - started, time.process_time() - cpu


# ---------------------------------------------------------------------------- measuring


def child_env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (or stolen by the hypervisor) since boot."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], threads: int) -> dict:
    """Run ``cmd`` in a fresh process: wall and CPU time (whole process) and its own peak RSS.

    ``os.wait4`` returns the rusage of exactly this child, so peak RSS is per measurement.
    ``other_load`` is the average number of cores that *other* processes kept busy meanwhile:
    timings taken with other_load well above 0 are disturbed and should be rerun.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started, busy = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env(threads))
        _, status, usage = os.wait4(proc.pid, 0)
        wall, busy = time.perf_counter() - started, busy_cpu_seconds() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{stderr[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,
            "other_load": max(0.0, busy - cpu) / wall, "stdout": stdout.strip()}


def cli_cmd(inputs: list[Path], model: Path, output: Path, device: str, extra: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("audioembed")
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-m", "audioembed"]
    return [*prefix, "extract", "--upstream", "hubert", "--model", str(model), *map(str, inputs),
            "-o", str(output), *extra, "-q", "--device", device]


def run_cli(inputs, model, tmp: Path, device, extra, threads, keep: Path | None = None) -> dict:
    """One CLI run into a fresh output file (deleted afterwards unless it is ``keep``)."""
    out = keep or Path(tempfile.mkdtemp(dir=tmp)) / "feats.h5"
    try:
        return measure(cli_cmd(inputs, model, out, device, extra), threads)
    finally:
        if keep is None:
            shutil.rmtree(out.parent, ignore_errors=True)


def run_child(kind: str, files: list[Path], model: Path, tmp: Path, device: str, threads: int, npy_dir: Path | None = None):
    listing = tmp / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--files", str(listing), "--model", str(model),
           "--device", device, "--threads", str(threads), "--npy-dir", str(npy_dir or tmp)]
    result = measure(cmd, threads)
    result.update(json.loads(result.pop("stdout").splitlines()[-1]))
    return result


def compare_a_b(features: Path, npy_dir: Path) -> float:
    """Max |a - b| over all pooled features: evidence that (a) and (b) do the same work."""
    from audioembed.store import FeatureReader

    with FeatureReader(features) as reader:
        diffs = [np.abs(np.stack([reader.get_layers(i)[l] for l in reader.layers])
                        - np.load(npy_dir / f"{Path(reader.info(i).path).stem}.npy")).max() for i in reader.ids]
    return float(max(diffs))


def speed(seconds: float, wall: float) -> float:
    return seconds / wall if wall > 0 else float("nan")


def benchmark(args) -> dict:
    n, min_s, max_s, long_s, short_s = SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    threads = len(os.sched_getaffinity(0))
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    log("building corpus, long files and model (skipped where already there)")
    files = build_corpus(out / ("corpus-quick" if args.quick else "corpus"), n, min_s, max_s)
    total = sum(duration(p) for p in files)
    startup_file = build_long(out / "long" / "startup-1s.flac", 1.0)
    long_files = {s: build_long(out / "long" / f"long-{int(s)}s.flac", s) for s in (short_s, long_s)}
    model = out / "hubert-base-random"
    params = build_model(model)
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=out))
    npy_dir = tmp / "npy"
    npy_dir.mkdir()
    res: dict = {"threads": threads, "corpus_seconds": total, "files": len(files), "params": params}
    try:
        log("(a0) CLI startup: 1 s file, twice (the first also warms the page cache)")
        startup = [run_cli([startup_file], model, tmp, args.device, MEMORY_CONFIGS["all/mean"], threads) for _ in range(2)]
        res["startup"] = min(startup, key=lambda r: r["wall_s"])
        log(f"(a) CLI over the corpus ({total:.0f} s of audio)")
        res["a"] = run_cli([files[0].parent], model, tmp, args.device, MEMORY_CONFIGS["all/mean"], threads,
                           keep=tmp / "a.h5")
        res["a"]["corrected_s"] = res["a"]["wall_s"] - res["startup"]["wall_s"]
        res["a"]["corrected_cpu_s"] = res["a"]["cpu_s"] - res["startup"]["cpu_s"]
        log("(b) naive loop")
        res["b"] = run_child("naive", files, model, tmp, args.device, threads, npy_dir)
        for kind in ("c1", "c2"):
            log(f"({kind}) model only")
            res[kind] = run_child(kind, files, model, tmp, args.device, threads)
        log("checking (a) against (b)")
        res["max_abs_diff_a_b"] = compare_a_b(tmp / "a.h5", npy_dir)
        res["memory"] = {}
        for name, extra in MEMORY_CONFIGS.items():
            for seconds, path in long_files.items():
                log(f"memory: {name} on a {seconds:.0f} s file")
                run = run_cli([path], model, tmp, args.device, extra, threads)
                res["memory"][f"{name}@{int(seconds)}"] = {"seconds": seconds, **run}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key in ("a", "b", "c1", "c2"):
        work = res[key].get("corrected_s", res[key].get("work_s"))
        res[key]["xrt"] = speed(total, work)
    res["a"]["xrt_raw"] = speed(total, res["a"]["wall_s"])
    c = max(res["c1"]["xrt"], res["c2"]["xrt"])
    c_cpu = min(res["c1"]["work_cpu_s"], res["c2"]["work_cpu_s"])
    res["ratios"] = {"a/b": res["a"]["xrt"] / res["b"]["xrt"], "a/c": res["a"]["xrt"] / c,
                     "a_raw/b": res["a"]["xrt_raw"] / res["b"]["xrt"], "a_raw/c": res["a"]["xrt_raw"] / c,
                     "a/b_cpu": res["b"]["work_cpu_s"] / res["a"]["corrected_cpu_s"],
                     "a/c_cpu": c_cpu / res["a"]["corrected_cpu_s"]}
    rss = {key: m["peak_rss_mb"] for key, m in res["memory"].items()}
    res["rss_ratio"] = {name: rss[f"{name}@{int(long_s)}"] / rss[f"{name}@{int(short_s)}"] for name in MEMORY_CONFIGS}
    res["targets_met"] = {
        "a/c": res["ratios"]["a/c"] >= TARGETS["a/c"],
        "a/b": res["ratios"]["a/b"] >= TARGETS["a/b"],
        "rss_ratio": all(r <= TARGETS["rss_ratio"] for r in res["rss_ratio"].values()),
    }
    res["long_seconds"], res["short_seconds"] = long_s, short_s
    return res


# ---------------------------------------------------------------------------- reporting


def machine(device: str) -> dict:
    import torch
    import transformers

    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    with open("/proc/meminfo") as f:
        mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gb": mem_kb / 2**20, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def tables(res: dict) -> str:
    a, b, c1, c2, st = res["a"], res["b"], res["c1"], res["c2"], res["startup"]
    rows = [
        ("(a) `audioembed extract` CLI, raw (whole process)", a["wall_s"], a["cpu_s"], a["xrt_raw"], a),
        (f"(a) CLI, startup-corrected (minus {st['wall_s']:.1f} s for a 1 s file)", a["corrected_s"], a["corrected_cpu_s"],
         a["xrt"], a),
        ("(b) naive per-file loop (soundfile+soxr+HF, np.save)", b["work_s"], b["work_cpu_s"], b["xrt"], b),
        ("(c1) model only, one file per forward", c1["work_s"], c1["work_cpu_s"], c1["xrt"], c1),
        (f"(c2) model only, padded batches of <= {BATCH_SECONDS_C2:.0f} s", c2["work_s"], c2["work_cpu_s"], c2["xrt"], c2),
    ]
    r, t = res["ratios"], res["targets_met"]
    yes = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    lines = ["| run | wall s | CPU s | x real time (wall) | peak RSS MB | other load (cores) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {wall:.1f} | {cpu:.1f} | {xrt:.2f} | {m['peak_rss_mb']:.0f} | {m['other_load']:.2f} |"
              for name, wall, cpu, xrt, m in rows]
    lines += ["", "| ratio | wall, startup-corrected (a) | wall, raw (a) | CPU time, corrected (a) | target (first column) |",
              "|---|---:|---:|---:|---|"]
    lines += [f"| {label} | {r[k]:.2f} | {r[k.replace('a/', 'a_raw/')]:.2f} | {r[k + '_cpu']:.2f} | "
              f">= {TARGETS[k]}: {yes(t[k])} |" for k, label in (("a/b", "a/b"), ("a/c", "a/c (c = max(c1, c2))"))]
    lines += ["", f"Max abs difference between the pooled features of (a) and (b): {res['max_abs_diff_a_b']:.2e}",
              "", "| file | --layers/--pool | wall s (whole process) | x real time | peak RSS MB | other load (cores) |",
              "|---|---|---:|---:|---:|---:|"]
    for key, m in res["memory"].items():
        name = key.split("@")[0]
        lines.append(f"| {m['seconds'] / 60:g} min | {name} | {m['wall_s']:.1f} | {speed(m['seconds'], m['wall_s']):.1f} | "
                     f"{m['peak_rss_mb']:.0f} | {m['other_load']:.2f} |")
    long_min, short_min = res["long_seconds"] / 60, res["short_seconds"] / 60
    lines += ["", f"| --layers/--pool | peak RSS {long_min:g} min / {short_min:g} min | target |", "|---|---:|---|"]
    lines += [f"| {name} | {ratio:.2f} | <= {TARGETS['rss_ratio']}: {yes(ratio <= TARGETS['rss_ratio'])} |"
              for name, ratio in res["rss_ratio"].items()]
    return "\n".join(lines)


def interpretation(res: dict) -> str:
    r, t, c1, c2 = res["ratios"], res["targets_met"], res["c1"]["xrt"], res["c2"]["xrt"]
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    faster = "per-file forwards (c1)" if c1 >= c2 else "padded batches (c2)"
    worst = max(res["rss_ratio"], key=res["rss_ratio"].get)
    runs = [res[k] for k in ("startup", "a", "b", "c1", "c2")] + list(res["memory"].values())
    noise = max(m["other_load"] for m in runs)
    return "\n".join([
        f"- Throughput: the CLI reaches {r['a/c']:.0%} of the model-only bound (target >= {TARGETS['a/c']:.0%}: "
        f"{met(t['a/c'])}) and {r['a/b']:.2f}x the naive loop (target >= {TARGETS['a/b']}: {met(t['a/b'])}), "
        "in wall time, startup-corrected. The raw figures include interpreter start and model load, which the "
        "naive and model-only timings exclude; they matter for small jobs only.",
        f"- In CPU time the same ratios are a/c = {r['a/c_cpu']:.2f} and a/b = {r['a/b_cpu']:.2f}. CPU time is not "
        "immune to a busy machine either (threads spin while a sibling is descheduled).",
        f"- On this device {faster} were faster ({c1:.1f} vs {c2:.1f} x real time for c1 vs c2).",
        f"- Memory: peak RSS on the {res['long_seconds'] / 60:g}-minute file is at most {res['rss_ratio'][worst]:.2f}x "
        f"that on the {res['short_seconds'] / 60:g}-minute file ({worst}; target <= {TARGETS['rss_ratio']}: "
        f"{met(t['rss_ratio'])}). Peak RSS includes the ~{res['params'] * 4 / 2**20:.0f} MB of float32 weights and "
        "the torch runtime, so compare absolute growth too.",
        f"- Every figure is one run. Other processes kept on average up to {noise:.2f} of the "
        f"{res['machine']['cores']} cores busy during a measurement (column 'other load'); "
        + ("the machine was quiet." if noise < 0.1 else
           "timings taken under such load are disturbed: rerun on a quiet machine before drawing conclusions."),
    ] + (["- `--quick` smoke test: the corpus is so short that an error of a second in the startup correction moves "
          "the ratios by tens of percent, and the short file is not cut into windows while the long one is. "
          "Do not draw conclusions from these numbers."] if res["quick"] else []))


def markdown_document(res: dict, command: str) -> str:
    m = res["machine"]
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    _, min_s, max_s, long_s, short_s = SIZES["quick" if res["quick"] else "full"]
    return f"""# Extraction benchmarks

Generated by `bench/extract_bench.py` (see `bench/README.md`) on {res['date']}.

## Machine

{m['cpu']}, {m['cores']} cores (torch threads = {res['threads']}), {m['ram_gb']:.0f} GiB RAM{gpu};
Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}; device `{m['device']}`.

## Setup

- Model: `HubertConfig()` defaults (HuBERT Base: 12 layers, 768 dims, group-norm CNN),
  {res['params'] / 1e6:.1f}M parameters, seeded random weights, saved with `save_pretrained` plus a
  `preprocessor_config.json` (16 kHz, `do_normalize: false`). Random weights cost the same compute as trained ones.
- Corpus: {res['files']} synthetic files (tones, chirps, noise under a slow envelope), durations uniform
  in {min_s:g}-{max_s:g} s, {res['corpus_seconds']:.0f} s in total; wav and flac, 16 kHz and 44.1 kHz, every
  4th file stereo. Speeds are corpus audio seconds per wall second (x real time).
- Every run is a fresh process; peak RSS is that process's `ru_maxrss`. Model loading is excluded from
  (b) and (c); for (a) the whole CLI process is timed and a CLI run on a 1 s file is subtracted.
- (a) `audioembed extract --upstream hubert --model DIR CORPUS -o OUT.h5 --layers all --pool mean -q --device {m['device']}`
- (b) per file: `soundfile.read`, channel mean, `soxr.resample` to 16 kHz, `Wav2Vec2FeatureExtractor`,
  `HubertModel(..., output_hidden_states=True)` under `torch.inference_mode`, mean of every layer,
  `np.save` of a (13, 768) array.
- (c) audio decoded to 16 kHz before timing; (c1) one forward per file, (c2) length-sorted zero-padded
  batches of <= {BATCH_SECONDS_C2:.0f} s padded audio with `attention_mask`; both mean-pool every layer.
- Long-file memory: one {long_s / 60:g}-minute and one {short_s / 60:g}-minute 16 kHz flac, CLI with
  `--layers all --pool mean` and `--layers last --pool none`.

## Results

{tables(res)}

## Interpretation

{interpretation(res)}

## Command

```bash
{command}
```
"""


REPO = Path(__file__).resolve().parents[1]


def default_page(device: str, quick: bool, out: str) -> Path:
    """This script's generated page: one per device under docs/benchmarks/ (every benchmark
    script writes its own, never another's); a ``--quick`` smoke run stays in ``out``."""
    if quick:
        return Path(out) / "extract_bench-quick.md"
    kind = device.split(":")[0]
    return REPO / "docs" / "benchmarks" / ("extract_bench.md" if kind == "cpu" else f"extract_bench_{kind}.md")


# ---------------------------------------------------------------------------- disk use of --pool none

# (n files, min s, max s): short clips, where per-utterance storage overhead matters most
DISK_SIZES = {"full": (150, 0.5, 2.0), "quick": (30, 0.5, 2.0)}
DISK_CONFIGS = [("mfcc", []), ("logmel", ["--dtype", "float16"]), ("hubert", ["--layers", "4,8,12", "--dtype", "float16"])]
DISK_OVERHEAD_BYTES = 4096  # allowed per utterance (group, attributes, dataset headers), as in tests/test_extract.py
DISK_RATIO = 1.2


def store_bytes(path: Path) -> dict:
    """File size against the bytes of the feature arrays it holds."""
    import h5py

    arrays, utterances, row_bytes = 0, 0, 0
    with h5py.File(path, "r") as h5:
        for group in h5["utterances"].values():
            utterances += 1
            for ds in group.values():
                arrays += ds.size * ds.dtype.itemsize
                row_bytes = ds.shape[1] * ds.dtype.itemsize
    return {"file_bytes": os.path.getsize(path), "array_bytes": arrays, "utterances": utterances, "row_bytes": row_bytes}


def rewrite_chunked(src: Path, dst: Path) -> None:
    """The same features written without announcing each utterance's length: the ~128 KiB
    chunked layout every utterance got before the store sized datasets by the utterance."""
    from audioembed.store import FeatureReader, FeatureWriter

    with FeatureReader(src) as reader, FeatureWriter(dst, dict(reader.attrs)) as writer:
        for uid in reader.ids:
            layers, info = reader.get_layers(uid), reader.info(uid)
            utterance = writer.begin(uid, reader.layers, next(iter(layers.values())).shape[1])
            utterance.append(layers)
            writer.commit({"path": info.path, "num_samples": info.num_samples, "duration": info.duration,
                           "metadata": json.dumps(info.metadata)})


def disk_benchmark(args) -> dict:
    n, min_s, max_s = DISK_SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    threads = len(os.sched_getaffinity(0))
    corpus = out / f"corpus-short-{n}"
    files = build_corpus(corpus, n, min_s, max_s)
    model = out / "hubert-base-random"
    build_model(model)
    exe = Path(sys.executable).with_name("audioembed")
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-m", "audioembed"]
    rows = []
    for upstream, extra in DISK_CONFIGS:
        tmp = Path(tempfile.mkdtemp(dir=out))
        try:
            feats = tmp / "feats.h5"
            weights = ["--model", str(model)] if upstream == "hubert" else []
            cmd = [*prefix, "extract", "--upstream", upstream, *weights, str(corpus), "-o", str(feats),
                   "--pool", "none", *extra, "-q", "--device", args.device]
            run = measure(cmd, threads)
            rewrite_chunked(feats, tmp / "chunked.h5")
            rows.append({"upstream": upstream, "options": " ".join(["--pool", "none", *extra]), "wall_s": run["wall_s"],
                         "sized": store_bytes(feats), "chunked": store_bytes(tmp / "chunked.h5")})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"files": len(files), "corpus_seconds": sum(duration(p) for p in files), "sizes": [n, min_s, max_s],
            "threads": threads, "rows": rows}


def disk_markdown(res: dict) -> str:
    m = res["machine"]
    n, min_s, max_s = res["sizes"]
    lines = ["| upstream | options | utterances | bytes per frame and layer | feature arrays MB | file MB | file / arrays | "
             "overhead per utterance | within 1.2x + 4 KiB/utt | before: frames per chunk | before: file MB | "
             "before: file / arrays |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    verdicts = []
    for row in res["rows"]:
        sized, chunked = row["sized"], row["chunked"]
        count, arrays = sized["utterances"], sized["array_bytes"]
        ok = sized["file_bytes"] <= DISK_RATIO * arrays + DISK_OVERHEAD_BYTES * count
        verdicts.append(ok)
        chunk_rows = max(1, min(1024, (1 << 17) // sized["row_bytes"]))  # the old layout's rule
        lines.append(
            f"| {row['upstream']} | `{row['options']}` | {count} | {sized['row_bytes']} | {arrays / 1e6:.2f} | "
            f"{sized['file_bytes'] / 1e6:.2f} | {sized['file_bytes'] / arrays:.2f} | "
            f"{(sized['file_bytes'] - arrays) / count:.0f} B | {'met' if ok else '**not met**'} | {chunk_rows} | "
            f"{chunked['file_bytes'] / 1e6:.2f} | {chunked['file_bytes'] / arrays:.2f} |"
        )
    worst = max(r["sized"]["file_bytes"] / r["sized"]["array_bytes"] for r in res["rows"])
    before = sorted(r["chunked"]["file_bytes"] / r["chunked"]["array_bytes"] for r in res["rows"])
    return f"""# Extraction benchmark: disk use of `--pool none` on short clips

Generated by `bench/extract_bench.py --disk` (see `bench/README.md`) on {res['date']}.

**Machine**: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}; device `{m['device']}`.

**Setup**: {res['files']} synthetic clips with durations uniform in {min_s:g}-{max_s:g} s
({res['corpus_seconds']:.0f} s in total; wav and flac, 16 and 44.1 kHz, every 4th stereo). Each
configuration is one `audioembed extract ... --pool none` run into a fresh file (HuBERT: the
benchmark's random-weight HuBERT Base). "Feature arrays" counts the bytes of every stored layer
array (frames x dims x dtype size); the file is the consolidated `.h5`. "Before" stores the same
arrays again with the layout frame-level features had before datasets were sized by the
utterance: ~128 KiB chunks, most of each short clip's chunk left empty.

{chr(10).join(lines)}

**Reading**: with datasets sized by the utterance the file is at most {worst:.2f}x the feature
arrays here ({sum(verdicts)} of {len(verdicts)} configurations within {DISK_RATIO:g}x plus
{DISK_OVERHEAD_BYTES} bytes per utterance); the per-utterance overhead is the HDF5 group, its
attributes (id, path, lengths, metadata) and one dataset header per layer, so it matters most for
narrow features and vanishes next to wide ones. The chunked layout took {before[0]:.2f}x to
{before[-1]:.2f}x: a clip shorter than one chunk still allocates the whole chunk, and the narrower
the features the more frames a ~128 KiB chunk holds (column "frames per chunk").

**Command**:

```bash
{res['command']}
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 short files, 2 min vs 30 s long files (smoke test)")
    parser.add_argument("--out", default="bench/out", help="corpus, model and results.json go here [bench/out]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--markdown", metavar="PATH", help="write the generated page here [docs/benchmarks/"
                        "extract_bench.md; extract_bench_cuda.md on cuda; OUT/extract_bench-quick.md with --quick]")
    parser.add_argument("--disk", action="store_true",
                        help="only measure the file size of --pool none on short clips; writes --disk-report")
    parser.add_argument("--disk-report", default=str(REPO / "docs" / "benchmarks" / "extract_bench_disk.md"), metavar="PATH",
                        help="where --disk writes its report [docs/benchmarks/extract_bench_disk.md]")
    for hidden in ("--child", "--files", "--model", "--npy-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    command = shlex.join(["python", "bench/extract_bench.py", *sys.argv[1:]])
    info = machine(args.device)
    if args.disk:
        res = disk_benchmark(args)
        res.update(machine=info, command=command,
                   date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
        name = "disk-results-quick.json" if args.quick else "disk-results.json"
        Path(args.out, name).write_text(json.dumps(res, indent=2))
        Path(args.disk_report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.disk_report).write_text(disk_markdown(res))
        print(f"raw numbers: {Path(args.out, name)}\nreport: {args.disk_report}")
        return
    res = benchmark(args)
    res.update(machine=info, quick=args.quick, command=command,
               date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    name = "results-quick.json" if args.quick else "results.json"
    Path(args.out, name).write_text(json.dumps(res, indent=2))
    print(tables(res))
    print(f"\nraw numbers: {Path(args.out, name)}")
    page = Path(args.markdown) if args.markdown else default_page(args.device, args.quick, args.out)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown_document(res, command))
    print(f"report: {page}")


if __name__ == "__main__":
    main()
