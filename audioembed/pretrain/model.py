"""The encoder being pretrained, its masking and its prediction heads, and how it is saved.

* The encoder is a plain ``transformers.HubertModel`` (post-LN, group-norm CNN, like HuBERT
  Base and MERT-95M). Masking uses HubertModel's own mechanism: the span mask is passed as
  ``mask_time_indices`` and the masked frames of the projected CNN features are replaced by
  the learned ``masked_spec_embed``. The mask is drawn here, from a numpy generator seeded
  by ``(seed, step)``, so a resumed run masks exactly as an uninterrupted one.
* The CNN's group norm is made padding-exact with the same patch the upstreams install
  (:func:`audioembed.models.hf_encoder.install_padding_masks`), so a zero-padded short crop in a
  training batch gives the features it gives alone at extraction time.
* Unit prediction heads follow HuBERT: a linear projection of the last hidden state to
  ``embed_dim``, cosine similarity with one learned embedding per unit, divided by a
  temperature (0.1) as logits; one head per codebook. The MERT-style music teacher adds a
  linear regression head for CQT-like band energies.
* Saved teachers are clean ``HubertModel`` weights: the speech teacher as a
  ``save_pretrained`` folder (``model_type: hubert``), the music teacher in MERT's published
  layout (``model_type: mert_model`` config, plain ``pytorch_model.bin``); both with a
  ``preprocessor_config.json`` (Wav2Vec2FeatureExtractor). Heads are not saved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AudioEmbedError
from ..models.hf_encoder import NORMALIZE_EPS, install_padding_masks
from .targets import FrameGrid

#: MERT's config.json fields that HubertConfig lacks (values of the released models)
MERT_FIELDS = {"feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336, "deepnorm": False, "attention_relax": -1.0}
#: SpecAugment settings written into saved teachers (those of the released HuBERT configs,
#: used only if someone fine-tunes the teacher with transformers)
RELEASE_MASKING = dict(apply_spec_augment=True, mask_time_prob=0.05, mask_time_length=10, mask_time_min_masks=2, mask_feature_prob=0.0)
INFO_FILE = "audioembed_pretrain.json"


class ModelError(AudioEmbedError, ValueError):
    """The architecture cannot be built as configured."""


def hubert_config(arch: Mapping[str, Any], mask_length: int = 10, mask_min: int = 2):
    """A ``HubertConfig`` for training: ``arch`` + ``masked_spec_embed`` present, no random masking.

    ``mask_time_prob`` must be > 0 for HubertModel to create ``masked_spec_embed``; the model
    itself never draws masks because every training forward passes ``mask_time_indices``.
    Feature-axis masking is off.
    """
    from transformers import HubertConfig

    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(arch).items()}
    kw.update(apply_spec_augment=True, mask_time_prob=0.05, mask_time_length=int(mask_length),
              mask_time_min_masks=int(mask_min), mask_feature_prob=0.0)
    try:
        config = HubertConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"invalid architecture: {exc}") from None
    if config.hidden_size % config.num_attention_heads:
        raise ModelError(f"hidden_size {config.hidden_size} is not divisible by num_attention_heads {config.num_attention_heads}")
    if config.hidden_size % config.num_conv_pos_embedding_groups:
        raise ModelError(
            f"hidden_size {config.hidden_size} is not divisible by num_conv_pos_embedding_groups {config.num_conv_pos_embedding_groups}"
        )
    return config


# --------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------


def span_mask(frame_lengths: Sequence[int], total: int, prob: float, length: int, min_masks: int,
              rng: np.random.Generator) -> np.ndarray:
    """``(B, total)`` bool span mask over each item's valid frames (HuBERT / wav2vec 2.0 rule).

    An item of ``n`` valid frames gets ``max(min_masks, int(prob * n / length + u))`` spans
    (``u`` uniform in [0, 1)), at distinct random starts in ``[0, n - length]``, each
    ``length`` frames long; spans may overlap. Padded frames are never masked. With
    ``prob = 0.8`` and ``length = 10`` about 57 % of the frames are masked
    (``1 - (1 - 0.08) ** 10``).
    """
    mask = np.zeros((len(frame_lengths), int(total)), dtype=bool)
    for row, n in enumerate(frame_lengths):
        n = min(int(n), int(total))
        if n <= 0:
            continue
        span = min(int(length), n)
        positions = n - span + 1
        count = max(int(min_masks), int(prob * n / length + rng.random()))
        count = min(count, positions)
        if count <= 0:
            continue
        starts = rng.choice(positions, size=count, replace=False)
        mask[row, (starts[:, None] + np.arange(span)[None, :]).ravel()] = True
    return mask


# --------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------


class UnitHead(nn.Module):
    """HuBERT's prediction head: cosine similarity of a projection with unit embeddings / T."""

    def __init__(self, hidden_size: int, units: int, embed_dim: int, temperature: float):
        super().__init__()
        self.proj = nn.Linear(hidden_size, embed_dim)
        self.embed = nn.Parameter(torch.randn(units, embed_dim))
        self.temperature = float(temperature)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.proj(hidden), dim=-1)
        e = F.normalize(self.embed, dim=-1)
        return x @ e.t() / self.temperature


class _Lengths:
    """What the padding-exact group norm reads: the valid samples of the current batch."""

    def __init__(self) -> None:
        self.sample_lengths: list[int] | None = None


class PretrainModel(nn.Module):
    """Encoder (``HubertModel``) + unit heads (+ CQT regression head): the trainable module."""

    def __init__(self, encoder, codebooks: Mapping[str, int], *, embed_dim: int, temperature: float,
                 cqt_bands: int = 0, normalize: bool = False):
        super().__init__()
        self.encoder = encoder
        self._lengths = _Lengths()
        install_padding_masks(encoder, self._lengths)
        hidden = int(encoder.config.hidden_size)
        self.unit_heads = nn.ModuleDict({name: UnitHead(hidden, k, embed_dim, temperature) for name, k in codebooks.items()})
        self.cqt_head = nn.Linear(hidden, cqt_bands) if cqt_bands else None
        self.normalize = bool(normalize)
        self.grid = FrameGrid.from_config(encoder.config)

    def frame_lengths(self, lengths: torch.Tensor) -> list[int]:
        return [self.grid.num_frames(int(n)) for n in lengths.tolist()]

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state ``(B, T, H)`` of the (masked) input; padded frames are not zeroed."""
        valid = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]
        x = wavs.float().masked_fill(~valid, 0.0)
        if self.normalize:  # as the upstream does at extraction (Wav2Vec2FeatureExtractor's rule)
            m = valid.to(torch.float64)
            xd = x.to(torch.float64)
            n = lengths.clamp(min=1).to(torch.float64)[:, None]
            mean = xd.sum(1, keepdim=True) / n
            var = (((xd - mean) * m) ** 2).sum(1, keepdim=True) / n
            x = ((xd - mean) / torch.sqrt(var + NORMALIZE_EPS) * m).to(torch.float32)
        self._lengths.sample_lengths = [int(n) for n in lengths.tolist()]
        try:
            out = self.encoder(x, attention_mask=valid.long(), mask_time_indices=mask, return_dict=True)
        finally:
            self._lengths.sample_lengths = None
        return out.last_hidden_state

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | None = None):
        """``(logits {codebook: (B, T, K)}, cqt (B, T, bands) or None)``."""
        hidden = self.encode(wavs, lengths, mask)
        logits = {name: head(hidden) for name, head in self.unit_heads.items()}
        cqt = self.cqt_head(hidden) if self.cqt_head is not None else None
        return logits, cqt


def build_model(arch: Mapping[str, Any], codebooks: Mapping[str, int], *, seed: int, embed_dim: int, temperature: float,
                cqt_bands: int = 0, normalize: bool = False, mask_length: int = 10, mask_min: int = 2) -> PretrainModel:
    """A randomly initialised :class:`PretrainModel` (the same seed gives the same weights)."""
    from transformers import HubertModel

    config = hubert_config(arch, mask_length, mask_min)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = HubertModel(config)
        model = PretrainModel(encoder, codebooks, embed_dim=embed_dim, temperature=temperature,
                              cqt_bands=cqt_bands, normalize=normalize)
    return model


# --------------------------------------------------------------------------------------
# saving teachers
# --------------------------------------------------------------------------------------


def _clean_encoder(encoder):
    """A fresh ``HubertModel`` with the trained weights and release SpecAugment settings."""
    import copy

    from transformers import HubertModel

    config = copy.deepcopy(encoder.config)
    for key, value in RELEASE_MASKING.items():
        setattr(config, key, value)
    config.architectures = ["HubertModel"]
    clean = HubertModel(config)
    clean.load_state_dict(encoder.state_dict(), strict=True)
    return clean.eval()


def _hubert_fields(config) -> dict:
    from transformers import HubertConfig, PreTrainedConfig

    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    names = [f.name for f in dataclasses.fields(HubertConfig) if f.name not in base]
    out = {}
    for name in names:
        value = getattr(config, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        out[name] = getattr(config, name, None)
    return out


def legacy_weight_norm(state: Mapping[str, torch.Tensor]) -> dict:
    """``parametrizations.weight.original0/1`` -> ``weight_g`` / ``weight_v`` (the released MERT names)."""
    out = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.detach().cpu().contiguous()
    return out


def preprocessor_dict(sample_rate: int, normalize: bool, attention_mask: bool) -> dict:
    return {
        "do_normalize": bool(normalize),
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": bool(attention_mask),
        "sampling_rate": int(sample_rate),
    }


def save_teacher(encoder, folder: str | Path, *, kind: str, sample_rate: int, normalize: bool,
                 info: Mapping[str, Any] | None = None) -> Path:
    """Write the encoder as a teacher folder the ``hubert`` (kind "hubert") or ``mert`` (kind
    "mert") upstream loads; ``info`` goes to ``audioembed_pretrain.json`` (provenance)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean = _clean_encoder(encoder)
    if kind == "hubert":
        clean.save_pretrained(str(folder))
        # HuBERT Base's preprocessor: no attention mask for group-norm CNNs
        preproc = preprocessor_dict(sample_rate, normalize, attention_mask=False)
    elif kind == "mert":
        config = {
            "_name_or_path": str(folder),
            "architectures": ["MERTModel"],
            "model_type": "mert_model",
            **_hubert_fields(clean.config),
            **MERT_FIELDS,
            "sample_rate": int(sample_rate),
            "torch_dtype": "float32",
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        torch.save(legacy_weight_norm(clean.state_dict()), folder / "pytorch_model.bin")
        preproc = preprocessor_dict(sample_rate, normalize, attention_mask=True)
    else:
        raise ModelError(f"kind must be 'hubert' or 'mert', got {kind!r}")
    (folder / "preprocessor_config.json").write_text(json.dumps(preproc, indent=2) + "\n", encoding="utf-8")
    if info is not None:
        (folder / INFO_FILE).write_text(json.dumps(dict(info), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
