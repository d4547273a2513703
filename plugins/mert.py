"""MERT (m-a-p/MERT-v0, MERT-v0-public, MERT-v1-95M, MERT-v1-330M), loaded natively.

The published checkpoints ship a ``trust_remote_code`` ``MERTModel`` that subclasses
``HubertModel`` (and breaks on transformers >= 4.48). With its CQT input branch off and
``deepnorm`` off, which is how every released model is configured, its parameter tree is
exactly ``HubertModel``'s and its forward is HubertModel's, so this plugin never runs
remote code: it builds a ``transformers.HubertConfig`` from the HuBERT fields of MERT's
``config.json``, reads the plain state dict (``model.safetensors`` or
``pytorch_model.bin`` with ``weights_only=True``), renames the legacy weight-norm keys
``weight_g`` / ``weight_v`` of the positional conv to
``parametrizations.weight.original0`` / ``original1`` and loads it strictly. The keys of the
published files carry no prefix (``MERTModel`` is saved as the base model), so none is
stripped.

Sample rate: preprocessor_config.json ``sampling_rate``, else config ``sample_rate``, else
16000 (v0: 16 kHz / 50 Hz; v1: 24 kHz / 75 Hz; both hop 320). Per-utterance normalisation:
preprocessor ``do_normalize`` (True when the file is absent). Batching is padding-exact
(see :mod:`audioembed.models.hf_encoder`).
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from pathlib import Path

import torch

from audioembed.models.hf_encoder import HFEncoderUpstream, read_json, refused_pickle, wrap_hf_model
from audioembed.upstream import Upstream, UpstreamError

from .hf import hub_cache_dir, hub_error, hub_offline, hub_snapshot, local_folder, preprocessor_settings

EXAMPLE = "m-a-p/MERT-v1-95M"
MERT_MODEL_TYPE = "mert_model"
#: fields of MERT's config.json that HubertConfig does not have
MERT_ONLY_FIELDS = ("feature_extractor_cqt", "feature_extractor_cqt_bins", "deepnorm", "attention_relax", "sample_rate")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILES = ("config.json", "preprocessor_config.json")
#: parameters that only exist for training-time masking; tolerated when absent
TRAINING_ONLY = ("masked_spec_embed",)


def hubert_config_from_mert(config: dict, source: str = "MERT"):
    """The ``HubertConfig`` of a MERT config.json dict; refuses MERT-only architecture options."""
    from transformers import HubertConfig, PreTrainedConfig

    if config.get("feature_extractor_cqt"):
        raise UpstreamError(
            f"'{source}' uses MERT's CQT input branch (feature_extractor_cqt=true), which is not supported; "
            "the released MERT models have it off"
        )
    if config.get("deepnorm"):
        raise UpstreamError(
            f"'{source}' uses DeepNorm residual scaling (deepnorm=true), which HubertModel does not implement; "
            "the released MERT models have it off"
        )
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    hubert_fields = {f.name for f in dataclasses.fields(HubertConfig)} - base
    kwargs = {k: v for k, v in config.items() if k in hubert_fields}
    try:
        return HubertConfig(**kwargs)
    except Exception as exc:
        raise UpstreamError(f"'{source}': config.json does not describe a valid HuBERT architecture: {exc}") from None


def rename_legacy_weight_norm(state: dict) -> dict:
    """``*.weight_g`` / ``*.weight_v`` -> ``*.parametrizations.weight.original0`` / ``original1``."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        out[key] = value
    return out


def read_state_dict(folder: Path, source: str) -> dict:
    """The plain state dict of ``model.safetensors`` (preferred) or ``pytorch_model.bin``."""
    st = folder / "model.safetensors"
    pt = folder / "pytorch_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            state = load_file(str(st), device="cpu")
            path = st
        elif pt.is_file():
            state = torch.load(str(pt), map_location="cpu", weights_only=True)
            path = pt
        else:
            present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
            raise UpstreamError(f"'{source}' has neither model.safetensors nor pytorch_model.bin (found: {present})")
    except UpstreamError:
        raise
    except pickle.UnpicklingError:
        raise refused_pickle(pt) from None
    except Exception as exc:
        raise UpstreamError(f"cannot read the weights of '{source}': {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UpstreamError(f"{path} is not a plain state dict of tensors")
    return state


def load_mert_state(model, state: dict, source: str) -> None:
    """Load ``state`` into ``model`` strictly; a clear error lists missing / unexpected keys."""
    state = rename_legacy_weight_norm(state)
    expected = set(model.state_dict())
    missing = sorted(k for k in expected - set(state) if k not in TRAINING_ONLY)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:

        def show(keys):
            return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise UpstreamError(f"the weights of '{source}' do not match its config ({'; '.join(parts)})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UpstreamError(f"the weights of '{source}' do not match its config: {' '.join(str(exc).split())}") from None


def resolve_mert_folder(source: str) -> Path:
    """A local folder with config.json and weights for a MERT folder path or Hub id."""
    folder = local_folder(source)
    if folder is not None:
        return folder
    # One weight file only: model.safetensors when the repository has it, else pytorch_model.bin.
    # Each is tried on its own so that a cache holding only one of them still works offline.
    errors: list[UpstreamError] = []
    for weights in WEIGHT_FILES:
        try:
            folder = hub_snapshot(source, [*CONFIG_FILES, weights])
        except UpstreamError as exc:
            errors.append(exc)
            continue
        if (folder / "config.json").is_file() and (folder / weights).is_file():
            return folder
    if errors:
        raise errors[0]
    reason = (
        f"offline mode (HF_HUB_OFFLINE=1) and it is not completely in the local cache {hub_cache_dir()}"
        if hub_offline()
        else "the repository has no config.json with model.safetensors or pytorch_model.bin"
    )
    raise hub_error(source, reason)


def load_mert(source: str) -> HFEncoderUpstream:
    from transformers import HubertModel

    folder = resolve_mert_folder(source)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UpstreamError(f"'{source}' has no config.json")
    config = read_json(config_path, "model config")
    model_type = config.get("model_type")
    if model_type != MERT_MODEL_TYPE:
        hint = " (use the 'hubert' upstream)" if model_type == "hubert" else ""
        raise UpstreamError(f"'{source}' is a '{model_type}' model, not a MERT checkpoint ('{MERT_MODEL_TYPE}'){hint}")
    hconfig = hubert_config_from_mert(config, source)
    state = read_state_dict(folder, source)
    model = HubertModel(hconfig)
    load_mert_state(model, state, source)
    model = model.to(torch.float32).eval()

    rate, normalize = preprocessor_settings(folder / "preprocessor_config.json")
    config_rate = config.get("sample_rate")
    if rate is not None and config_rate is not None and int(config_rate) != rate:
        warnings.warn(
            f"{source}: preprocessor sampling_rate {rate} differs from config sample_rate {config_rate}; using {rate}",
            UserWarning,
            stacklevel=2,
        )
    if rate is None:
        rate = int(config_rate) if config_rate is not None else 16000
    if normalize is None:
        normalize = True
    return wrap_hf_model(model, sample_rate=rate, normalize=normalize, source=source, name="mert")


def load_mert_upstream(source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers as ``mert``."""
    if not source:
        raise UpstreamError(f"upstream 'mert' needs --model ID|PATH (e.g. --model {EXAMPLE})")
    return load_mert(source)
