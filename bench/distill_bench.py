#!/usr/bin/env python
"""Distillation throughput: cached teacher targets vs online teachers on CPU.

Setup (everything synthetic and seeded, no network):

* two HuBERT-Base-sized teachers with seeded random weights: "speech", a ``HubertConfig()``
  ``save_pretrained`` folder at 16 kHz (upstream ``hubert``), and "music", the same
  architecture written in MERT-v1-95M's published form (``model_type: mert_model``, 24 kHz,
  upstream ``mert``), so the online run also resamples every crop to 24 kHz and the music
  targets (75 Hz) are resampled in time to the student's 50 Hz frames;
* a corpus of ``--files`` 16 kHz wav files (half "speech", half "music" in the manifest's
  ``domain`` column) of 2-2.5 x ``--crop-seconds`` each;
* a DistilHuBERT-sized student (2 transformer layers of 768, initialised from the speech
  teacher: ``student.init = "teacher:speech"``) with one MLP head per teacher.

Measured, each in a fresh process (model loading excluded from the training timings):

(a) online: ``Trainer.run`` with both teachers run on every batch;
(c) the one-time cost: ``prepare_teacher_cache`` over the corpus (the work of
    ``audioembed distill-cache``: reading the corpus headers, loading the teachers, running
    them over every planned crop), plus the cache's size on disk;
(b) cached: the same training steps reading the cached targets instead.

Speed is audio seconds trained (sum of the crop durations of the timed steps) per wall second,
timed from the end of the warm-up step(s) to the end of the last step (data loading waits
included). Usage::

    python bench/distill_bench.py [--steps 4] [--batch-size 4] [--crop-seconds 4] [--json OUT] [--markdown PAGE]

Writes its own page, docs/benchmarks/distill_bench.md (``--markdown``), wholly from the
measured numbers. See bench/README.md. This is a script, not a test: nothing here is imported by tests/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
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
MUSIC_SR = 24000
TEACHERS = ("speech", "music")
STAMP = ".distill-bench"  # marks a --work folder this script may empty
REPO = Path(__file__).resolve().parents[1]
#: this script's generated page (every benchmark script writes its own, never another's)
PAGE = REPO / "docs" / "benchmarks" / "distill_bench.md"


# ---------------------------------------------------------------------------- data


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A gliding harmonic voice (f0 90-260 Hz) in syllable-rate bursts, plus breath noise."""
    t = np.arange(int(round(seconds * SR))) / SR
    f0 = rng.uniform(90, 260) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3)), 0, None) ** 2
    x = 0.12 * voice * syllables + 0.02 * rng.standard_normal(len(t))
    return np.clip(x, -1, 1).astype(np.float32)


def music_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A chord of three decaying notes, changed every 0.5 s."""
    n = int(round(seconds * SR))
    x = np.zeros(n)
    step = SR // 2
    for start in range(0, n, step):
        t = np.arange(min(step, n - start)) / SR
        root = 110 * 2 ** (rng.integers(0, 24) / 12)
        for interval in (0, 4, 7):
            f = root * 2 ** (interval / 12)
            x[start : start + len(t)] += 0.1 * np.sin(2 * np.pi * f * t) * np.exp(-3 * t)
    return np.clip(x + 0.005 * rng.standard_normal(n), -1, 1).astype(np.float32)


def build_corpus(folder: Path, files: int, crop_seconds: float) -> tuple[Path, float]:
    """``files`` 16 kHz wavs of 2-2.5 crops each, alternately speech and music; a jsonl manifest."""
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows, total = [], 0.0
    for i in range(files):
        rng = np.random.default_rng([SEED, i])
        domain = TEACHERS[i % 2]
        seconds = round(float(rng.uniform(2.0, 2.5)) * crop_seconds, 3)
        x = (speech_like if domain == "speech" else music_like)(rng, seconds)
        path = audio / f"{domain}{i:03d}.wav"
        sf.write(path, x, SR, subtype="PCM_16")
        rows.append({"path": str(path), "id": path.stem, "domain": domain})
        total += len(x) / SR
    manifest = folder / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, total


def write_teachers(folder: Path) -> dict:
    """The two random-weight HuBERT-Base-sized teachers; returns their folders and sizes."""
    import torch
    from safetensors.torch import save_file
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    out = {}
    # speech: what `save_pretrained` of facebook/hubert-base-ls960 looks like, 16 kHz
    speech = folder / "teacher-speech"
    torch.manual_seed(SEED)
    model = HubertModel(HubertConfig())
    model.save_pretrained(speech)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False,
                             return_attention_mask=False).save_pretrained(speech)
    out["speech"] = {"path": str(speech), "params": sum(p.numel() for p in model.parameters())}
    # music: MERT-v1-95M's on-disk form (HuBERT Base shape, config model_type mert_model, 24 kHz)
    music = folder / "teacher-music"
    music.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED + 1)
    model = HubertModel(HubertConfig())
    config = json.loads(model.config.to_json_string())
    config.update(model_type="mert_model", architectures=["MERTModel"], sample_rate=MUSIC_SR,
                  feature_extractor_cqt=False, feature_extractor_cqt_bins=336, deepnorm=False, attention_relax=-1.0)
    (music / "config.json").write_text(json.dumps(config, indent=2))
    (music / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": MUSIC_SR,
        "padding_value": 0.0, "padding_side": "right", "do_normalize": True, "return_attention_mask": True,
    }, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(music / "model.safetensors"),
              metadata={"format": "pt"})
    out["music"] = {"path": str(music), "params": sum(p.numel() for p in model.parameters())}
    return out


def raw_config(work: Path, teachers: dict, manifest: Path, args, name: str, cache: bool) -> dict:
    """The trainer config of one run; ``min_seconds = crop_seconds`` so that every cached crop
    (``cache_crops = "cover"``) is a full crop, like every online one.

    Both students start from the speech teacher (``teacher:speech``, the recipe's choice), so
    both runs train exactly the same initial weights.
    """
    init = "teacher:speech"
    return {
        "teachers": [
            {"name": "speech", "upstream": "hubert", "model": teachers["speech"]["path"], "domains": ["speech"]},
            {"name": "music", "upstream": "mert", "model": teachers["music"]["path"], "domains": ["music"]},
        ],
        "data": {
            "manifests": [str(manifest)], "crop_seconds": args.crop_seconds, "min_seconds": args.crop_seconds,
            "batch_size": args.batch_size, "domain_weights": {"speech": 0.5, "music": 0.5},
            "cache_dir": str(work / "cache") if cache else "", "cache_crops": "cover",
        },
        "student": {"init": init, "arch": {"num_hidden_layers": 2}, "head": "mlp"},
        "optim": {"max_steps": 100_000, "precision": "fp32"},
        "run": {"output_dir": str(work / f"run-{name}"), "seed": 0, "checkpoint_every": 1_000_000,
                "log_every": 1, "device": "cpu", "workers": 1},
    }


# ---------------------------------------------------------------------------- children


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (or stolen by the hypervisor) since boot."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def mark() -> tuple[float, float, float]:
    return time.perf_counter(), time.process_time(), busy_cpu_seconds()


def window(a, b) -> dict:
    """Wall and CPU time between two marks; other_load = cores other processes kept busy."""
    wall, cpu, busy = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    return {"wall_s": wall, "cpu_s": cpu, "other_load": max(0.0, busy - cpu) / wall if wall > 0 else float("nan")}


def child_train(raw: dict, warmup: int, steps: int) -> dict:
    from audioembed.distill.config import config_from_dict
    from audioembed.distill.trainer import Trainer
    from audioembed.training.runlog import read_log

    started = time.perf_counter()
    trainer = Trainer(config_from_dict(raw), progress=False, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    setup_s = time.perf_counter() - started
    marks: list[tuple] = []
    step_audio: list[float] = []
    train_step = trainer.train_step

    def timed(micro_batches, counts):
        out = train_step(micro_batches, counts)
        marks.append(mark())
        step_audio.append(sum(c.duration for batch in micro_batches for c in batch.crops))
        return out

    trainer.train_step = timed  # the instance attribute shadows the method that run() calls
    trainer.run(until_step=warmup + steps)
    if len(marks) != warmup + steps:
        raise SystemExit(f"expected {warmup + steps} steps, the trainer ran {len(marks)}")
    res = window(marks[warmup - 1], marks[-1])  # warmup >= 1: the first step's start is not observable
    res.update(steps=steps, audio_s=sum(step_audio[warmup:]), setup_s=setup_s, step_audio_s=step_audio[warmup:],
               step_s=[b[0] - a[0] for a, b in zip(marks[warmup - 1 :], marks[warmup:])])
    # cross-check with the trainer's own log: its rate is cumulative since the loop started,
    # so elapsed(k) = audio(k) / rate(k); the same window from the log
    log = {r["step"]: r for r in read_log(raw["run"]["output_dir"])}
    cum = np.cumsum(step_audio)
    elapsed = {k: cum[k - 1] / log[k]["audio_seconds_per_second"] for k in (warmup, warmup + steps)}
    res["log_rate"] = (cum[-1] - cum[warmup - 1]) / (elapsed[warmup + steps] - elapsed[warmup])
    res["log_rate_with_warmup"] = log[warmup + steps]["audio_seconds_per_second"]
    res["loss_last"] = log[warmup + steps]["loss"]
    return res


def child_cache(raw: dict, batch_size: int) -> dict:
    from audioembed.distill.cache import prepare_teacher_cache
    from audioembed.distill.config import config_from_dict

    config = config_from_dict(raw)
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)  # noqa: E731
    a = mark()
    built = prepare_teacher_cache(config, device="cpu", batch_size=batch_size, progress=False, warn=warn)
    res = window(a, mark())
    res.update(crops=built.crops, audio_s=built.audio_seconds, written=built.written)
    return res


def child_main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.spec).read_text())
    if args.child == "cache":
        res = child_cache(spec["config"], spec["cache_batch_size"])
    else:
        res = child_train(spec["config"], spec["warmup"], spec["steps"])
    print(json.dumps(res))


def run_child(kind: str, spec: dict, work: Path, threads: int) -> dict:
    """One measurement in a fresh process; returns its JSON line plus the process's peak RSS."""
    path = work / f"spec-{kind}.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--spec", str(path), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{kind} failed ({os.waitstatus_to_exitcode(status)}): {shlex.join(cmd)}\n{stderr[-4000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update(process_wall_s=time.perf_counter() - started, peak_rss_mb=usage.ru_maxrss / 1024)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    if warnings:
        res["warnings"] = warnings
    return res


# ---------------------------------------------------------------------------- main


def machine() -> dict:
    import torch
    import transformers

    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    with open("/proc/meminfo") as f:
        mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gb": mem_kb / 2**20, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def folder_mb(folder: Path) -> dict:
    return {p.name: p.stat().st_size / 1e6 for p in sorted(folder.iterdir()) if p.is_file()}


def payload_mb(path: Path) -> float:
    """MB of the stored feature arrays themselves (rows x width x item size), without HDF5 overhead."""
    import h5py

    sizes: list[int] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: sizes.append(obj.size * obj.dtype.itemsize)
                     if isinstance(obj, h5py.Dataset) and obj.ndim == 2 else None)
    return sum(sizes) / 1e6


def benchmark(args, work: Path) -> dict:
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"writing corpus and teachers to {work}")
    manifest, corpus_s = build_corpus(work / "corpus", args.files, args.crop_seconds)
    teachers = write_teachers(work)
    res: dict = {"corpus_seconds": corpus_s, "files": args.files, "teachers": teachers}
    common = {"warmup": args.warmup, "steps": args.steps}
    log(f"(a) online teachers: {args.warmup} warm-up + {args.steps} timed steps")
    res["online"] = run_child("online", {**common, "config": raw_config(work, teachers, manifest, args, "online", False)},
                              work, args.threads)
    log("(c) building the teacher cache")
    res["cache"] = run_child("cache", {"cache_batch_size": args.cache_batch_size,
                                       "config": raw_config(work, teachers, manifest, args, "cached", True)},
                             work, args.threads)
    sizes = folder_mb(work / "cache")
    payload = {f"{name}.h5": payload_mb(work / "cache" / f"{name}.h5") for name in TEACHERS}
    res["cache"].update(size_mb=sum(sizes.values()), files_mb=sizes, payload_mb=sum(payload.values()),
                        files_payload_mb=payload)
    log(f"(b) cached targets: {args.warmup} warm-up + {args.steps} timed steps")
    res["cached"] = run_child("cached", {**common, "config": raw_config(work, teachers, manifest, args, "cached", True)},
                              work, args.threads)
    for key in ("online", "cached", "cache"):
        r = res[key]
        r["rate"] = r["audio_s"] / r["wall_s"]
    for key in ("online", "cached"):  # the least disturbed step: a second opinion on a shared machine
        r = res[key]
        r["rate_fastest_step"] = max(a / s for a, s in zip(r["step_audio_s"], r["step_s"]))
    on, ca, cb = res["online"]["rate"], res["cached"]["rate"], res["cache"]
    res["ratio"] = ca / on
    res["ratio_fastest_step"] = res["cached"]["rate_fastest_step"] / res["online"]["rate_fastest_step"]
    res["ratio_cpu"] = (res["online"]["cpu_s"] / res["online"]["audio_s"]) / (res["cached"]["cpu_s"] / res["cached"]["audio_s"])
    # one epoch = one pass over the cached audio; E epochs cost E*A/on online, C + E*A/ca cached
    saving = cb["audio_s"] / on - cb["audio_s"] / ca
    res["break_even_epochs"] = cb["wall_s"] / saving if saving > 0 else math.inf
    res["cache"]["kb_per_audio_s"] = cb["size_mb"] * 1e3 / cb["audio_s"]
    return res


def table(res: dict, args) -> str:
    on, ca, cb = res["online"], res["cached"], res["cache"]
    lines = [
        "| run | timed | audio s | wall s | audio s / wall s | CPU s | other load (cores) | trainer log, same steps "
        "| fastest step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("(a) online teachers", on), ("(b) cached targets", ca)):
        steps = f"{r['steps']} step{'s' if r['steps'] != 1 else ''} of {args.batch_size} x {args.crop_seconds:g} s"
        lines.append(f"| {name} | {steps} | {r['audio_s']:.0f} | {r['wall_s']:.1f} | {r['rate']:.2f} | "
                     f"{r['cpu_s']:.1f} | {r['other_load']:.2f} | {r['log_rate']:.2f} | {r['rate_fastest_step']:.2f} |")
    lines.append(f"| (c) cache build, one-time | {cb['crops']} crops x 2 teachers | {cb['audio_s']:.0f} | {cb['wall_s']:.1f} | "
                 f"{cb['rate']:.2f} | {cb['cpu_s']:.1f} | {cb['other_load']:.2f} | - | - |")
    per = ", ".join(f"{k} {v:.1f} MB" for k, v in cb["files_mb"].items() if k.endswith(".h5"))
    be = res["break_even_epochs"]
    lines += [
        "",
        "| result | value |",
        "|---|---:|",
        f"| speed ratio cached / online (wall) | **{res['ratio']:.2f}x** |",
        f"| same, fastest step of each run | {res['ratio_fastest_step']:.2f}x |",
        f"| same in CPU time per audio second | {res['ratio_cpu']:.2f}x |",
        f"| cache build time (one-time) | {cb['wall_s']:.1f} s for {cb['audio_s']:.0f} s of audio |",
        f"| cache size on disk | {cb['size_mb']:.1f} MB ({per}); {cb['kb_per_audio_s']:.0f} kB per audio second |",
        f"| of which target arrays (frames x 768 x 3 layers x 2 bytes) | {cb['payload_mb']:.1f} MB "
        f"({cb['payload_mb'] * 1e3 / cb['audio_s']:.0f} kB per audio second) |",
        f"| break-even (epochs over the cached audio) | {be:.2f} |" if math.isfinite(be) else
        "| break-even (epochs over the cached audio) | never (cached is not faster) |",
    ]
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def markdown_document(res: dict) -> str:
    """The benchmark's page, written from ``res`` alone (the dict that ``--json`` stores)."""
    m, st, on, ca, cb = res["machine"], res["settings"], res["online"], res["cached"], res["cache"]
    ram = f", {m['ram_gb']:.0f} GiB RAM" if "ram_gb" in m else ""
    load = max(r["other_load"] for r in (on, ca, cb))
    params = sorted({t["params"] for t in res["teachers"].values()})
    crop = st["crop_seconds"]
    steps = ", ".join(f"{x:.1f}" for x in on["step_s"]), ", ".join(f"{x:.1f}" for x in ca["step_s"])
    took = f" The whole run took {res['total_s'] / 60:.1f} min." if "total_s" in res else ""
    warnings = [f"- {key}: {w}" for key in ("online", "cache", "cached") for w in res[key].get("warnings", [])]
    return "\n".join([
        "# Distillation benchmark: cached targets vs online teachers",
        "",
        f"Generated by `bench/distill_bench.py` (see `bench/README.md`) on {res['date']}.{took}",
        "",
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores (torch threads = {res['threads']}){ram}; Python {m['python']}, torch "
        f"{m['torch']}, transformers {m['transformers']}; device `cpu`. Other processes kept at most {load:.2f} "
        "cores busy during the timed windows.",
        "",
        "## Setup",
        "",
        "Two HuBERT-Base-sized teachers with seeded random weights ("
        + "/".join(f"{p / 1e6:.1f}M" for p in params) + " parameters each, the trainer's default target layers): "
        "\"speech\" (`hubert` upstream, 16 kHz, 50 Hz) and \"music\" (the same shape in MERT-v1-95M's on-disk form, "
        "`mert` upstream, 24 kHz, 75 Hz); a DistilHuBERT-sized student (2 layers of 768, 512-channel CNN, "
        "`init = \"teacher:speech\"` in both runs) with an MLP head per teacher, AdamW, fp32; "
        f"{st['files']} synthetic 16 kHz files of {2 * crop:g}-{2.5 * crop:g} s ({res['corpus_seconds']:.0f} s), "
        f"half speech, half music, sampled 50/50. Each step trains {st['batch_size']} crops of {crop:g} s "
        f"({st['batch_size'] * crop:g} s of audio); {plural(st['warmup'], 'warm-up step')}, then "
        f"{plural(st['steps'], 'timed step')}; the cache holds the {cb['crops']} full {crop:g} s crops that tile "
        f"the corpus (`cache_crops = \"cover\"`, `min_seconds = {crop:g}`). Model loading is excluded.",
        "",
        "## Results",
        "",
        table(res, argparse.Namespace(batch_size=st["batch_size"], crop_seconds=crop)),
        "",
        f"Per step (s): online {steps[0]}; cached {steps[1]}. Peak RSS: online {on['peak_rss_mb'] / 1e3:.2f} GB, "
        f"cached {ca['peak_rss_mb'] / 1e3:.2f} GB, cache build {cb['peak_rss_mb'] / 1e3:.2f} GB.",
        *(["", "Warnings:", "", *warnings] if warnings else []),
        "",
        "## Command",
        "",
        "From the repository root, with the project's virtualenv active:",
        "",
        "```bash",
        res["command"],
        "```",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run [4]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them [1]")
    parser.add_argument("--batch-size", type=int, default=4, help="crops per step [4]")
    parser.add_argument("--crop-seconds", type=float, default=4.0, help="crop length; files are 2-2.5 crops long [4]")
    parser.add_argument("--files", type=int, default=24, help="corpus files, half speech, half music [24]")
    parser.add_argument("--cache-batch-size", type=int, default=8, help="crops per teacher forward when caching [8]")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads [all cores]")
    parser.add_argument("--work", help="keep models, corpus, runs and cache here (a new folder, or one this script "
                        "made: emptied first) [a temp dir, deleted at the end]")
    parser.add_argument("--json", metavar="OUT", help="also write the raw numbers here")
    parser.add_argument("--markdown", metavar="PAGE", default=str(PAGE),
                        help="write the generated page here [docs/benchmarks/distill_bench.md]")
    parser.add_argument("--child", choices=("online", "cache", "cached"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if args.warmup < 1 or args.steps < 1 or args.batch_size < 1 or args.files < 2:
        parser.error("need --warmup >= 1, --steps >= 1, --batch-size >= 1, --files >= 2")

    command = shlex.join(["python", "bench/distill_bench.py", *sys.argv[1:]])
    if args.work:
        work = Path(args.work)
        if work.exists() and any(work.iterdir()) and not (work / STAMP).exists():
            parser.error(f"--work {work} is not empty and was not made by this script; give a new folder")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / STAMP).write_text(command + "\n")
    else:
        work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    started = time.perf_counter()
    try:
        res = benchmark(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    res.update(machine=machine(), threads=args.threads, command=command, total_s=time.perf_counter() - started,
               settings={k: getattr(args, k) for k in ("steps", "warmup", "batch_size", "crop_seconds", "files",
                                                       "cache_batch_size")},
               date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    m = res["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, torch threads {args.threads}; torch {m['torch']}, "
          f"transformers {m['transformers']}; {res['date']}\n")
    print(table(res, args))
    for key in ("online", "cache", "cached"):
        for w in res[key].get("warnings", []):
            print(f"\n{key}: {w}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
        print(f"\nraw numbers: {args.json}")
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(markdown_document(res))
    print(f"page: {args.markdown}")


if __name__ == "__main__":
    main()
