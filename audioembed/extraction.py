"""Audio files -> upstream hidden states -> feature store.

The pipeline overlaps I/O with compute: a background thread decodes, mixes down,
resamples (streaming, so memory does not grow with file length) and cuts long files into
windows; the main thread batches windows, runs the upstream and writes features.

Windowing: a file longer than one window is processed as windows ``[s, s+W)`` (``s`` and
``W`` multiples of the hop), each given ``context`` samples on both sides plus the few
samples the last frame of the window needs. Only frames belonging to ``[s, s+W)`` are kept,
so frame ``g`` of the file is computed exactly once and the frame count equals the
upstream's ``num_frames(file length)``. For upstreams whose receptive field is within the
context (DSP baselines) windowed output equals whole-file output exactly.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from .errors import AudioEmbedError
from . import __version__
from .audio import AudioError, AudioInfo, probe, resampled_length, stream
from .inputs import InputItem, collect_inputs, shard_items, storage_problem
from .messages import printable
from .registry import check_upstream, load_upstream, resolve_device
from .store import FeatureWriter, ids_fingerprint, shard_path
from .threads import apply_threads, choose_threads
from .upstream import Upstream

POOLINGS = ("none", "mean", "mean+std", "chunks")
DTYPES = ("float16", "float32")


class ExtractionError(AudioEmbedError, RuntimeError):
    """A bad input under --strict, or an invalid extraction request."""


@dataclass(frozen=True)
class Segment:
    item_index: int
    samples: np.ndarray  # mono float32 at the upstream's rate
    keep_start: int  # first local frame to keep
    keep_end: int  # one past the last local frame to keep
    is_last: bool


@dataclass(frozen=True)
class ItemFailed:
    item_index: int
    reason: str


@dataclass
class ExtractSummary:
    output: str
    extracted: int = 0
    skipped_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # id -> "path: reason" (printable)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: torch intra-op threads used on CPU (None on GPU, or when nothing ran)
    threads: int | None = None

    def __str__(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"{printable(self.output)}: {self.extracted} extracted, {self.skipped_done} already done, "
            f"{len(self.failed)} failed ({self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s, "
            f"{speed:.1f}x real time" + (f"; {self.threads} CPU thread{'s' if self.threads != 1 else ''})"
                                         if self.threads else ")")
        ]
        lines += [f"  FAILED {reason}" for reason in self.failed.values()]
        return "\n".join(lines)


def resolve_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """``"all"``, ``"last"``, ``"0,4,-1"`` or a list of ints -> sorted unique non-negative indices."""
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "all":
            return list(range(num_layers))
        if spec == "last":
            return [num_layers - 1]
        try:
            spec = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ExtractionError(f"--layers must be 'all', 'last' or comma-separated integers, got '{spec}'") from None
    layers = []
    for layer in spec:
        idx = layer + num_layers if layer < 0 else layer
        if not 0 <= idx < num_layers:
            raise ExtractionError(f"layer {layer} out of range: this upstream has {num_layers} layers (0..{num_layers - 1})")
        layers.append(idx)
    if not layers:
        raise ExtractionError("no layers selected")
    return sorted(set(layers))


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


class Windowing:
    """Where each window of a file starts and ends, in samples and frames."""

    def __init__(self, upstream: Upstream, window_seconds: float):
        hop = upstream.hop_length
        self.upstream = upstream
        self.hop = hop
        self.window = max(hop, round_up(int(window_seconds * upstream.sample_rate), hop))
        self.context = round_up(max(0, int(upstream.context_samples)), hop)
        # samples past the window end needed so the window's last frame exists
        needed = (self.context + self.window) // hop
        extra = 0
        while upstream.num_frames(self.context + self.window + extra) < needed:
            extra += 1
            if extra > 100 * hop + 100_000:
                raise ExtractionError(f"upstream '{upstream.name}': num_frames never reaches {needed}")
        self.extra = extra

    def plan(self, total: int) -> list[tuple[int, int, int, int]]:
        """``(seg_start, seg_end, keep_start, keep_end)`` per window; local frame indices."""
        frames = self.upstream.num_frames(total)
        if total <= self.window + 2 * self.context + self.extra:
            return [(0, total, 0, frames)]
        plan = []
        start = 0
        while start // self.hop < frames:
            seg_start = max(0, start - self.context)
            seg_end = min(total, start + self.window + self.context + self.extra)
            first = start // self.hop
            last = min((start + self.window) // self.hop, frames)
            offset = seg_start // self.hop
            plan.append((seg_start, seg_end, first - offset, last - offset))
            start += self.window
        return plan


def _segments(info: AudioInfo, total: int, item_index: int, upstream: Upstream, windowing: Windowing) -> Iterator[Segment]:
    """Stream one file (its header already checked) and cut it into the planned windows, holding at most one window."""
    path = info.path
    plan = windowing.plan(total)
    chunks: list[np.ndarray] = []
    buf_start = 0  # absolute sample index of chunks[0][0]
    buf_len = 0
    blocks = stream(info, upstream.sample_rate)
    exhausted = False
    for i, (seg_start, seg_end, keep_start, keep_end) in enumerate(plan):
        while buf_start + buf_len < seg_end and not exhausted:
            try:
                block = next(blocks)
            except StopIteration:
                exhausted = True
                break
            chunks.append(block)
            buf_len += len(block)
        buf = np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
        chunks = [buf]
        seg = buf[seg_start - buf_start : seg_end - buf_start]
        if len(seg) != seg_end - seg_start:
            raise AudioError(path, f"decoded {buf_start + buf_len} samples, header promised {total}")
        yield Segment(item_index, np.array(seg, dtype=np.float32), keep_start, keep_end, i == len(plan) - 1)
        if i + 1 < len(plan):
            drop = plan[i + 1][0] - buf_start
            chunks = [buf[drop:]]
            buf_start += drop
            buf_len -= drop


class SegmentQueue(queue.Queue):
    """Decoded windows waiting for the model, bounded by the samples they hold rather than their count:
    a batch of short files needs many of them ready, while a few long windows are already plenty of
    memory. ``maxsize`` is in samples; an empty queue admits a window of any size."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.samples = 0

    def _qsize(self) -> int:
        return len(self.queue) + self.samples  # > 0 whenever an entry (even a sample-less one) waits

    def _put(self, entry) -> None:
        self.queue.append(entry)
        self.samples += len(entry.samples) if isinstance(entry, Segment) else 0

    def _get(self):
        entry = self.queue.popleft()
        self.samples -= len(entry.samples) if isinstance(entry, Segment) else 0
        return entry


def _producer(items, headers, totals, upstream, windowing, out_queue: queue.Queue, stop: threading.Event) -> None:
    for index, item in enumerate(items):
        if stop.is_set():
            return
        if totals[index] is None:
            continue
        try:
            for segment in _segments(headers[index], totals[index], index, upstream, windowing):
                while not stop.is_set():
                    try:
                        out_queue.put(segment, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except AudioError as exc:
            out_queue.put(ItemFailed(index, str(exc)))
        except Exception as exc:  # unexpected decoder failure: still per file
            out_queue.put(ItemFailed(index, f"{printable(item.path)}: {type(exc).__name__}: {printable(exc)}"))
    out_queue.put(None)


def _check_item(item: InputItem, upstream: Upstream) -> tuple[AudioInfo, int]:
    """The header of a file and its resampled length, or AudioError explaining why it cannot be used."""
    info = probe(item.path)
    total = resampled_length(info.num_samples, info.sample_rate, upstream.sample_rate)
    if upstream.num_frames(total) < 1:
        minimum = 1
        while upstream.num_frames(minimum) < 1:
            minimum *= 2
        raise AudioError(
            item.path,
            f"too short: {info.duration:.4f} s gives no frame for upstream '{upstream.name}' "
            f"(needs about {minimum / upstream.sample_rate:.4f} s)",
        )
    return info, total


#: padded audio per batch on CPU: enough to pack many short files into one forward pass (each pass has a
#: fixed cost of a few ms, as much as the model's work on a 0.5 s clip), too little to matter for memory;
#: windows longer than this run alone, as before (docs/benchmarks/short_files_bench.md)
CPU_BATCH_SECONDS = 8.0
#: padded audio per batch on CUDA: GPUs need large batches to be fed efficiently
CUDA_BATCH_SECONDS = 160.0


def default_batch_seconds(device: torch.device) -> float:
    return CPU_BATCH_SECONDS if device.type == "cpu" else CUDA_BATCH_SECONDS


def _torchrun_shard() -> tuple[int, int] | None:
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def store_attrs(upstream: Upstream, layers: list[int], pooling: str, dtype: str, windowing: Windowing) -> dict:
    return {
        "format_version": 1,
        "audioembed_version": __version__,
        "upstream": upstream.name,
        "model": upstream.source or "",
        "weights_hash": upstream.weights_hash(),
        "upstream_config": json.dumps(upstream.describe(), sort_keys=True, default=str),
        "sample_rate": int(upstream.sample_rate),
        "hop_length": int(upstream.hop_length),
        "frame_rate": float(upstream.frame_rate),
        "num_layers": int(upstream.num_layers),
        "hidden_size": int(upstream.hidden_size),
        "layers": np.asarray(layers, dtype=np.int64),
        "pooling": pooling,
        "dtype": dtype,
        "window_samples": int(windowing.window),
        "context_samples": int(windowing.context),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def extract(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[InputItem],
    upstream: str | Upstream,
    output: str | os.PathLike,
    *,
    model: str | None = None,
    layers: str | Sequence[int] = "all",
    pooling: str = "mean",
    dtype: str = "float32",
    device: str = "auto",
    batch_seconds: float | None = None,
    window_seconds: float = 30.0,
    shard: tuple[int, int] | None = None,
    strict: bool = False,
    progress: bool = True,
    checkpoint_seconds: float = 10.0,
    threads: int | None = None,
) -> ExtractSummary:
    """Extract features of ``inputs`` (files, folders, manifests, or InputItems) into ``output`` (HDF5).

    Mirrors ``audioembed extract``; see ``audioembed extract --help`` for each option.
    Finished utterances already in ``output`` are skipped, so rerunning resumes;
    ``checkpoint_seconds`` bounds the finished work a hard kill can lose. On CPU, ``threads``
    (else ``$AUDIOEMBED_THREADS``, else :func:`audioembed.threads.choose_threads`) sets torch's
    intra-op threads for the run; the previous count is restored afterwards.
    """
    if pooling not in POOLINGS:
        raise ExtractionError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
    if dtype not in DTYPES:
        raise ExtractionError(f"dtype must be one of {DTYPES}, got '{dtype}'")
    if isinstance(upstream, str):
        check_upstream(upstream, model)  # fail fast, before scanning inputs or loading weights
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    rejected: list[tuple[str, str]] = []  # (id, message) of inputs whose id the store cannot hold
    if inputs and all(isinstance(x, InputItem) for x in inputs):
        items = []  # an explicit item list (e.g. from a downstream task's loader)
        for item in inputs:
            problem = storage_problem(item)
            if problem:
                rejected.append((item.id, f"{printable(item.path)}: {problem}"))
            else:
                items.append(item)
    else:
        items = collect_inputs(inputs, rejected=rejected)
    shard = shard or _torchrun_shard()
    shard_attrs = {}
    if shard is not None:
        index, count = shard
        all_ids = [item.id for item in items]
        items = shard_items(items, index, count)
        output = shard_path(output, index, count)
        # what a complete shard holds, so that gather and readers can tell a finished set
        shard_attrs = {
            "shard_index": index,
            "shard_count": count,
            "shard_item_count": len(items),
            "shard_ids_sha256": ids_fingerprint(item.id for item in items),
            "input_item_count": len(all_ids),
            "input_ids_sha256": ids_fingerprint(all_ids),
        }
    if isinstance(upstream, str):
        local_rank = os.environ.get("LOCAL_RANK")
        if device == "auto" and local_rank is not None and torch.cuda.is_available():
            device = f"cuda:{local_rank}"
        upstream = load_upstream(upstream, model=model, device=device)
    dev = next(iter(upstream.parameters()), torch.empty(0)).device if device == "auto" else resolve_device(device)
    upstream.to(dev).eval()
    layer_ids = resolve_layers(layers, upstream.num_layers)
    windowing = Windowing(upstream, window_seconds)
    if batch_seconds is None:
        batch_seconds = default_batch_seconds(dev)
    batch_samples = int(batch_seconds * upstream.sample_rate)

    summary = ExtractSummary(output=str(output))
    attrs = store_attrs(upstream, layer_ids, pooling, dtype, windowing)
    attrs.update(shard_attrs)
    started = time.monotonic()  # speed is reported for the extraction itself, not model loading
    for item_id, message in rejected:
        _report_failure(summary, printable(repr(item_id)), message, strict)
    writer = FeatureWriter(output, attrs, seal_seconds=checkpoint_seconds)
    try:
        todo = [item for item in items if item.id not in writer.done_ids]
        summary.skipped_done = len(items) - len(todo)
        headers: list[AudioInfo | None] = []
        totals: list[int | None] = []
        for item in todo:
            try:
                info, total = _check_item(item, upstream)
            except AudioError as exc:
                info, total = None, None
                _fail(summary, item, str(exc), strict, writer)
            headers.append(info)
            totals.append(total)
        # longest first: similar lengths end up in the same batch, and the ETA is honest early
        order = sorted(range(len(todo)), key=lambda i: -(totals[i] or 0))
        todo = [todo[i] for i in order]
        headers = [headers[i] for i in order]
        totals = [totals[i] for i in order]
        previous_threads = torch.get_num_threads()
        if dev.type == "cpu":
            summary.threads = apply_threads(_thread_choice(threads, upstream, totals, windowing, batch_samples))
        try:
            _run(todo, headers, totals, upstream, windowing, layer_ids, writer, summary, dev, batch_samples, strict,
                 progress)
        finally:
            apply_threads(previous_threads)
    finally:
        writer.close()
    summary.wall_seconds = time.monotonic() - started
    return summary


def _thread_choice(threads, upstream: Upstream, totals, windowing: Windowing, batch_samples: int):
    """Threads for this run from the model size and the audio one forward pass sees (the median file,
    at most one window, times the files a batch holds)."""
    lengths = sorted(t for t in totals if t)
    typical = min(lengths[len(lengths) // 2], windowing.window) if lengths else windowing.window
    per_forward = max(typical, min(batch_samples, sum(lengths))) if lengths else typical
    parameters = sum(p.numel() for p in upstream.parameters())
    return choose_threads(threads, parameters=parameters or None, seconds=per_forward / upstream.sample_rate)


def _fail(summary: ExtractSummary, item: InputItem, reason: str, strict: bool, writer: FeatureWriter) -> None:
    """Report a bad input and note it in the store (a shard whose bad inputs are noted is complete)."""
    writer.record_failure(item.id, reason)
    _report_failure(summary, item.id, reason, strict)


def _report_failure(summary: ExtractSummary, key: str, reason: str, strict: bool) -> None:
    summary.failed[key] = reason
    if strict:
        raise ExtractionError(f"bad input (--strict): {reason}")
    print(f"audioembed: skipping {reason}", file=sys.stderr)


class _AudioBar:
    """Progress in seconds of audio that reaches exactly 100 % and never passes it.

    The bar counts whole samples (shown as seconds): windows advance it by the samples they
    cover; the last window of a file (or its failure) tops it up to the file's exact length, so
    the count ends at the exact total (a total rounded for display, or float sums, left it short
    or past 100 %, which tqdm reports with a warning).
    """

    def __init__(self, totals: Sequence[int | None], sample_rate: int, enabled: bool):
        from tqdm.auto import tqdm

        self.totals = totals
        self.counted: dict[int, int] = {}
        self.bar = tqdm(
            total=sum(t for t in totals if t),
            unit="s",
            unit_scale=1.0 / sample_rate,  # samples shown as seconds
            desc="audio",
            disable=not enabled or not any(totals),  # nothing to do (a cached rerun): no empty 0/0 bar
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]",
            file=sys.stderr,
        )

    def advance(self, item_index: int, samples: int, last: bool) -> None:
        """``samples`` more of item ``item_index`` are done; ``last``: the item is finished (or given up)."""
        if last:
            samples = (self.totals[item_index] or 0) - self.counted.pop(item_index, 0)
        else:
            samples = min(samples, (self.totals[item_index] or 0) - self.counted.get(item_index, 0))
            self.counted[item_index] = self.counted.get(item_index, 0) + samples
        self.bar.update(samples)

    def close(self) -> None:
        self.bar.close()


def _run(todo, headers, totals, upstream, windowing, layer_ids, writer, summary, dev, batch_samples, strict,
         progress) -> None:
    sr = upstream.sample_rate
    # decode ahead: two batches, or two of the longest windows
    segments = SegmentQueue(maxsize=2 * max(batch_samples, windowing.window + 2 * windowing.context + windowing.extra))
    stop = threading.Event()
    thread = threading.Thread(
        target=_producer, args=(todo, headers, totals, upstream, windowing, segments, stop), daemon=True,
        name="audioembed-decode",
    )
    thread.start()
    bar = _AudioBar(totals, sr, progress)
    pooling = writer.attrs["pooling"]
    # rows each frame-level utterance will have, so its storage is sized exactly
    rows = [None if t is None or pooling in ("mean", "mean+std")
            else upstream.num_frames(t) if pooling == "none" else len(windowing.plan(t)) for t in totals]
    open_items: dict[int, object] = {}  # item index -> UtteranceWriter
    dropped: set[int] = set()  # items left out for non-finite features; their later windows are skipped
    try:
        pending: list[Segment] = []
        finished = False
        while not finished or pending:
            if not finished:
                entry = segments.get()
                if entry is None:
                    finished = True
                elif isinstance(entry, ItemFailed):
                    _flush(pending, upstream, layer_ids, writer, open_items, dropped, todo, totals, rows, summary, dev, bar, strict)
                    pending = []
                    if entry.item_index in open_items:
                        writer.abort()
                        del open_items[entry.item_index]
                    if entry.item_index not in dropped:
                        bar.advance(entry.item_index, 0, last=True)
                        _fail(summary, todo[entry.item_index], entry.reason, strict, writer)
                    continue
                else:
                    # close the batch first if this window would take its padded size past the budget
                    longest = max(len(entry.samples), *(len(p.samples) for p in pending)) if pending else 0
                    if pending and longest * (len(pending) + 1) > batch_samples:
                        _flush(pending, upstream, layer_ids, writer, open_items, dropped, todo, totals, rows, summary, dev, bar, strict)
                        pending = []
                    pending.append(entry)
            if pending and finished:
                _flush(pending, upstream, layer_ids, writer, open_items, dropped, todo, totals, rows, summary, dev, bar, strict)
                pending = []
    finally:
        stop.set()
        while thread.is_alive():
            try:
                segments.get(timeout=0.1)
            except queue.Empty:
                pass
        bar.close()


def _nonfinite_reason(item: InputItem, layers, dtype: str) -> str:
    hint = " (with --dtype float16, values beyond +-65504 also become Inf)" if dtype == "float16" else ""
    return (f"{printable(item.path)}: the upstream produced NaN or Inf features in layer(s) "
            f"{', '.join(map(str, sorted(layers)))}{hint}; not stored")


@torch.inference_mode()
def _flush(batch, upstream, layer_ids, writer, open_items, dropped, todo, totals, rows, summary, dev, bar, strict) -> None:
    if not batch:
        return
    lengths = torch.tensor([len(s.samples) for s in batch], dtype=torch.long)
    wavs = torch.zeros(len(batch), int(lengths.max()), dtype=torch.float32)
    for row, seg in enumerate(batch):
        wavs[row, : len(seg.samples)] = torch.from_numpy(seg.samples)
    out = upstream(wavs.to(dev), lengths.to(dev))
    pooling = writer.attrs["pooling"]
    out_lengths = out.lengths.cpu().tolist()
    for row, seg in enumerate(batch):
        if seg.keep_end > out_lengths[row]:
            raise RuntimeError(
                f"upstream '{upstream.name}' returned {out_lengths[row]} frames for {len(seg.samples)} samples, "
                f"but num_frames() promised at least {seg.keep_end}"
            )
        item = todo[seg.item_index]
        if seg.item_index in dropped:  # the bar was topped up when the item was dropped
            continue
        if seg.item_index not in open_items:
            open_items[seg.item_index] = writer.begin(item.id, layer_ids, upstream.hidden_size, num_rows=rows[seg.item_index])
        utt = open_items[seg.item_index]
        kept = {layer: out.hidden_states[layer][row, seg.keep_start : seg.keep_end] for layer in layer_ids}
        if pooling == "none":
            utt.append({layer: h.float().cpu().numpy() for layer, h in kept.items()})
        elif pooling == "chunks":  # one mean vector per window
            means = {layer: h.double().mean(0, keepdim=True).cpu().numpy() for layer, h in kept.items()}
            utt.append(means, num_frames=seg.keep_end - seg.keep_start)
        else:  # reduce on the device, move only vectors
            sums = {layer: h.double().sum(0).cpu().numpy() for layer, h in kept.items()}
            sq_sums = None
            if pooling == "mean+std":
                sq_sums = {layer: h.double().square().sum(0).cpu().numpy() for layer, h in kept.items()}
            utt.add_sums(sums, sq_sums, seg.keep_end - seg.keep_start)
            utt.nonfinite_layers.update(layer for layer, v in sums.items() if not np.isfinite(v).all())
            if seg.is_last:
                utt.pooled()  # the stored vectors can still overflow a float16
        if utt.nonfinite_layers:  # leave the utterance out rather than store values that poison every probe
            writer.abort()
            del open_items[seg.item_index]
            dropped.add(seg.item_index)
            _fail(summary, item, _nonfinite_reason(item, utt.nonfinite_layers, writer.attrs["dtype"]), strict, writer)
            bar.advance(seg.item_index, 0, last=True)
            continue
        if seg.is_last:
            total = totals[seg.item_index]
            written = open_items.pop(seg.item_index).num_frames
            expected = upstream.num_frames(total)
            if written != expected:
                raise RuntimeError(f"{printable(item.path)}: wrote {written} frames, expected {expected} (windowing bug)")
            writer.commit(
                {
                    "path": item.path,
                    "num_samples": int(total),
                    "duration": float(total / upstream.sample_rate),
                    "metadata": json.dumps(item.metadata, sort_keys=True),
                }
            )
            summary.extracted += 1
            summary.audio_seconds += total / upstream.sample_rate
        bar.advance(seg.item_index, (seg.keep_end - seg.keep_start) * upstream.hop_length, last=seg.is_last)
