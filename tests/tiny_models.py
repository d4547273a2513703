"""Tiny random-weight checkpoints written in the on-disk form of the real ones.

No network and no pretrained weights are available to the tests, so every test builds its
checkpoint here, saves it to a folder and loads it through the public path
(``audioembed.load_upstream(name, model=folder)``). Plain functions, no pytest fixtures:
``from tiny_models import make_tiny_hf`` (tests/ is on ``sys.path``).

All models share one small CNN: 3 conv layers of 16 channels, kernels (10, 3, 2), strides
(5, 2, 2): hop 20 samples, receptive field 30 samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONV = {"conv_dim": (16, 16, 16), "conv_kernel": (10, 3, 2), "conv_stride": (5, 2, 2)}
HOP = 20

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    **CONV,
)

KINDS = ("hubert", "wav2vec2", "wavlm", "data2vec")


def _seeded(seed: int):
    torch.manual_seed(seed)


def _perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Random-init norms are (1, 0); give them non-trivial affine params so tests see them."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))


def tiny_hf_model(kind: str = "hubert", feat_extract_norm: str = "group", seed: int = 0, **overrides):
    """An in-memory tiny transformers encoder of family ``kind`` (random weights, eval mode)."""
    import transformers

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    kw = dict(TINY)
    if kind == "data2vec":
        # data2vec-audio: layer-norm CNN always; a *stack* of positional convs
        kw.update(num_conv_pos_embeddings=3, conv_pos_kernel_size=5)
    else:
        kw["feat_extract_norm"] = feat_extract_norm
        if feat_extract_norm == "layer":
            kw.update(do_stable_layer_norm=True, conv_bias=True)
    if kind == "wavlm":
        kw.update(num_buckets=32, max_bucket_distance=64)
    kw.update(overrides)
    config_cls, model_cls = {
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
        "data2vec": (transformers.Data2VecAudioConfig, transformers.Data2VecAudioModel),
    }[kind]
    _seeded(seed)
    model = model_cls(config_cls(**kw))
    _perturb_norms(model, seed)
    return model.eval()


def write_preprocessor(folder, *, sample_rate: int, do_normalize: bool, return_attention_mask: bool = True) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sample_rate,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=return_attention_mask,
    ).save_pretrained(str(folder))


def make_tiny_hf(
    folder,
    kind: str = "hubert",
    feat_extract_norm: str = "group",
    do_normalize: bool = False,
    sample_rate: int = 16000,
    seed: int = 0,
    preprocessor: bool = True,
    **overrides,
) -> Path:
    """Write a ``save_pretrained`` folder (+ preprocessor_config.json) of a tiny encoder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_hf_model(kind, feat_extract_norm, seed, **overrides)
    model.save_pretrained(str(folder))
    if preprocessor:
        write_preprocessor(folder, sample_rate=sample_rate, do_normalize=do_normalize)
    return folder


# --------------------------------------------------------------------------------------
# MERT, in its published layout
# --------------------------------------------------------------------------------------

#: HuBERT fields as MERT's config.json lists them (MERTConfig.__init__ arguments)
_MERT_HUBERT_FIELDS = dict(
    vocab_size=32,
    hidden_act="gelu",
    hidden_dropout=0.1,
    activation_dropout=0.1,
    attention_dropout=0.1,
    feat_proj_layer_norm=True,
    feat_proj_dropout=0.0,
    final_dropout=0.1,
    layerdrop=0.1,
    initializer_range=0.02,
    layer_norm_eps=1e-5,
    feat_extract_norm="group",
    feat_extract_activation="gelu",
    conv_bias=False,
    do_stable_layer_norm=False,
    apply_spec_augment=True,
    mask_time_prob=0.05,
    mask_time_length=10,
    mask_time_min_masks=2,
    mask_feature_prob=0.0,
    mask_feature_length=10,
    mask_feature_min_masks=0,
    ctc_loss_reduction="sum",
    ctc_zero_infinity=False,
    use_weighted_layer_sum=False,
    classifier_proj_size=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def mert_config_dict(version: str = "v1", *, tiny: bool = True, **overrides) -> dict:
    """A config.json dict in MERT's published form (``model_type: mert_model`` etc.)."""
    if version not in ("v0", "v1"):
        raise ValueError("version must be 'v0' or 'v1'")
    arch = (
        dict(TINY)
        if tiny
        else dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            num_conv_pos_embeddings=128,
            num_conv_pos_embedding_groups=16,
            conv_dim=(512,) * 7,
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
        )
    )
    cfg = {
        "_name_or_path": f"m-a-p/MERT-{version}-95M" if version == "v1" else "m-a-p/MERT-v0",
        "architectures": ["MERTModel"],
        "auto_map": {
            "AutoConfig": "configuration_MERT.MERTConfig",
            "AutoModel": "modeling_MERT.MERTModel",
        },
        "model_type": "mert_model",
        **_MERT_HUBERT_FIELDS,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
        "num_feat_extract_layers": len(arch["conv_dim"]),
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "deepnorm": False,
        "attention_relax": -1.0,
        "sample_rate": 24000 if version == "v1" else 16000,
        "torch_dtype": "float32",
        "transformers_version": "4.25.1",
    }
    cfg.update(overrides)
    return cfg


def hubert_config_from_mert(cfg: dict):
    """The HubertConfig a MERT config describes (test-side reference, independent of the plugin)."""
    from transformers import HubertConfig

    keys = set(_MERT_HUBERT_FIELDS) | set(TINY) | {"conv_dim", "conv_kernel", "conv_stride"}
    return HubertConfig(**{k: cfg[k] for k in keys if k in cfg})


def legacy_weight_norm_keys(state: dict) -> dict:
    """``parametrizations.weight.original0/1`` -> ``weight_g`` / ``weight_v`` (pre-2.1 torch names)."""
    out = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value
    return out


def make_tiny_mert(
    folder,
    version: str = "v1",
    fmt: str = "bin",
    legacy_weight_norm: bool = True,
    seed: int = 0,
    do_normalize: bool = True,
    preprocessor: bool = True,
    config_overrides: dict | None = None,
    return_state: bool = False,
):
    """Write a tiny MERT checkpoint exactly in the published layout; returns the folder
    (``(folder, state)`` with ``return_state=True``).

    config.json with MERT's fields, preprocessor_config.json (Wav2Vec2FeatureExtractor),
    and a plain state dict with MERTModel's key names (== HubertModel's, no prefix) in
    ``pytorch_model.bin`` (``fmt="bin"``) or ``model.safetensors``; ``weight_g``/``weight_v``
    for the positional conv when ``legacy_weight_norm``. ``state`` is the reference
    HubertModel state dict (modern key names) the files were made from.
    """
    from transformers import HubertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = mert_config_dict(version, **(config_overrides or {}))
    _seeded(seed)
    model = HubertModel(hubert_config_from_mert(cfg)).eval()
    _perturb_norms(model, seed)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    on_disk = legacy_weight_norm_keys(state) if legacy_weight_norm else dict(state)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "do_normalize": do_normalize,
                    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                    "feature_size": 1,
                    "padding_side": "right",
                    "padding_value": 0.0,
                    "return_attention_mask": True,
                    "sampling_rate": cfg["sample_rate"],
                },
                indent=2,
            )
        )
    if fmt == "bin":
        torch.save(on_disk, folder / "pytorch_model.bin")
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(on_disk, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        raise ValueError("fmt must be 'bin' or 'safetensors'")
    return (folder, state) if return_state else folder


def reference_hubert(state: dict, cfg: dict):
    """A HubertModel built directly from a MERT config dict and a (modern-key) state dict."""
    from transformers import HubertModel

    model = HubertModel(hubert_config_from_mert(cfg)).eval()
    model.load_state_dict(state, strict=True)
    return model


# --------------------------------------------------------------------------------------
# student
# --------------------------------------------------------------------------------------


def tiny_student_model(seed: int = 0):
    """DistilHuBERT-shaped tiny HubertModel: group-norm CNN, no projection LayerNorm."""
    from transformers import HubertConfig, HubertModel

    _seeded(seed)
    model = HubertModel(HubertConfig(**TINY, feat_extract_norm="group", feat_proj_layer_norm=False))
    _perturb_norms(model, seed)
    return model.eval()


def make_tiny_student(folder, seed: int = 0, **save_kwargs) -> Path:
    """Write a tiny student checkpoint with ``audioembed.models.student_folder.save_student``."""
    from audioembed.models.student_folder import save_student

    metadata = {
        "teachers": [{"name": "hubert", "source": "tiny"}],
        "target_layers": {"hubert": [1, 2]},
        "init_fingerprint": "tiny",
        "training": {"steps": 0},
    }
    metadata.update(save_kwargs.pop("metadata", None) or {})
    save_student(tiny_student_model(seed), folder, metadata=metadata, **save_kwargs)
    return Path(folder)


# --------------------------------------------------------------------------------------
# batching helpers
# --------------------------------------------------------------------------------------


def random_wavs(lengths, seed: int = 0, scale: float = 0.1, offset: float = 0.0) -> list:
    """One noise waveform per length (different content per item)."""
    g = torch.Generator().manual_seed(seed)
    return [offset + scale * torch.randn(int(n), generator=g) for n in lengths]


def pad_batch(wavs) -> tuple:
    """Zero-padded ``(B, T)`` batch and its ``(B,)`` lengths."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    return batch, lengths


@torch.no_grad()
def batch_vs_single_diff(upstream, wavs) -> float:
    """Max |batched - single| over all items, layers and valid frames of an upstream.

    Also checks the per-item frame counts agree with ``num_frames``.
    """
    batch, lengths = pad_batch(wavs)
    out_b = upstream(batch, lengths)
    assert len(out_b.hidden_states) == upstream.num_layers
    worst = 0.0
    for i, w in enumerate(wavs):
        out_s = upstream(w[None], torch.tensor([w.numel()]))
        n = upstream.num_frames(w.numel())
        assert int(out_b.lengths[i]) == int(out_s.lengths[0]) == n
        assert out_s.hidden_states[0].shape[1] == n
        for hb, hs in zip(out_b.hidden_states, out_s.hidden_states):
            worst = max(worst, (hb[i, :n] - hs[0, :n]).abs().max().item())
    return worst


@torch.no_grad()
def plain_batch_vs_single_diff(model, wavs) -> float:
    """The same check on a plain transformers model, called the usual way (attention_mask given)."""
    batch, lengths = pad_batch(wavs)
    mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).long()
    out_b = model(batch, attention_mask=mask, output_hidden_states=True)
    worst = 0.0
    for i, w in enumerate(wavs):
        out_s = model(w[None], output_hidden_states=True)
        n = out_s.hidden_states[0].shape[1]
        for hb, hs in zip(out_b.hidden_states, out_s.hidden_states):
            worst = max(worst, (hb[i, :n] - hs[0, :n]).abs().max().item())
    return worst


class single_thread:
    """Context manager: run torch on one thread (tiny models gain nothing from more, and on
    a busy 2-core machine intra-op threads make them many times slower)."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        return False


def hub_cache_snapshot(hf_home, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face cache under ``hf_home``, as
    ``hf download`` lays it out (``hub/models--org--name/{refs/main, snapshots/<commit>/}``).
    Write checkpoint files into the returned folder to simulate a model downloaded earlier."""
    repo_dir = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot
