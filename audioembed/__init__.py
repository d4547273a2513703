"""audioembed: layer-wise embeddings, distillation and evaluation of self-supervised audio models.

Public API (mirrors the CLI)::

    from audioembed import load_upstream, extract, FeatureReader
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audioembed")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .errors import AudioEmbedError
from .hookspecs import SpecPlugin, hookimpl
from .specs import LazyImport, PluginImportError, TaskSpec, UpstreamError, UpstreamSpec
from .registry import load_upstream, get_registry


def __getattr__(name: str):
    # torch (the upstream contract), extraction and storage (h5py, soundfile) are imported on
    # first use only, so that `audioembed --help` and plugin discovery stay fast
    if name in ("Upstream", "UpstreamOutput"):
        from . import upstream

        return getattr(upstream, name)
    if name == "extract":
        from .extraction import extract

        return extract
    if name in ("FeatureReader", "gather"):
        from . import store

        return getattr(store, name)
    raise AttributeError(name)


__all__ = [
    "__version__",
    "AudioEmbedError",
    "hookimpl",
    "SpecPlugin",
    "LazyImport",
    "PluginImportError",
    "Upstream",
    "UpstreamOutput",
    "UpstreamSpec",
    "UpstreamError",
    "TaskSpec",
    "load_upstream",
    "get_registry",
    "extract",
    "FeatureReader",
    "gather",
]
