"""Hugging Face ``transformers`` speech encoders: HuBERT, wav2vec 2.0, WavLM, data2vec-audio.

One wrapper, :class:`HFEncoderUpstream`, serves every transformers model that has the
wav2vec 2.0 layout (``feature_extractor.conv_layers`` -> ``feature_projection`` ->
``encoder`` with a convolutional positional embedding) and returns ``output_hidden_states``.
The ``hf``, ``mert`` and ``student`` plugins, the distillation trainer and the teacher
pretraining all wrap their ``HubertModel`` with :func:`wrap_hf_model` (or install
:func:`install_padding_masks` directly), so the padding-exact batching below is implemented
once, in the core, and plugins import it from here.

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
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..upstream import Upstream, UpstreamError, UpstreamOutput, padded_lengths_mask

#: eps of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``
NORMALIZE_EPS = 1e-7
#: seconds of context per side when long files are processed in windows
CONTEXT_SECONDS = 2.0


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
        # written into one preallocated output: padding and stacking per-item copies cost more than the norm
        out = torch.empty_like(x)
        for b, v in enumerate(valid):
            v = max(v, 0)
            if v > 0:
                out[b, :, :v] = F.group_norm(x[b : b + 1, :, :v], self.num_groups, self.weight, self.bias, self.eps)[0]
            out[b, :, v:] = 0.0
        return out

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


def read_json(path: str | os.PathLike, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UpstreamError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{what} {path} is not a JSON object")
    return data


def refused_pickle(path: str | os.PathLike) -> UpstreamError:
    """The one-line error for a weights file that ``weights_only`` loading refused.

    Such a file pickles Python objects besides tensors, i.e. code that would run on load;
    audioembed reads weights as data only, so the message offers safetensors, never the
    switch that would run the code.
    """
    return UpstreamError(
        f"{path}: holds pickled Python objects besides tensors (a file that could run code when loaded); "
        "refused: weights are read as data only. Use a model.safetensors copy of the weights"
    )


def load_pretrained(cls, folder: str | os.PathLike, **kwargs):
    """``cls.from_pretrained(folder, local_files_only=True, ...)`` with one-line errors.

    Returns what ``from_pretrained`` returns (``(model, info)`` with ``output_loading_info``).
    """
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except pickle.UnpicklingError:
        raise refused_pickle(Path(folder) / "pytorch_model.bin") from None
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise UpstreamError(f"cannot load the weights in '{folder}': {' '.join(str(exc).split())}") from None
