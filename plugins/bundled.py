"""The two small teachers of the offline reproduction, shipped with the package.

Real HuBERT and MERT weights need a model hub; these 4-layer, 256-d teachers
(``recipes/offline``, docs/model_card.md) work right after install, with no network, so a
speech and a music reference model are always at hand next to ``unified_student``. They are
plain ``save_pretrained`` folders (weights stored in float16 to fit the package-size budget,
computed in float32) and load through the ``hubert`` and ``mert`` upstreams' own code, as
any checkpoint of those families would.

Upstreams: ``small_hubert`` (16 kHz speech teacher) and ``small_mert`` (24 kHz music teacher).
"""

from __future__ import annotations

from pathlib import Path

from audioembed.upstream import Upstream, UpstreamError

from .hf import load_hf_encoder
from .mert import load_mert

PRETRAINED = Path(__file__).resolve().parent / "pretrained"

def _load_hubert(folder: str) -> Upstream:
    return load_hf_encoder("hubert", folder)


#: upstream name (= its folder under pretrained/) -> (family upstream, that family's loader)
BUNDLED_TEACHERS = {
    "small_hubert": ("hubert", _load_hubert),
    "small_mert": ("mert", load_mert),
}


def bundled_dir(name: str) -> Path:
    return PRETRAINED / name


def load_bundled(name: str, source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers for each of :data:`BUNDLED_TEACHERS`."""
    family, load_family = BUNDLED_TEACHERS[name]
    if source:
        raise UpstreamError(
            f"upstream '{name}' is the bundled model and takes no --model/--ckpt; "
            f"load another folder with --upstream {family} --model PATH"
        )
    folder = bundled_dir(name)
    if not (folder / "config.json").is_file():
        raise UpstreamError(f"the bundled model folder {folder} is missing (a broken install?)")
    return load_family(str(folder))
