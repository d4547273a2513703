"""Training data for distillation: a corpus with domains, crop plans, a stateless step sampler.

Why stateless: the global batch of step ``s`` is a pure function of ``(seed, s)``, so a
resumed run needs only the step number, and every data-parallel rank computes the same
global batch and takes its own slice, without any communication. Loading happens in
background threads, but what a step contains never depends on thread timing: every slot is
decided by the sampler, and a file that fails to load is replaced by a deterministic redraw.

Crop times are seconds; ``Crop.key`` names a crop as ``"<item id>@<start>+<duration>"``
(milliseconds), which is also its utterance id in the teacher target cache.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ..errors import AudioEmbedError
from ..audio import AudioError, check_rate, decode_segment, probe
from ..inputs import InputError, collect_inputs

if TYPE_CHECKING:
    from .augment import Augmenter

Warn = Callable[[str], None]


class DataError(AudioEmbedError, ValueError):
    """The training data cannot be used as asked; the message names the file or setting."""


def default_warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


# --------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusItem:
    """One usable audio file of the training corpus (header already checked)."""

    id: str
    path: str
    domain: str
    #: seconds
    duration: float
    #: source sample rate (Hz)
    sample_rate: int
    #: source frames (samples per channel)
    frames: int


def read_corpus(
    manifests: Sequence[str | os.PathLike],
    default_domain: str,
    min_seconds: float,
    warn: Warn | None = None,
) -> list[CorpusItem]:
    """The usable items of ``manifests`` (manifests, folders or files), sorted by id.

    A row's ``domain`` column wins over ``default_domain``. Files whose header cannot be read
    are reported through ``warn`` and skipped (one bad file must not stop a training run);
    items shorter than ``min_seconds`` are skipped with one summary warning.
    """
    warn = warn or default_warn
    try:
        inputs = collect_inputs(list(manifests))
    except InputError as exc:
        raise DataError(str(exc)) from None

    def check(item):
        try:
            return probe(item.path)
        except AudioError as exc:
            return exc

    # Probing is I/O bound (network file systems): a few threads, results in input order.
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(check, inputs))
    items: list[CorpusItem] = []
    broken = 0
    short: list[str] = []
    for item, info in zip(inputs, infos):
        if isinstance(info, AudioError):
            broken += 1
            warn(f"skipping {info}")
            continue
        if info.duration < min_seconds:
            short.append(item.id)
            continue
        domain = str(item.metadata.get("domain", "") or "").strip() or default_domain
        items.append(CorpusItem(item.id, item.path, domain, info.duration, info.sample_rate, info.num_samples))
    if short:
        warn(
            f"skipping {len(short)} item(s) shorter than min_seconds = {min_seconds:g} s "
            f"(e.g. {short[0]!r})"
        )
    if not items:
        shown = ", ".join(os.fspath(m) for m in manifests)
        raise DataError(
            f"no usable audio in {shown} ({len(inputs)} listed, {broken} unreadable, "
            f"{len(short)} shorter than {min_seconds:g} s)"
        )
    items.sort(key=lambda it: it.id)
    return items


# --------------------------------------------------------------------------------------
# crops
# --------------------------------------------------------------------------------------


def crop_key(item_id: str, start: float, duration: float) -> str:
    """Stable name of a crop; the utterance id of its teacher targets in the cache."""
    return f"{item_id}@{start:.3f}+{duration:.3f}"


def _floor_ms(seconds: float) -> float:
    # Random starts live on a millisecond grid so that the key names the crop exactly
    # (two starts that print alike are the same start), and flooring never passes the end.
    return math.floor(seconds * 1000.0 + 1e-6) / 1000.0


@dataclass(frozen=True)
class Crop:
    """A window of one corpus item: ``items[item]`` from ``start`` for ``duration`` seconds."""

    item: int
    start: float
    duration: float

    def key(self, items: Sequence[CorpusItem]) -> str:
        return crop_key(items[self.item].id, self.start, self.duration)


def _random_window(index: int, item: CorpusItem, crop_seconds: float, u: float) -> Crop:
    """The window of ``crop_seconds`` at fraction ``u`` of the free range (whole item if shorter)."""
    if item.duration <= crop_seconds:
        return Crop(index, 0.0, item.duration)
    return Crop(index, _floor_ms(u * (item.duration - crop_seconds)), crop_seconds)


def plan_crops(
    items: Sequence[CorpusItem], crop_seconds: float, min_seconds: float, mode: str | int, seed: int
) -> list[Crop]:
    """Crops for the teacher cache, in item order; deterministic.

    ``"cover"``: consecutive windows of ``crop_seconds`` tiling each item; the last, shorter
    window is kept if it has at least ``min_seconds`` (an item shorter than ``crop_seconds``
    gives one crop of its whole length). An integer N: N windows per item at uniform random
    starts drawn from ``default_rng([seed, item_index])``, so adding an item changes no other
    item's crops; items not longer than ``crop_seconds`` give one whole-item crop.
    """
    if not crop_seconds > 0:
        raise DataError(f"crop_seconds must be > 0, got {crop_seconds!r}")
    cover = mode == "cover"
    if not cover and (isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or mode < 1):
        raise DataError(f"cache_crops must be \"cover\" or a positive integer, got {mode!r}")
    crops: list[Crop] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.duration < min_seconds:
            continue
        if cover:
            planned = []
            k = 0
            while True:
                start = k * crop_seconds
                remaining = item.duration - start
                if remaining <= 1e-9:
                    break
                if remaining >= crop_seconds - 1e-9:
                    planned.append(Crop(index, start, crop_seconds))
                elif remaining >= min_seconds:  # the shorter last window (or the whole short item)
                    planned.append(Crop(index, start, remaining))
                k += 1
        else:
            rng = np.random.default_rng([int(seed), index])
            planned = [_random_window(index, item, crop_seconds, float(u)) for u in rng.random(int(mode))]
        for crop in planned:
            key = crop.key(items)
            if key not in seen:  # a short item gives the same whole-item crop N times
                seen.add(key)
                crops.append(crop)
    return crops


# --------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------


def domain_counts(batch: Iterable[Crop], items: Sequence[CorpusItem]) -> dict[str, int]:
    """Samples per domain in ``batch`` (sorted by domain)."""
    counts: dict[str, int] = {}
    for crop in batch:
        d = items[crop.item].domain
        counts[d] = counts.get(d, 0) + 1
    return dict(sorted(counts.items()))


class StepSampler:
    """The global batch of each step as a pure function of ``(seed, step)``.

    Online mode (``crops=None``): each slot picks an item, then a random window of
    ``crop_seconds`` in it (the whole item if shorter). Cached mode: each slot picks one of
    ``crops`` (the crops the teacher cache holds). With ``domain_weights`` a slot first picks
    a domain with probability proportional to its weight, then uniformly within it; without,
    it picks uniformly over items (or crops). Every domain present in the data must have a
    weight (0 excludes it): silently dropping a domain nobody mentioned is a worse surprise
    than an error.
    """

    def __init__(
        self,
        items: Sequence[CorpusItem],
        batch_size: int,
        seed: int,
        crop_seconds: float,
        domain_weights: dict[str, float] | None = None,
        crops: Sequence[Crop] | None = None,
    ):
        if not items:
            raise DataError("the sampler needs at least one corpus item")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if not crop_seconds > 0:
            raise DataError(f"crop_seconds must be > 0, got {crop_seconds!r}")
        self.items = list(items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.crop_seconds = float(crop_seconds)
        self.crops = None if crops is None else list(crops)
        if self.crops is not None:
            if not self.crops:
                raise DataError("the sampler was given an empty crop list (is the teacher cache empty?)")
            bad = [c for c in self.crops if not 0 <= c.item < len(self.items)]
            if bad:
                raise DataError(f"crop {bad[0]} refers to item {bad[0].item}, but there are {len(self.items)} items")
            pool_domains = [self.items[c.item].domain for c in self.crops]
        else:
            pool_domains = [it.domain for it in self.items]
        by_domain: dict[str, list[int]] = {}
        for i, d in enumerate(pool_domains):
            by_domain.setdefault(d, []).append(i)
        self.domains = sorted(by_domain)
        self._by_domain = {d: np.asarray(v, dtype=np.int64) for d, v in by_domain.items()}
        self._pool_domains = pool_domains
        self.domain_weights = dict(domain_weights) if domain_weights else None
        self._probs = None
        if self.domain_weights:
            absent = sorted(set(self.domain_weights) - set(self.domains))
            if absent:
                raise DataError(
                    f"domain_weights names domain(s) {', '.join(map(repr, absent))} that no training item has "
                    f"(domains in the data: {', '.join(self.domains)})"
                )
            unweighted = sorted(set(self.domains) - set(self.domain_weights))
            if unweighted:
                raise DataError(
                    f"domain(s) {', '.join(map(repr, unweighted))} of the training data have no entry in "
                    f"domain_weights; give each a weight (0 leaves it out)"
                )
            weights = np.array([float(self.domain_weights[d]) for d in self.domains], dtype=np.float64)
            if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
                raise DataError(f"domain_weights must be non-negative with a positive sum, got {self.domain_weights}")
            self._probs = weights / weights.sum()

    @property
    def cached(self) -> bool:
        return self.crops is not None

    def _crop(self, pool_index: int, u_start: float) -> Crop:
        if self.crops is not None:
            return self.crops[pool_index]
        return _random_window(pool_index, self.items[pool_index], self.crop_seconds, u_start)

    def global_batch(self, step: int) -> list[Crop]:
        """The ``batch_size`` crops of ``step`` (all processes together)."""
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise DataError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([self.seed, int(step)])
        n = self.batch_size
        pool_size = len(self._pool_domains)
        if self._probs is None:
            picks = rng.integers(pool_size, size=n)
        else:
            chosen = rng.choice(len(self.domains), size=n, p=self._probs)
            u = rng.random(n)
            picks = np.empty(n, dtype=np.int64)
            for slot, (d, x) in enumerate(zip(chosen, u)):
                pool = self._by_domain[self.domains[d]]
                picks[slot] = pool[min(int(x * len(pool)), len(pool) - 1)]
        starts = rng.random(n)
        return [self._crop(int(p), float(s)) for p, s in zip(picks, starts)]

    def local_batch(self, step: int, rank: int, world: int) -> list[Crop]:
        """This process's share of the global batch: slots ``rank, rank + world, ...``."""
        if world < 1 or not 0 <= rank < world:
            raise DataError(f"invalid process rank {rank} of {world}")
        if self.batch_size % world:
            raise DataError(f"batch_size {self.batch_size} is not divisible by the {world} processes")
        return self.global_batch(step)[rank::world]

    def redraw(self, step: int, slot: int, attempt: int, domain: str) -> Crop:
        """A replacement for slot ``slot`` of ``step`` whose audio failed: same domain, own seed."""
        rng = np.random.default_rng([self.seed, int(step), int(slot), int(attempt) + 1])
        pool = self._by_domain.get(domain)
        if pool is None:
            pool = np.arange(len(self._pool_domains))
        pick = int(pool[int(rng.integers(len(pool)))])
        return self._crop(pick, float(rng.random()))

    def domain_counts(self, batch: Iterable[Crop]) -> dict[str, int]:
        return domain_counts(batch, self.items)


# --------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------


def crop_frames(item: CorpusItem, crop: Crop) -> tuple[int, int]:
    """``(first frame, frame count)`` of ``crop`` in the source file, clipped to the file."""
    start = int(round(crop.start * item.sample_rate))
    count = int(round(crop.duration * item.sample_rate))
    return start, max(0, min(count, item.frames - start))


def load_crop(item: CorpusItem, crop: Crop, rates: Iterable[int], augment: "Augmenter | None" = None) -> dict[int, np.ndarray]:
    """Only the crop's segment of ``item``, mono float32, at each rate in ``rates``.

    Resampled exactly as :func:`audioembed.audio.load` does (libsoxr, same quality), so each
    array has :func:`~audioembed.audio.resampled_length` samples of the segment. With
    ``augment``, the crop's seeded augmentation is applied once and the one augmented signal
    is resampled to each rate (:mod:`.augment`). Raises :class:`~audioembed.audio.AudioError`
    naming the file when it cannot be used.
    """
    if augment is not None:
        return augment.load(item, crop, rates)
    start, count = crop_frames(item, crop)
    if count <= 0:
        raise AudioError(item.path, f"crop at {crop.start:.3f} s lies outside the file ({item.duration:.3f} s)")
    return decode_segment(item.path, start, count, item.sample_rate, rates)


def collate(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(B, Nmax)`` float32 batch and its ``(B,)`` long lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0, dtype=torch.float32)
    for row, w in enumerate(waves):
        batch[row, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return batch, lengths


# --------------------------------------------------------------------------------------
# loader
# --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One micro-batch: its crops (after any replacement), their domains and the audio."""

    step: int
    crops: list[Crop]
    domains: list[str]
    #: sample rate -> (wavs (B, N) float32 zero-padded, lengths (B,) long)
    audio: dict[int, tuple[torch.Tensor, torch.Tensor]]


class StepBatches(NamedTuple):
    """What :class:`BatchLoader` yields per optimiser step (unpacks as a 3-tuple)."""

    #: this process's micro-batches (``accumulate`` of them)
    micro_batches: list[Batch]
    #: samples per domain in the *global* batch (every process gets the same counts)
    domain_counts: dict[str, int]
    #: seconds of audio in the global batch (for throughput logs)
    audio_seconds: float


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


class BatchLoader:
    """Batches of steps ``[start_step, max_steps)`` for process ``rank`` of ``world``.

    Audio is decoded ahead in background threads (``workers`` threads, ``prefetch`` steps
    ahead; ``workers=0`` loads in the calling thread). A crop whose file fails is replaced by
    up to ``retries`` redraws from the same domain (:meth:`StepSampler.redraw`), then by the
    next loaded crop of the same micro-batch, so the batch size never changes and the content
    of a step depends only on the seed, the step and which files are broken. With ``augment``
    every crop gets its seeded augmentation (a function of the crop, not of the step).
    """

    def __init__(
        self,
        items: Sequence[CorpusItem],
        sampler: StepSampler,
        rates: Iterable[int],
        *,
        start_step: int = 0,
        max_steps: int,
        rank: int = 0,
        world: int = 1,
        accumulate: int = 1,
        workers: int = 1,
        prefetch: int = 2,
        retries: int = 3,
        warn: Warn | None = None,
        augment: "Augmenter | None" = None,
    ):
        self.items = list(items)
        self.augment = augment
        self.sampler = sampler
        self.rates = sorted({check_rate(r) for r in rates})
        if not self.rates:
            raise DataError("the loader needs at least one sample rate")
        if world < 1 or not 0 <= rank < world:
            raise DataError(f"invalid process rank {rank} of {world}")
        if accumulate < 1:
            raise DataError(f"accumulate must be >= 1, got {accumulate}")
        if sampler.batch_size % (world * accumulate):
            raise DataError(
                f"batch_size {sampler.batch_size} must be divisible by processes x accumulate = {world} x {accumulate}"
            )
        self.start_step = int(start_step)
        self.max_steps = int(max_steps)
        self.rank, self.world, self.accumulate = int(rank), int(world), int(accumulate)
        self.workers = max(0, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.retries = max(0, int(retries))
        self.warn = warn or default_warn
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()

    # -- one step, synchronously (what the threads run) ----------------------------------

    def _report(self, exc: AudioError) -> None:
        with self._lock:
            first = exc.path not in self._warned
            self._warned.add(exc.path)
        if first:  # once per file: a broken file is drawn again and again over a long run
            self.warn(f"cannot load {exc}; its crops are replaced by other crops")

    def _load_slot(self, step: int, slot: int, crop: Crop):
        domain = self.items[crop.item].domain
        for attempt in range(self.retries + 1):
            if attempt:
                crop = self.sampler.redraw(step, slot, attempt - 1, domain)
            try:
                return crop, load_crop(self.items[crop.item], crop, self.rates, self.augment)
            except AudioError as exc:
                self._report(exc)
        return None

    def load_step(self, step: int) -> StepBatches:
        """Everything step ``step`` needs on this process."""
        crops = self.sampler.global_batch(step)
        counts = domain_counts(crops, self.items)
        seconds = float(sum(c.duration for c in crops))
        local = list(range(self.rank, len(crops), self.world))
        if self._pool is not None:
            slots = list(self._pool.map(lambda g: self._load_slot(step, g, crops[g]), local))
        else:
            slots = [self._load_slot(step, g, crops[g]) for g in local]
        size = len(local) // self.accumulate
        micro = []
        for k in range(self.accumulate):
            chunk = slots[k * size : (k + 1) * size]
            loaded = [i for i, s in enumerate(chunk) if s is not None]
            if not loaded:
                raise DataError(
                    f"step {step}: none of the {len(chunk)} crops of a micro-batch could be loaded, even after "
                    f"redraws; check the files reported above"
                )
            for i, s in enumerate(chunk):
                if s is None:
                    chunk[i] = chunk[next((j for j in loaded if j > i), loaded[0])]
            audio = {rate: collate([s[1][rate] for s in chunk]) for rate in self.rates}
            micro.append(
                Batch(step, [s[0] for s in chunk], [self.items[s[0].item].domain for s in chunk], audio)
            )
        return StepBatches(micro, counts, seconds)

    # -- iteration -----------------------------------------------------------------------

    def _produce(self) -> None:
        try:
            for step in range(self.start_step, self.max_steps):
                if self._stop.is_set():
                    return
                self._put(self.load_step(step))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
            return
        self._put(_DONE)

    def _put(self, entry) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[StepBatches]:
        if self.workers == 0:
            for step in range(self.start_step, self.max_steps):
                yield self.load_step(step)
            return
        self.close()
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.prefetch)
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="audioembed-distill-load")
        self._thread = threading.Thread(target=self._produce, daemon=True, name="audioembed-distill-data")
        self._thread.start()
        try:
            while True:
                entry = self._queue.get()
                if entry is _DONE:
                    return
                if isinstance(entry, _Failed):
                    raise entry.exc
                yield entry
        finally:
            self.close()

    def close(self) -> None:
        """Stop the background threads (safe to call more than once)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
