"""Hugging Face ``transformers`` speech encoders: HuBERT, wav2vec 2.0, WavLM, data2vec-audio.

One wrapper, :class:`HFEncoderUpstream`, serves every transformers model that has the
wav2vec 2.0 layout (``feature_extractor.conv_layers`` -> ``feature_projection`` ->
``encoder`` with a convolutional positional embedding) and returns ``output_hidden_states``.
The MERT and student plugins build their ``HubertModel`` themselves and wrap it with
:func:`wrap_hf_model`, so the padding-exact batching below is implemented once.

Padding-exact batching
----------------------
An item must give the same hidden states alone and inside a zero-padded batch. For these
models only three places can let the padding of a batch reach the valid frames:

1. ``nn.GroupNorm`` in the first conv layer (``feat_extract_norm == "group"``: HuBERT Base,
   wav2vec 2.0 Base, WavLM Base(+), MERT, DistilHuBERT). It normalises every channel over
   *all* time steps, padding included, so the statistics of a short item change with the
   length of the longest one. We replace it by :class:`MaskedGroupNorm`, which computes the
   statistics of each item over its valid output frames only (same affine parameters, same
   eps; ``F.group_norm`` on the valid slice, so a single unpadded item goes through exactly
   the computation transformers does).
2. The convolutional positional embedding: zero padding of its conv must look the same
   alone and in a batch. HuBERT / wav2vec 2.0 / WavLM encoders zero the padded frames
   before it (``hidden_states[~attention_mask] = 0``), which suffices for a single conv.
   data2vec-audio stacks several convs (each followed by LayerNorm + GELU, which turns the
   zeros into non-zeros) and HuBERT's optional ``conv_pos_batch_norm`` applies a BatchNorm
   before the conv (BN(0) != 0); both leak. A forward pre-hook on every ``Conv1d`` of
   ``encoder.pos_conv_embed`` (:class:`_ZeroPaddedFrames`) re-zeroes the padded frames of
   its input, which makes every variant exact.
3. Self-attention: the encoder turns the ``attention_mask`` we pass into a key-padding
   mask (``create_bidirectional_mask`` / WavLM's ``key_padding_mask``), so valid queries
   never attend to padded keys; WavLM's relative position bias depends only on distances.

Everything else is local in time and cannot leak: later conv layers have no norm (group
mode) or a per-frame LayerNorm (layer mode), and a valid output frame of conv layer ``i``
(``j <= (n - k) // s``) only reads input samples ``j*s .. j*s + k - 1 <= n - 1``, i.e. valid
ones; feature projection, LayerNorms and feed-forward blocks are per frame. This was
checked against the installed transformers source (HubertEncoder / Wav2Vec2Encoder /
WavLMEncoder / Data2VecAudioEncoder and their StableLayerNorm variants); the tests compare
batched and single outputs for every family, and show the plain model fails that check.

The masking modules read the valid lengths of the current call from a small shared
:class:`_PaddingState` that :meth:`HFEncoderUpstream.forward` fills and clears. Called
directly (``upstream.model(...)``), the model behaves exactly like the original.
Parameter names are unchanged, so ``state_dict`` / ``save_pretrained`` still match
transformers.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audioembed.hookspecs import hookimpl
from audioembed.hub import hub_endpoint, hub_reachable
from audioembed.upstream import Upstream, UpstreamError, UpstreamOutput, UpstreamSpec, padded_lengths_mask

#: eps of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``
NORMALIZE_EPS = 1e-7
#: seconds of context per side when long files are processed in windows
CONTEXT_SECONDS = 2.0

# registry name -> (transformers model_type, model class name, example hub id)
HF_FAMILIES: dict[str, tuple[str, str, str]] = {
    "hubert": ("hubert", "HubertModel", "facebook/hubert-base-ls960"),
    "wav2vec2": ("wav2vec2", "Wav2Vec2Model", "facebook/wav2vec2-base"),
    "wavlm": ("wavlm", "WavLMModel", "microsoft/wavlm-base-plus"),
    "data2vec": ("data2vec-audio", "Data2VecAudioModel", "facebook/data2vec-audio-base"),
}


# --------------------------------------------------------------------------------------
# conv arithmetic
# --------------------------------------------------------------------------------------


def conv_output_length(num_samples: int, geometry) -> int:
    """Valid output frames of a stack of unpadded convs ``geometry = [(kernel, stride), ...]``.

    Same formula as transformers' ``_get_feat_extract_output_lengths``; 0 or less when the
    input is shorter than the receptive field.
    """
    n = int(num_samples)
    for kernel, stride in geometry:
        n = (n - int(kernel)) // int(stride) + 1
        if n <= 0:
            return n
    return n


def conv_geometry(config) -> list[tuple[int, int]]:
    return [(int(k), int(s)) for k, s in zip(config.conv_kernel, config.conv_stride)]


def receptive_field(geometry) -> int:
    """Fewest input samples that give one output frame."""
    r = 1
    for kernel, stride in reversed(list(geometry)):
        r = (r - 1) * stride + kernel
    return r


# --------------------------------------------------------------------------------------
# padding-exact masking
# --------------------------------------------------------------------------------------


class _PaddingState:
    """Valid input lengths (samples) of the batch being processed; ``None`` outside a call."""

    def __init__(self) -> None:
        self.sample_lengths: list[int] | None = None


class MaskedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics only cover each item's valid frames.

    ``geometry`` is the ``(kernel, stride)`` of the conv layers up to and including the one
    this norm follows, so ``conv_output_length(n, geometry)`` is the number of valid frames
    of an item of ``n`` samples. Each item is normalised with ``F.group_norm`` over its
    valid slice (the same call ``nn.GroupNorm`` makes, with the same affine parameters and
    eps); padded frames are set to zero. Without a current batch (``state`` empty) it is
    the plain ``nn.GroupNorm``.
    """

    def __init__(self, norm: nn.GroupNorm, geometry, state: _PaddingState) -> None:
        super().__init__(
            norm.num_groups,
            norm.num_channels,
            eps=norm.eps,
            affine=norm.affine,
            device=norm.weight.device if norm.affine else None,
            dtype=norm.weight.dtype if norm.affine else None,
        )
        self.load_state_dict(norm.state_dict())
        self.geometry = tuple(geometry)
        self._padding_state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = self._padding_state.sample_lengths
        if lengths is None or len(lengths) != x.shape[0]:
            return super().forward(x)
        total = x.shape[-1]
        valid = [min(max(conv_output_length(n, self.geometry), 0), total) for n in lengths]
        if all(v == total for v in valid):
            return super().forward(x)
        items = []
        for b, v in enumerate(valid):
            if v <= 0:
                items.append(x.new_zeros(x.shape[1:]))
                continue
            y = F.group_norm(x[b : b + 1, :, :v], self.num_groups, self.weight, self.bias, self.eps)
            items.append(F.pad(y[0], (0, total - v)))
        return torch.stack(items)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", masked=True"


class _ZeroPaddedFrames:
    """Forward pre-hook: zero the padded frames of a ``(B, C, T)`` conv input.

    ``geometry`` is the whole CNN, so ``conv_output_length`` gives the encoder frames.
    A class (not a closure) so that ``copy.deepcopy`` of an upstream points the copy's
    hooks at the copy's state.
    """

    def __init__(self, geometry, state: _PaddingState) -> None:
        self.geometry = tuple(geometry)
        self.state = state

    def __call__(self, module: nn.Module, args: tuple):
        lengths = self.state.sample_lengths
        if lengths is None or not args:
            return None
        x = args[0]
        if x.dim() != 3 or x.shape[0] != len(lengths):
            return None
        total = x.shape[-1]
        frames = [conv_output_length(n, self.geometry) for n in lengths]
        if all(f >= total for f in frames):
            return None
        keep = torch.arange(total, device=x.device)[None, :] < torch.tensor(frames, device=x.device)[:, None]
        return (x.masked_fill(~keep[:, None, :], 0.0),) + tuple(args[1:])


def install_padding_masks(model: nn.Module, state: _PaddingState) -> dict:
    """Make ``model`` padding-exact (see the module docstring); returns what was patched.

    Raises :class:`UpstreamError` for a module layout this does not know how to make exact.
    """
    try:
        conv_layers = model.feature_extractor.conv_layers
        config = model.config
        geometry = conv_geometry(config)
    except AttributeError as exc:
        raise UpstreamError(
            f"{type(model).__name__} does not have the wav2vec 2.0 layout "
            f"(feature_extractor.conv_layers, config.conv_kernel/conv_stride): {exc}"
        ) from None
    if len(conv_layers) != len(geometry):
        raise UpstreamError(
            f"{type(model).__name__}: {len(conv_layers)} conv layers but {len(geometry)} kernel/stride entries in its config"
        )
    patched: dict[str, list[str]] = {"group_norm": [], "pos_conv": []}
    for i, layer in enumerate(conv_layers):
        for attr, child in list(layer.named_children()):
            if isinstance(child, nn.GroupNorm) and not isinstance(child, MaskedGroupNorm):
                setattr(layer, attr, MaskedGroupNorm(child, geometry[: i + 1], state))
                patched["group_norm"].append(f"feature_extractor.conv_layers.{i}.{attr}")
    pos_conv = getattr(getattr(model, "encoder", None), "pos_conv_embed", None)
    if pos_conv is not None:
        for name, module in pos_conv.named_modules():
            if isinstance(module, nn.Conv1d):
                module.register_forward_pre_hook(_ZeroPaddedFrames(geometry, state))
                patched["pos_conv"].append(f"encoder.pos_conv_embed.{name}".rstrip("."))
    # Anything else that normalises over time would break the batched == single guarantee.
    for name, module in model.named_modules():
        if isinstance(module, (nn.GroupNorm, nn.InstanceNorm1d)) and not isinstance(module, MaskedGroupNorm):
            raise UpstreamError(
                f"{type(model).__name__} has a {type(module).__name__} at '{name}' that normalises over time; "
                "padding-exact batching is not implemented for it"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith("encoder.pos_conv_embed"):
            raise UpstreamError(
                f"{type(model).__name__} has a {type(module).__name__} at '{name}'; "
                "padding-exact batching is not implemented for it"
            )
    return patched


# --------------------------------------------------------------------------------------
# the upstream
# --------------------------------------------------------------------------------------


class HFEncoderUpstream(Upstream):
    """A transformers wav2vec 2.0-style encoder as an :class:`Upstream`.

    ``hidden_states`` are transformers' ``output_hidden_states`` (``num_hidden_layers + 1``
    tensors, index 0 = input to the first transformer layer); frames past ``lengths`` are
    zero. Padded batches give the same states as single items (see the module docstring).
    """

    def __init__(self, model: nn.Module, *, sample_rate: int, normalize: bool, source: str | None, name: str = "") -> None:
        super().__init__()
        config = model.config
        for attr in ("conv_kernel", "conv_stride", "num_hidden_layers", "hidden_size"):
            if not hasattr(config, attr):
                raise UpstreamError(f"{type(model).__name__} config has no '{attr}'; not a wav2vec 2.0-style encoder")
        config.layerdrop = 0.0
        config.output_hidden_states = True
        self._padding_state = _PaddingState()
        self.masking = install_padding_masks(model, self._padding_state)
        self.model = model
        self.name = name
        self.source = source
        self.sample_rate = int(sample_rate)
        self.normalize = bool(normalize)
        self.geometry = tuple(conv_geometry(config))
        self.hop_length = math.prod(s for _, s in self.geometry)
        self.num_layers = int(config.num_hidden_layers) + 1
        self.hidden_size = int(config.hidden_size)
        self.context_samples = int(round(CONTEXT_SECONDS * self.sample_rate / self.hop_length)) * self.hop_length
        self.min_samples = receptive_field(self.geometry)
        self.eval()
        # Pre-LN encoders: transformers 4 returned the final LayerNorm's output as the last
        # hidden state, transformers 5 returns the last layer's un-normalised output. We always
        # return the normalised one (last_hidden_state), as S3PRL and transformers 4 do, so the
        # same weights give the same features whatever transformers is installed.
        self.pre_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))

    # -- contract ------------------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        return conv_output_length(num_samples, self.geometry)

    def describe(self) -> dict:
        info = {
            "model_class": type(self.model).__name__,
            "sample_rate": self.sample_rate,
            "normalize": self.normalize,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
        }
        if self.pre_layer_norm:
            info["last_state"] = "final_layer_norm"
        return info

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> UpstreamOutput:
        if wavs.dim() == 1:
            wavs = wavs[None]
        if wavs.dim() != 2:
            raise UpstreamError(f"{self.name or 'upstream'}: expected wavs of shape (batch, samples), got {tuple(wavs.shape)}")
        batch, total = wavs.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long)
        lengths = torch.as_tensor(lengths).to(device=wavs.device, dtype=torch.long)
        sample_lengths = [int(n) for n in lengths.tolist()]
        if any(n > total or n < 0 for n in sample_lengths):
            raise UpstreamError(f"{self.name or 'upstream'}: lengths {sample_lengths} do not fit wavs of {total} samples")
        frames = [self.num_frames(n) for n in sample_lengths]
        if min(frames) < 1:
            short = min(sample_lengths)
            raise UpstreamError(
                f"{self.name or 'upstream'}: an input of {short} samples is too short "
                f"(needs at least {self.min_samples} samples at {self.sample_rate} Hz)"
            )

        mask = padded_lengths_mask(lengths, total)
        x = wavs.float().masked_fill(~mask, 0.0)
        if self.normalize:
            x = self._normalize(x, mask, lengths)
        x = x.to(self._input_dtype())

        self._padding_state.sample_lengths = sample_lengths
        try:
            out = self.model(
                x,
                attention_mask=mask.to(torch.long),
                output_hidden_states=True,
                return_dict=True,
            )
        finally:
            self._padding_state.sample_lengths = None

        states = list(out.hidden_states)
        if self.pre_layer_norm:
            states[-1] = out.last_hidden_state
        if len(states) != self.num_layers:
            raise UpstreamError(
                f"{type(self.model).__name__} returned {len(states)} hidden states, expected {self.num_layers}"
            )
        out_lengths = torch.tensor(frames, dtype=torch.long, device=wavs.device)
        frame_mask = padded_lengths_mask(out_lengths, states[0].shape[1])[:, :, None]
        if not bool(frame_mask.all()):
            states = [h.masked_fill(~frame_mask, 0.0) for h in states]
        return UpstreamOutput(hidden_states=states, lengths=out_lengths)

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _normalize(x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance over each item's valid samples (Wav2Vec2FeatureExtractor)."""
        m = mask.to(torch.float64)
        xd = x.to(torch.float64) * m
        n = lengths.clamp(min=1).to(torch.float64)[:, None]
        mean = xd.sum(dim=1, keepdim=True) / n
        var = (((xd - mean) * m) ** 2).sum(dim=1, keepdim=True) / n
        y = (xd - mean) / torch.sqrt(var + NORMALIZE_EPS)
        return (y * m).to(x.dtype)

    def _input_dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32


def wrap_hf_model(model: nn.Module, *, sample_rate: int, normalize: bool, source: str | None, name: str = "") -> HFEncoderUpstream:
    """Wrap a loaded transformers encoder (HubertModel, Wav2Vec2Model, ...) as an upstream.

    Sets eval mode and ``layerdrop = 0`` and installs the padding-exact masking in place.
    """
    return HFEncoderUpstream(model, sample_rate=sample_rate, normalize=normalize, source=source, name=name)


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


def read_json(path: str | os.PathLike, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UpstreamError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{what} {path} is not a JSON object")
    return data


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
    model_type, class_name, _ = HF_FAMILIES[name]
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
        for other, (mt, _, _) in HF_FAMILIES.items():
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


def _loader(name: str):
    def load(source: str | None) -> Upstream:
        if not source:
            raise UpstreamError(f"upstream '{name}' needs --model ID|PATH (e.g. --model {HF_FAMILIES[name][2]})")
        return load_hf_encoder(name, source)

    return load


_SUMMARIES = {
    "hubert": "HuBERT (transformers HubertModel), any Hub id or save_pretrained folder",
    "wav2vec2": "wav2vec 2.0 (transformers Wav2Vec2Model), any Hub id or save_pretrained folder",
    "wavlm": "WavLM (transformers WavLMModel), any Hub id or save_pretrained folder",
    "data2vec": "data2vec-audio (transformers Data2VecAudioModel), any Hub id or save_pretrained folder",
}


@hookimpl
def audioembed_upstreams():
    return [
        UpstreamSpec(
            name=name,
            load=_loader(name),
            summary=_SUMMARIES[name],
            requires_source=True,
            example_source=example,
        )
        for name, (_, _, example) in HF_FAMILIES.items()
    ]
