"""The student folder: what ``audioembed distill`` and ``audioembed merge`` write and the
``student`` upstreams read.

It lives in the core because the trainer writes it; the ``student`` plugin only registers
the upstreams that load it.

Student checkpoint format (``format_version`` 1), one folder:

* ``config.json`` + ``model.safetensors``: ``transformers.HubertModel.save_pretrained`` output;
* ``audioembed_student.json``::

      {"format": "audioembed-student", "format_version": 1,
       "sample_rate": 16000, "normalize": false,
       "teachers": [...], "target_layers": {...}, "init_fingerprint": "...", "training": {...}}

  Only ``format``, ``format_version``, ``sample_rate`` and ``normalize`` are needed to load;
  the rest documents how the student was made;
* optionally ``heads.safetensors``: the prediction heads of distillation, ignored here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..upstream import UpstreamError
from .hf_encoder import HFEncoderUpstream, load_pretrained, read_json, wrap_hf_model

FORMAT = "audioembed-student"
FORMAT_VERSION = 1
META_FILE = "audioembed_student.json"
HEADS_FILE = "heads.safetensors"
RESERVED_KEYS = ("format", "format_version", "sample_rate", "normalize")


def save_student(
    model,
    folder,
    *,
    sample_rate: int = 16000,
    normalize: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Write ``model`` (a ``HubertModel``) as a student folder; returns the folder.

    ``metadata`` adds the descriptive fields (``teachers``, ``target_layers``,
    ``init_fingerprint``, ``training``, ...); it may not set the reserved loading fields.
    ``audioembed_student.json`` is written last, so a folder that has it is complete.
    """
    from transformers import HubertModel

    if isinstance(model, HFEncoderUpstream):
        model = model.model
    if not isinstance(model, HubertModel):
        raise TypeError(f"save_student expects a transformers.HubertModel, got {type(model).__name__}")
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    metadata = dict(metadata or {})
    clash = sorted(k for k in metadata if k in RESERVED_KEYS)
    if clash:
        raise ValueError(f"metadata may not set {', '.join(clash)}; pass sample_rate/normalize as arguments")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sample_rate": sample_rate,
        "normalize": normalize,
        "teachers": [],
        "target_layers": {},
        "init_fingerprint": None,
        "training": {},
    }
    meta.update(metadata)
    text = json.dumps(meta, indent=2, sort_keys=False)  # fail before writing anything

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)
    model.save_pretrained(str(folder))
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, folder / META_FILE)
    return folder


def read_student_metadata(folder) -> dict:
    """Validated ``audioembed_student.json`` of a student folder."""
    folder = Path(folder)
    path = folder / META_FILE
    if not path.is_file():
        raise UpstreamError(
            f"'{folder}' is not an audioembed student folder: {META_FILE} is missing "
            "(students are written by `audioembed distill` / save_student)"
        )
    meta = read_json(path, "student metadata")
    if meta.get("format") != FORMAT:
        raise UpstreamError(f"{path}: 'format' is {meta.get('format')!r}, expected '{FORMAT}'")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UpstreamError(f"{path}: 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise UpstreamError(
            f"{path}: format_version {version} is newer than this audioembed supports ({FORMAT_VERSION}); upgrade audioembed"
        )
    if version < 1:
        raise UpstreamError(f"{path}: invalid format_version {version}")
    rate = meta.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise UpstreamError(f"{path}: 'sample_rate' must be a positive integer, got {rate!r}")
    if not isinstance(meta.get("normalize"), bool):
        raise UpstreamError(f"{path}: 'normalize' must be true or false, got {meta.get('normalize')!r}")
    return meta


def load_student(source: str, name: str = "student") -> HFEncoderUpstream:
    """Load a student folder as an upstream."""
    from transformers import HubertModel

    folder = Path(os.path.expanduser(str(source)))
    if not folder.exists():
        raise UpstreamError(f"student folder '{source}' does not exist")
    if not folder.is_dir():
        raise UpstreamError(f"'{source}' is a file; pass the student folder (with {META_FILE})")
    meta = read_student_metadata(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UpstreamError(f"student folder '{source}' has no config.json")
    model_type = read_json(config_path, "model config").get("model_type")
    if model_type != "hubert":
        raise UpstreamError(f"{config_path}: model_type is {model_type!r}; a student is a 'hubert' model")
    model, info = load_pretrained(HubertModel, folder, dtype=torch.float32, output_loading_info=True)
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    unexpected = sorted(info.get("unexpected_keys", ()))
    if missing or unexpected:
        raise UpstreamError(
            f"the weights in '{source}' do not match its config.json "
            f"(missing: {', '.join(missing[:6]) or 'none'}; unexpected: {', '.join(unexpected[:6]) or 'none'})"
        )
    return wrap_hf_model(
        model, sample_rate=meta["sample_rate"], normalize=meta["normalize"], source=str(source), name=name
    )
