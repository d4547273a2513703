"""Hugging Face ``transformers`` speech encoders: HuBERT, wav2vec 2.0, WavLM, data2vec-audio.

This plugin finds the weights (a local ``save_pretrained`` folder or a Hub id, honouring the
Hub cache and offline mode) and loads one upstream per family (registered in
:mod:`audioembed_plugins.catalog`). The wrapper that makes
every family padding-exact lives in the core (:mod:`audioembed.models.hf_encoder`), because
the trainers use it too; plugins import the core, never the reverse.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from audioembed.hub import hub_endpoint, hub_reachable
from audioembed.models.hf_encoder import HFEncoderUpstream, read_json, refused_pickle, wrap_hf_model
from audioembed.upstream import Upstream, UpstreamError

# registry name -> (transformers model_type, model class name); summaries and example hub ids
# are registered in audioembed_plugins.catalog
HF_FAMILIES: dict[str, tuple[str, str]] = {
    "hubert": ("hubert", "HubertModel"),
    "wav2vec2": ("wav2vec2", "Wav2Vec2Model"),
    "wavlm": ("wavlm", "WavLMModel"),
    "data2vec": ("data2vec-audio", "Data2VecAudioModel"),
}


# --------------------------------------------------------------------------------------
# sources: local folders and Hub ids
# --------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _env_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var):
            return _env_true(os.environ[var])
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The Hub cache folder the environment names now (HF_HUB_CACHE, HF_HOME/hub, default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expandvars(os.path.expanduser(os.environ[var]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def local_folder(source: str) -> Path | None:
    """``source`` as a local folder, ``None`` when it is a Hub id; error for a missing path."""
    path = Path(os.path.expanduser(source))
    if path.exists():
        if not path.is_dir():
            raise UpstreamError(f"'{source}' is a file; pass the folder that holds config.json and the weights")
        return path
    looks_like_path = (
        source.startswith((".", "/", "~", "\\"))
        or source.endswith(("/", "\\"))
        or source.count("/") > 1
        or "\\" in source
        or not _REPO_ID.match(source)
    )
    if looks_like_path:
        raise UpstreamError(f"model folder '{source}' does not exist")
    return None


def hub_error(repo_id: str, reason: str) -> UpstreamError:
    """The one-line error for a Hub model that cannot be had."""
    reason = " ".join(str(reason).split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return UpstreamError(
        f"cannot load '{repo_id}' from the Hugging Face Hub ({reason}); download it on a connected machine "
        f"with `hf download {repo_id}` (older clients: `huggingface-cli download {repo_id}`) and copy the "
        f"Hugging Face cache (HF_HOME), or pass a local folder with --model PATH"
    )


def _describe_hub_exception(repo_id: str, exc: BaseException, offline: bool, unreachable: bool = False) -> str:
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return "the repository is gated: accept its terms on the Hub and log in with `hf auth login`"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository on the Hub, or it is private"
    if unreachable:
        return f"no network: {hub_endpoint()} could not be reached, and it is not in the local cache {hub_cache_dir()}"
    if offline or isinstance(exc, LocalEntryNotFoundError):
        mode = "offline mode (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        return f"{mode} and it is not in the local cache {hub_cache_dir()}"
    return f"{type(exc).__name__}: {exc}"


def _offline_or_unreachable() -> tuple[bool, bool]:
    """(offline by setting, Hub unreachable): either way only the local cache is read, at once."""
    offline = hub_offline()
    return offline, (not offline and not hub_reachable())


def hub_download(repo_id: str, filename: str, *, required: bool = True) -> str | None:
    """Path of ``filename`` of Hub model ``repo_id`` (cached or downloaded).

    Honours HF_HUB_OFFLINE and the HF cache. A missing optional file gives ``None``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline, unreachable = _offline_or_unreachable()
    try:
        return hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir(), local_files_only=offline or unreachable)
    except EntryNotFoundError as exc:
        if not required and not (unreachable and isinstance(exc, LocalEntryNotFoundError)):
            return None
        if isinstance(exc, LocalEntryNotFoundError):
            raise hub_error(repo_id, _describe_hub_exception(repo_id, exc, offline, unreachable)) from exc
        raise hub_error(repo_id, f"the repository has no {filename}") from exc
    except Exception as exc:  # network, auth, validation: all mean "cannot be had"
        raise hub_error(repo_id, _describe_hub_exception(repo_id, exc, offline, unreachable)) from exc


def hub_snapshot(repo_id: str, allow_patterns: list[str]) -> Path:
    """Local snapshot folder of Hub model ``repo_id`` holding the files matching ``allow_patterns``."""
    from huggingface_hub import snapshot_download

    offline, unreachable = _offline_or_unreachable()
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=allow_patterns, cache_dir=hub_cache_dir(), local_files_only=offline or unreachable
        )
    except Exception as exc:
        raise hub_error(repo_id, _describe_hub_exception(repo_id, exc, offline, unreachable)) from exc
    return Path(folder)


def preprocessor_settings(path: str | os.PathLike | None) -> tuple[int | None, bool | None]:
    """``(sampling_rate, do_normalize)`` of a preprocessor_config.json (``None`` where absent)."""
    if path is None or not os.path.isfile(path):
        return None, None
    data = read_json(path, "preprocessor config")
    rate = data.get("sampling_rate")
    norm = data.get("do_normalize")
    if norm is None and data.get("feature_extractor_type", "Wav2Vec2FeatureExtractor") == "Wav2Vec2FeatureExtractor":
        norm = True  # Wav2Vec2FeatureExtractor's default
    return (int(rate) if rate is not None else None), (bool(norm) if norm is not None else None)


def _model_class(class_name: str):
    import transformers

    return getattr(transformers, class_name)


def load_hf_encoder(name: str, source: str) -> HFEncoderUpstream:
    """Load the ``name`` family (see :data:`HF_FAMILIES`) from a Hub id or a local folder."""
    model_type, class_name = HF_FAMILIES[name]
    folder = local_folder(source)
    if folder is not None:
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise UpstreamError(f"'{source}' has no config.json; expected a transformers save_pretrained folder")
        preproc_path: str | None = str(folder / "preprocessor_config.json")
    else:
        config_path = hub_download(source, "config.json")
        preproc_path = hub_download(source, "preprocessor_config.json", required=False)
    config = read_json(config_path, "model config")
    found = config.get("model_type")
    if found != model_type:
        hint = ""
        for other, (mt, _) in HF_FAMILIES.items():
            if mt == found:
                hint = f"; use the '{other}' upstream"
        if found == "mert_model":
            hint = "; use the 'mert' upstream"
        raise UpstreamError(f"'{source}' is a '{found}' model, not '{model_type}'{hint}")

    cls = _model_class(class_name)
    kwargs = {"dtype": torch.float32, "output_loading_info": True}
    if folder is not None:
        kwargs["local_files_only"] = True
        target = str(folder)
    else:
        offline, unreachable = _offline_or_unreachable()
        kwargs["local_files_only"] = offline or unreachable
        kwargs["cache_dir"] = hub_cache_dir()
        target = source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            model, info = cls.from_pretrained(target, **kwargs)
        except pickle.UnpicklingError:
            raise refused_pickle(f"{source}/pytorch_model.bin" if folder is not None else f"{source} (pytorch_model.bin)") from None
        except OSError as exc:
            if folder is None:
                raise hub_error(source, _describe_hub_exception(source, exc, hub_offline())) from exc
            raise UpstreamError(f"cannot load {class_name} from '{source}': {' '.join(str(exc).split())}") from exc
        except (ValueError, RuntimeError) as exc:  # malformed config or weights that do not fit it
            raise UpstreamError(f"cannot load {class_name} from '{source}': {' '.join(str(exc).split())}") from exc
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise UpstreamError(
            f"'{source}' does not hold complete {class_name} weights: {len(missing)} missing ({shown})"
        )

    rate, norm = preprocessor_settings(preproc_path)
    if rate is None or norm is None:
        fallback_norm = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        warnings.warn(
            f"{source}: no preprocessor_config.json with sampling_rate/do_normalize; assuming "
            f"sampling_rate={rate or 16000}, do_normalize={fallback_norm if norm is None else norm}",
            UserWarning,
            stacklevel=2,
        )
        rate = rate or 16000
        norm = fallback_norm if norm is None else norm
    return wrap_hf_model(model, sample_rate=rate, normalize=norm, source=source, name=name)


def load_family(name: str, source: str | None) -> Upstream:
    """The loader :mod:`audioembed_plugins.catalog` registers for each of :data:`HF_FAMILIES`."""
    if not source:
        raise UpstreamError(f"upstream '{name}' needs --model ID|PATH (a Hub id or a save_pretrained folder)")
    return load_hf_encoder(name, source)
