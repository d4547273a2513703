"""Feature cache shared by every downstream run.

A frozen upstream gives the same features every epoch, every run and every task, so they
are computed once and kept in an HDF5 feature store (the same format as ``audioembed
extract``) whose name is derived from the upstream, its weights hash and the extraction
settings. Utterance ids are the absolute path plus the file's size and modification time,
so another task on the same audio reuses the features and an edited file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from .extraction import ExtractSummary, Windowing, extract, store_attrs
from .inputs import InputItem
from .store import FeatureReader
from .upstream import Upstream

ENV_CACHE = "AUDIOEMBED_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "audioembed" / "features"


def cache_key(path: str) -> str:
    """Utterance id of an audio file in the cache: path + size + mtime."""
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}@{st.st_size}-{st.st_mtime_ns}"
    except OSError:  # missing: the extractor reports it
        return os.path.abspath(path)


def cache_path(cache_dir: Path, upstream: Upstream, pooling: str, dtype: str, window_seconds: float) -> Path:
    windowing = Windowing(upstream, window_seconds)
    attrs = store_attrs(upstream, list(range(upstream.num_layers)), pooling, dtype, windowing)
    identity = {k: attrs[k] for k in ("upstream", "weights_hash", "sample_rate", "hop_length", "pooling", "dtype",
                                      "window_samples", "context_samples")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=int).encode()).hexdigest()[:12]
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in upstream.name)
    return cache_dir / f"{safe_name}-{attrs['weights_hash']}-{pooling.replace('+', '_')}-{dtype}-{digest}.h5"


def cached_features(
    upstream: Upstream,
    paths: Sequence[str],
    *,
    pooling: str,
    cache_dir: Path | None = None,
    dtype: str = "float32",
    window_seconds: float = 30.0,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
) -> tuple[FeatureReader, dict[str, str], ExtractSummary]:
    """Features of every file in ``paths`` (all layers), extracting only what is missing.

    Returns the reader, a map path -> cache id, and the extraction summary (``extracted``
    is 0 when everything came from the cache).
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_path(cache_dir, upstream, pooling, dtype, window_seconds)
    keys = {p: cache_key(p) for p in dict.fromkeys(paths)}
    items = [InputItem(id=key, path=os.path.abspath(p), metadata={}) for p, key in keys.items()]
    summary = extract(
        items,
        upstream,
        target,
        layers="all",
        pooling=pooling,
        dtype=dtype,
        device=device,
        window_seconds=window_seconds,
        progress=progress,
        threads=threads,
    )
    return FeatureReader(target), keys, summary
