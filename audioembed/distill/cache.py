"""Teacher target cache: run each teacher once over the planned crops, keep its target layers.

Why: running HuBERT-Base-sized teachers on every step dominates distillation cost; with the
cache they run once and training only reads float16 targets. Layout of ``cache_dir/``::

    crops.jsonl        one line per planned crop: key, item, path, domain, start, duration
    augment.json       the augmentation the targets were computed on ({"augment": null} = none)
    <teacher>.h5       the teacher's target layers per crop (utterance id = crop key), a
                       feature store written by :class:`~audioembed.store.FeatureWriter`

Because the store is crash-safe and resumable, an interrupted build continues where it
stopped, and a teacher whose weights or settings differ from the file's is refused instead of
mixing targets of two models in one file. Likewise a build or a training run whose
``[data.augment]`` settings (or seed) differ from ``augment.json`` is refused: the targets are
the teachers' outputs on the augmented crops, and other settings mean other audio.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

from ..audio import AudioError
from ..extraction import store_attrs
from ..store import FeatureReader, FeatureWriter, StoreError
from ..upstream import Upstream
from .augment import Augmenter, describe_difference, same_record
from .config import DistillConfig, TeacherSpec, default_target_layers
from .data import Crop, CorpusItem, DataError, Warn, collate, default_warn, load_crop, plan_crops, read_corpus

CROPS_FILE = "crops.jsonl"
AUGMENT_FILE = "augment.json"
REBUILD_HINT = "rebuild it with `audioembed distill-cache` (into another folder, or delete the old one)"


class CacheError(DataError):
    """The teacher cache cannot be built or used as asked; the message names the file."""


def teacher_file(cache_dir: str | os.PathLike, name: str) -> Path:
    return Path(cache_dir) / f"{name}.h5"


def target_layers(spec: TeacherSpec, upstream: Upstream) -> list[int]:
    """The teacher's target hidden states: ``spec.layers`` or the default spread, validated."""
    layers = list(spec.layers) if spec.layers is not None else default_target_layers(upstream.num_layers - 1)
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < upstream.num_layers]
    if bad:
        raise CacheError(
            f"teacher '{spec.name}' ({spec.upstream}) has hidden states 0..{upstream.num_layers - 1}; "
            f"target layers {bad} do not exist"
        )
    if len(set(layers)) != len(layers):
        raise CacheError(f"teacher '{spec.name}': target layers {layers} repeat a layer")
    return [int(i) for i in layers]


# --------------------------------------------------------------------------------------
# crops.jsonl
# --------------------------------------------------------------------------------------


def _crop_records(items: Sequence[CorpusItem], crops: Sequence[Crop]) -> list[dict]:
    return [
        {
            "key": c.key(items),
            "item": items[c.item].id,
            "path": items[c.item].path,
            "domain": items[c.item].domain,
            "start": c.start,
            "duration": c.duration,
        }
        for c in crops
    ]


def read_crop_records(cache_dir: str | os.PathLike) -> list[dict]:
    """The lines of ``cache_dir/crops.jsonl``."""
    path = Path(cache_dir) / CROPS_FILE
    if not path.is_file():
        raise CacheError(f"{path}: not found; {Path(cache_dir)} is no teacher cache; build one with `audioembed distill-cache`")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["start"], rec["duration"] = float(rec["start"]), float(rec["duration"])
                if not isinstance(rec.get("key"), str) or not isinstance(rec.get("item"), str):
                    raise ValueError("'key' and 'item' must be strings")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise CacheError(f"{path}: line {lineno}: not a crop record ({exc}); {REBUILD_HINT}") from None
            records.append(rec)
    return records


def _write_crop_records(cache_dir: Path, records: list[dict]) -> None:
    """Write crops.jsonl once (atomically); a later build must plan exactly the same crops."""
    path = cache_dir / CROPS_FILE
    if path.exists():
        old = read_crop_records(cache_dir)
        old_keys = {r["key"] for r in old}
        new_keys = {r["key"] for r in records}
        if old_keys != new_keys:
            extra = sorted(new_keys - old_keys)
            gone = sorted(old_keys - new_keys)
            example = f"e.g. new {extra[0]!r}" if extra else f"e.g. no longer planned {gone[0]!r}"
            raise CacheError(
                f"{path}: the cache in {cache_dir} was planned with other crops ({len(old_keys)} stored, "
                f"{len(new_keys)} planned now; {example}): the corpus, crop_seconds, min_seconds, "
                f"cache_crops or seed changed. Use another cache folder or delete this one"
            )
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_augment_record(cache_dir: str | os.PathLike) -> dict | None:
    """The augmentation record of a cache; ``None`` (none) for caches made before it existed."""
    path = Path(cache_dir) / AUGMENT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))["augment"]
        if record is not None and not isinstance(record, dict):
            raise ValueError("'augment' must be a table or null")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CacheError(f"{path}: not an augmentation record ({exc}); {REBUILD_HINT}") from None
    return record


def check_augment_record(cache_dir: str | os.PathLike, wanted: dict | None) -> None:
    """Refuse a cache whose targets were computed on other augmented audio than ``wanted``."""
    stored = read_augment_record(cache_dir)
    if not same_record(stored, wanted):
        raise CacheError(
            f"the cache in {cache_dir} was built with other [data.augment] settings than this config "
            f"({describe_difference(stored, wanted)}): its targets belong to other audio; {REBUILD_HINT}"
        )


def _write_augment_record(cache_dir: Path, record: dict | None) -> None:
    """Write augment.json once (before crops.jsonl); a later build must augment the same way."""
    path = cache_dir / AUGMENT_FILE
    if path.exists() or (cache_dir / CROPS_FILE).exists():  # a cache without the file holds clean targets
        check_augment_record(cache_dir, record)
        if path.exists():
            return
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"augment": record}, sort_keys=True, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------


def _cache_attrs(spec: TeacherSpec, upstream: Upstream, layers: list[int], crops: Sequence[Crop], augment: dict | None) -> dict:
    # Same header as `audioembed extract` writes, so the files are ordinary feature stores.
    window = int(round(max(c.duration for c in crops) * upstream.sample_rate))
    attrs = store_attrs(upstream, layers, "none", "float16", SimpleNamespace(window=window, context=0))
    attrs["distill_teacher"] = spec.name
    attrs["distill_augment"] = json.dumps(augment, sort_keys=True)  # provenance; augment.json is checked
    return attrs


def _open_writer(path: Path, attrs: dict, name: str) -> FeatureWriter:
    try:
        return FeatureWriter(path, attrs)
    except StoreError as exc:
        raise CacheError(f"teacher '{name}': {exc} The cache in {path.parent} was made with other weights or settings: {REBUILD_HINT}") from None


def _load_batches(items, todo: list[tuple[Crop, str]], rate: int, batch_size: int, augment: Augmenter | None):
    """``[(crop, key, wave or AudioError)]`` per batch, decoded one batch ahead in a thread."""

    def load(batch):
        out = []
        for crop, key in batch:
            try:
                out.append((crop, key, load_crop(items[crop.item], crop, [rate], augment)[rate]))
            except AudioError as exc:
                out.append((crop, key, exc))
        return out

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audioembed-cache-load") as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i in range(len(batches)):
            current = pending.result()
            pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            yield current


def build_teacher_cache(
    items: Sequence[CorpusItem],
    crops: Sequence[Crop],
    teachers: Sequence[tuple[TeacherSpec, Upstream]],
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    warn: Warn | None = None,
    augment: Augmenter | None = None,
) -> dict[str, int]:
    """Run every teacher over ``crops`` and store its target layers; returns crops written per teacher.

    Resumable: crops already in a teacher's file are skipped. A crop whose audio cannot be
    loaded is reported through ``warn`` and left out (:class:`TeacherCache` trains on the
    crops every teacher file holds). With ``augment`` each teacher sees each crop's seeded
    augmentation, and its record is kept in ``augment.json``.
    """
    from tqdm.auto import tqdm

    warn = warn or default_warn
    if not crops:
        raise CacheError("no crops to cache (is the corpus empty, or every item shorter than min_seconds?)")
    if batch_size < 1:
        raise CacheError(f"batch_size must be >= 1, got {batch_size}")
    names = [spec.name for spec, _ in teachers]
    if not names or len(set(names)) != len(names):
        raise CacheError(f"teacher names must be unique and at least one is needed, got {names}")
    cache_dir = Path(cache_dir)
    plan = [(spec, upstream, target_layers(spec, upstream)) for spec, upstream in teachers]  # validate before writing
    record = augment.record() if augment is not None else None
    if augment is not None:
        for spec, upstream in teachers:
            augment.check_rates([upstream.sample_rate], f"teacher '{spec.name}'")
    records = _crop_records(items, crops)
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys):
        raise CacheError("the crop plan names the same crop twice; plan it with plan_crops")
    _write_augment_record(cache_dir, record)
    _write_crop_records(cache_dir, records)
    dev = torch.device(device)
    written: dict[str, int] = {}
    failed: dict[str, str] = {}  # crop key -> reason, over all teachers
    warned: set[str] = set()
    for spec, upstream, layers in plan:
        path = teacher_file(cache_dir, spec.name)
        writer = _open_writer(path, _cache_attrs(spec, upstream, layers, crops, record), spec.name)
        count = 0
        try:
            todo = [(c, k) for c, k in zip(crops, keys) if k not in writer.done_ids]
            upstream.to(dev).eval()
            rate = int(upstream.sample_rate)
            bar = tqdm(total=len(todo), unit="crop", desc=f"cache {spec.name}", disable=not progress, file=sys.stderr)
            try:
                for batch in _load_batches(items, todo, rate, batch_size, augment):
                    good = []
                    for crop, key, wave in batch:
                        if isinstance(wave, AudioError):
                            failed[key] = str(wave)
                            if wave.path not in warned:
                                warned.add(wave.path)
                                warn(f"cannot load {wave}; its crops are left out of the cache")
                        elif upstream.num_frames(len(wave)) < 1:
                            failed[key] = "too short"
                            warn(f"{items[crop.item].path}: crop {key!r} is too short for teacher '{spec.name}'; left out")
                        else:
                            good.append((crop, key, wave))
                    if good:
                        count += _run_batch(upstream, layers, good, items, writer, dev)
                    bar.update(len(batch))
            finally:
                bar.close()
        finally:
            writer.close()
        written[spec.name] = count
    if failed:
        warn(f"{len(failed)} of {len(crops)} crops could not be cached and are left out (files reported above)")
    return written


@dataclass(frozen=True)
class CacheBuild:
    """What :func:`prepare_teacher_cache` did."""

    cache_dir: str
    #: crops planned (the cache holds every one of them for every teacher)
    crops: int
    #: seconds of audio in the planned crops
    audio_seconds: float
    #: crops newly written per teacher (0 for a teacher already complete)
    written: dict[str, int]


def prepare_teacher_cache(
    config: DistillConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    warn: Warn | None = None,
) -> CacheBuild:
    """Plan the crops of ``config`` and run its teachers over them (resumable).

    Why one function: the trainer finds its targets by crop key, and the crop plan depends on
    the corpus, ``[data]`` crop settings and ``run.seed``; planning it here, for the command,
    the recipe and the benchmark alike, keeps every cache the one the trainer will look for.
    ``cache_dir`` and ``device`` default to the config's ``data.cache_dir`` and ``run.device``.
    """
    from ..registry import resolve_device
    from ..training.config import ConfigError
    from .teachers import load_teachers

    d = config.data
    cache_dir = os.fspath(cache_dir or d.cache_dir)
    if not cache_dir:
        raise ConfigError(f"{config.source}: no cache folder: set [data] cache_dir (or pass one)")
    if not d.manifests:
        raise ConfigError(f"{config.source}: [data] manifests is empty")
    dev = resolve_device(device or config.run.device)
    items = read_corpus(d.manifests, d.default_domain, d.min_seconds, warn=warn)
    crops = plan_crops(items, d.crop_seconds, d.min_seconds, d.cache_crops, config.run.seed)
    augment = Augmenter(d.augment, config.run.seed, warn=warn) if d.augment.active else None
    teachers = load_teachers(config, dev)
    written = build_teacher_cache(
        items, crops, [(t.spec, t.upstream) for t in teachers], cache_dir,
        batch_size=batch_size, device=str(dev), progress=progress, warn=warn, augment=augment,
    )
    return CacheBuild(cache_dir, len(crops), float(sum(c.duration for c in crops)), written)


@torch.no_grad()
def _run_batch(upstream, layers, good, items, writer: FeatureWriter, dev) -> int:
    wavs, lengths = collate([w for _, _, w in good])
    out = upstream(wavs.to(dev), lengths.to(dev))
    frames = out.lengths.cpu().tolist()
    for row, (crop, key, wave) in enumerate(good):
        n = int(frames[row])
        item = items[crop.item]
        block = {layer: out.hidden_states[layer][row, :n].float().cpu().numpy() for layer in layers}
        width = next(iter(block.values())).shape[-1]
        w = writer.begin(key, layers, width)
        w.append(block)
        writer.commit(
            {
                "path": item.path,
                "item_id": item.id,
                "domain": item.domain,
                "start": float(crop.start),
                "duration": float(crop.duration),
                "num_samples": int(len(wave)),
                "metadata": json.dumps({"item": item.id, "domain": item.domain, "start": crop.start}),
            }
        )
    return len(good)


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


class TeacherCache:
    """Cached targets of several teachers, read during training.

    Given the teachers' upstreams, checks each file was made with the same weights and target
    layers; without (``None``), trusts the files. Always checks that the targets were computed
    on the audio ``augment`` (an :meth:`Augmenter.record`, ``None`` = no augmentation) describes.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        teachers: Sequence[tuple[TeacherSpec, Upstream | None]],
        *,
        warn: Warn | None = None,
        augment: dict | None = None,
    ):
        self.cache_dir = Path(cache_dir)
        self.warn = warn or default_warn
        self.records = read_crop_records(self.cache_dir)
        check_augment_record(self.cache_dir, augment)
        self.readers: dict[str, FeatureReader] = {}
        self.layers: dict[str, list[int]] = {}
        try:
            for spec, upstream in teachers:
                self._open(spec, upstream)
        except BaseException:
            self.close()
            raise
        if not self.readers:
            raise CacheError(f"{self.cache_dir}: no teachers given")
        in_all = None
        for reader in self.readers.values():
            ids = set(reader.ids)
            in_all = ids if in_all is None else in_all & ids
        planned = [r["key"] for r in self.records]
        #: crop keys every teacher file holds (training uses only these)
        self.present_keys: set[str] = {k for k in planned if k in in_all}
        #: planned crops missing from at least one teacher file (unreadable audio, unfinished build)
        self.missing_keys: list[str] = [k for k in planned if k not in in_all]

    def _open(self, spec: TeacherSpec, upstream: Upstream | None) -> None:
        path = teacher_file(self.cache_dir, spec.name)
        if not path.exists():
            raise CacheError(f"{path}: no cached targets for teacher '{spec.name}'; build them with `audioembed distill-cache`")
        try:
            reader = FeatureReader(path)
        except StoreError as exc:
            raise CacheError(f"{exc}; {REBUILD_HINT}") from None
        self.readers[spec.name] = reader
        attrs = reader.attrs
        if attrs.get("pooling") != "none":
            raise CacheError(f"{path}: holds pooled features ({attrs.get('pooling')}), not frame-level teacher targets; {REBUILD_HINT}")
        if upstream is not None:
            if attrs.get("weights_hash") != upstream.weights_hash():
                raise CacheError(
                    f"the cache in {path} was made with other weights than teacher '{spec.name}' "
                    f"({spec.upstream}:{spec.model}): {REBUILD_HINT}"
                )
            if int(attrs.get("sample_rate", 0)) != upstream.sample_rate or int(attrs.get("hop_length", 0)) != upstream.hop_length:
                raise CacheError(f"the cache in {path} was made at another sample rate or hop than teacher '{spec.name}': {REBUILD_HINT}")
            wanted = target_layers(spec, upstream)
        else:
            wanted = list(spec.layers) if spec.layers is not None else reader.layers
        if list(wanted) != reader.layers:
            raise CacheError(
                f"the cache in {path} holds layers {reader.layers} of teacher '{spec.name}', the config asks for "
                f"{list(wanted)}: {REBUILD_HINT}"
            )
        self.layers[spec.name] = reader.layers

    def crops(self, items: Sequence[CorpusItem]) -> list[Crop]:
        """The cached crops (present for every teacher) of items in ``items``, in plan order."""
        index = {item.id: i for i, item in enumerate(items)}
        out: list[Crop] = []
        gone = 0
        for rec in self.records:
            if rec["key"] not in self.present_keys:
                continue
            i = index.get(rec["item"])
            if i is None:
                gone += 1
                continue
            out.append(Crop(i, rec["start"], rec["duration"]))
        if self.missing_keys:
            self.warn(
                f"{len(self.missing_keys)} of {len(self.records)} planned crops are missing from at least one "
                f"teacher file in {self.cache_dir} (unreadable audio, or an unfinished `audioembed distill-cache`); "
                "training uses the others"
            )
        if gone:
            self.warn(f"{gone} cached crop(s) belong to items no longer in the corpus and are not used")
        if not out:
            raise CacheError(f"{self.cache_dir}: none of the cached crops belongs to the current corpus; {REBUILD_HINT}")
        return out

    def _reader(self, teacher: str) -> FeatureReader:
        try:
            return self.readers[teacher]
        except KeyError:
            raise CacheError(f"{self.cache_dir}: no teacher '{teacher}' (cached: {', '.join(self.readers)})") from None

    def targets(self, teacher: str, crop_keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, Tmax, D)`` float32 targets (zero-padded in time) and ``(B,)`` frame counts."""
        reader = self._reader(teacher)
        blocks = []
        for key in crop_keys:
            try:
                layers = reader.get_layers(key)
            except KeyError:
                raise CacheError(f"{reader.files[0]}: crop {key!r} is not cached; {REBUILD_HINT}") from None
            blocks.append(np.stack([layers[layer] for layer in reader.layers]))  # (K, T, D)
        lengths = torch.tensor([b.shape[1] for b in blocks], dtype=torch.long)
        k = len(reader.layers)
        width = blocks[0].shape[2] if blocks else 0
        out = torch.zeros(len(blocks), k, int(lengths.max()) if blocks else 0, width, dtype=torch.float32)
        for row, block in enumerate(blocks):
            out[row, :, : block.shape[1]] = torch.from_numpy(block.astype(np.float32))
        return out, lengths

    def sample_rate(self, teacher: str) -> int:
        return int(self._reader(teacher).attrs["sample_rate"])

    def frame_rate(self, teacher: str) -> float:
        return float(self._reader(teacher).attrs["frame_rate"])

    def hop_length(self, teacher: str) -> int:
        return int(self._reader(teacher).attrs["hop_length"])

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers = {}

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "AUGMENT_FILE",
    "CROPS_FILE",
    "CacheError",
    "TeacherCache",
    "build_teacher_cache",
    "check_augment_record",
    "read_augment_record",
    "read_crop_records",
    "target_layers",
    "teacher_file",
]
