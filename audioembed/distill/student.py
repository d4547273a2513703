"""The DistilHuBERT student: a plain ``transformers.HubertModel``, built and initialised.

Why a plain ``HubertModel``: a saved student is then an ordinary ``save_pretrained`` folder
that any HuBERT loader (transformers, S3PRL ports, our ``hubert`` upstream) reads.
Initialisation copies, from a teacher, every tensor whose name and shape fit (CNN,
projection, positional conv, first N transformer layers), the recipe of DistilHuBERT and of
the task-arithmetic paper (both students start from the same theta_0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

import torch

from ..errors import AudioEmbedError

#: DistilHuBERT's architecture (METHODS.md section 2); every field can be overridden
DISTILHUBERT = dict(
    hidden_size=768,
    num_hidden_layers=2,
    num_attention_heads=12,
    intermediate_size=3072,
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    feat_proj_layer_norm=False,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.1,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
)

#: config fields that define the architecture (compared before merging or averaging)
ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "do_stable_layer_norm",
    "feat_proj_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "hidden_act",
    "layer_norm_eps",
)


class StudentError(AudioEmbedError, ValueError):
    """A student cannot be built, initialised or merged as asked; the message says why."""


def architecture(config) -> dict:
    """The architecture-defining fields of a ``HubertConfig`` (tuples normalised to lists)."""
    out = {}
    for name in ARCH_FIELDS:
        value = getattr(config, name, None)
        out[name] = list(value) if isinstance(value, (tuple, list)) else value
    return out


def student_config(overrides: Mapping | None = None, base_config=None):
    """A ``HubertConfig`` for a student.

    ``base_config`` (a teacher's config) supplies width and CNN when initialising from a
    teacher, so that its tensors fit; DistilHuBERT's values fill everything else;
    ``overrides`` (e.g. ``{"num_hidden_layers": 4}``) win over both. Masking (SpecAugment)
    is always off: the student sees the same input as the teacher.
    """
    from transformers import HubertConfig

    kw = dict(DISTILHUBERT)
    if base_config is not None:
        for name in ARCH_FIELDS:
            if name != "num_hidden_layers" and hasattr(base_config, name):
                kw[name] = getattr(base_config, name)
    kw.update(dict(overrides or {}))
    kw.update(apply_spec_augment=False, mask_time_prob=0.0, mask_feature_prob=0.0)
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    try:
        return HubertConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise StudentError(f"invalid student architecture: {exc}") from None


def build_student(config, seed: int):
    """A randomly initialised student (seeded: the same seed gives the same weights)."""
    from transformers import HubertModel

    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = HubertModel(config)
    return model


def average_state_dicts(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> dict:
    """Element-wise mean of the tensors the two models share with the same shape."""
    out = {}
    for key, a in first.items():
        b = second.get(key)
        if b is not None and b.shape == a.shape and a.is_floating_point():
            out[key] = (a.float() + b.float()) / 2
    if not out:
        raise StudentError("the two teachers share no tensor of the same name and shape; cannot average them")
    return out


def copy_fitting(student, source: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``source`` whose name and shape match one of ``student``.

    Returns ``(copied, not_copied)`` student keys. Transformer layers past the source's depth
    and tensors of another shape stay as they were (random).
    """
    own = student.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for key, tensor in own.items():
            src = source.get(key)
            if src is not None and tuple(src.shape) == tuple(tensor.shape):
                tensor.copy_(src.to(tensor.dtype))
                copied.append(key)
            else:
                skipped.append(key)
    return copied, skipped


def weights_fingerprint(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Content hash of a model's weights (names, shapes, dtypes, values).

    Recorded in every student as ``init_fingerprint`` so that merging can refuse task
    vectors that did not start from the same theta_0. ``masked_spec_embed`` (unused at
    inference, absent from some checkpoints) is left out.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for key in sorted(state):
        if key.endswith("masked_spec_embed"):
            continue
        t = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


@dataclass
class InitReport:
    """What initialisation did, recorded in the student's metadata."""

    method: str
    sources: list[str] = field(default_factory=list)
    copied: int = 0
    total: int = 0

    def as_dict(self) -> dict:
        return {"method": self.method, "sources": self.sources, "copied_tensors": self.copied, "total_tensors": self.total}
