"""MERT: native loading of the published on-disk layout into HubertModel, no remote code."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_models import (
    HOP,
    batch_vs_single_diff,
    hub_cache_snapshot,
    make_tiny_hf,
    make_tiny_mert,
    mert_config_dict,
    pad_batch,
    plain_batch_vs_single_diff,
    random_wavs,
    reference_hubert,
    single_thread,
)

from audioembed import UpstreamError, load_upstream
from audioembed_plugins import mert as mert_plugin

LENGTHS = (7000, 2100, 450, 33)
REAL_CONV = dict(
    conv_dim=[4] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    num_feat_extract_layers=7,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


def _single_states(model_or_up, wav, upstream=False):
    with torch.no_grad():
        if upstream:
            return model_or_up(wav[None], torch.tensor([wav.numel()])).hidden_states
        return model_or_up(wav[None], output_hidden_states=True).hidden_states


@pytest.mark.parametrize(
    "version,fmt,legacy",
    [("v1", "bin", True), ("v1", "safetensors", False), ("v0", "bin", False), ("v0", "safetensors", True)],
)
def test_loads_published_layout_and_matches_hubert(tmp_path, version, fmt, legacy):
    folder, state = make_tiny_mert(
        tmp_path / "m", version=version, fmt=fmt, legacy_weight_norm=legacy, do_normalize=False, return_state=True
    )
    weights = folder / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
    assert weights.is_file() and len(list(folder.iterdir())) == 3
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "mert_model" and cfg["architectures"] == ["MERTModel"] and "auto_map" in cfg
    if legacy:
        assert any(k.endswith("weight_g") for k in _read(weights))

    up = load_upstream("mert", model=str(folder))
    assert type(up.model).__name__ == "HubertModel"
    assert up.sample_rate == (24000 if version == "v1" else 16000)
    assert up.num_layers == 3 and up.hidden_size == 32 and up.hop_length == HOP
    # every parameter loaded, none left at its random init
    for key, value in up.model.state_dict().items():
        assert torch.equal(value, state[key]), key

    ref = reference_hubert(state, cfg)
    wav = random_wavs([5000], seed=3)[0]
    ours, theirs = _single_states(up, wav, upstream=True), _single_states(ref, wav)
    assert len(ours) == len(theirs) == cfg["num_hidden_layers"] + 1
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max().item() <= 1e-5


def _read(path):
    if str(path).endswith(".bin"):
        return torch.load(path, weights_only=True)
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_batched_equals_single_and_plain_hubert_leaks(tmp_path, version):
    folder, state = make_tiny_mert(tmp_path / version, version=version, return_state=True)
    up = load_upstream("mert", model=str(folder))
    assert up.normalize is True  # MERT-95M style preprocessor
    wavs = random_wavs(LENGTHS, seed=9, scale=0.2, offset=0.05)
    assert batch_vs_single_diff(up, wavs) <= 1e-4
    assert plain_batch_vs_single_diff(reference_hubert(state, mert_config_dict(version)), wavs) > 1e-3


def test_normalisation_matches_feature_extractor(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    folder, state = make_tiny_mert(tmp_path / "n", version="v1", do_normalize=True, return_state=True)
    up = load_upstream("mert", model=str(folder))
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
    assert fe.do_normalize and fe.sampling_rate == 24000
    wav = random_wavs([6000], seed=4, scale=0.4, offset=-0.3)[0]
    inputs = fe(wav.numpy(), sampling_rate=24000, return_tensors="pt")["input_values"]
    ref = reference_hubert(state, mert_config_dict("v1"))
    with torch.no_grad():
        theirs = ref(inputs, output_hidden_states=True).hidden_states
    for a, b in zip(_single_states(up, wav, upstream=True), theirs):
        assert (a - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("version,rate,fps,frames_1s", [("v1", 24000, 75.0, 74), ("v0", 16000, 50.0, 49)])
def test_real_conv_geometry_frame_rate(tmp_path, version, rate, fps, frames_1s):
    """MERT's real CNN (kernels 10,3,3,3,3,2,2 / strides 5,2,...): hop 320, 75 Hz (v1) / 50 Hz (v0)."""
    folder = make_tiny_mert(tmp_path / version, version=version, config_overrides=REAL_CONV)
    up = load_upstream("mert", model=str(folder))
    assert up.sample_rate == rate and up.hop_length == 320 and up.frame_rate == fps
    assert up.num_frames(rate) == frames_1s
    assert up.num_frames(400) == 1 and up.num_frames(399) <= 0
    assert up.context_samples == 2 * rate and up.context_samples % 320 == 0
    batch, lengths = pad_batch(random_wavs([rate, rate // 2], seed=1))
    with torch.no_grad():
        out = up(batch, lengths)
    assert out.lengths.tolist() == [frames_1s, up.num_frames(rate // 2)]
    assert out.hidden_states[0].shape[1] == frames_1s
    assert batch_vs_single_diff(up, random_wavs([rate, 3000, 700], seed=2)) <= 1e-4


def test_sample_rate_without_preprocessor(tmp_path):
    v1 = make_tiny_mert(tmp_path / "v1", version="v1", preprocessor=False)
    up = load_upstream("mert", model=str(v1))
    assert up.sample_rate == 24000 and up.normalize is True
    v0 = make_tiny_mert(tmp_path / "v0", version="v0", preprocessor=False)
    cfg = json.loads((v0 / "config.json").read_text())
    del cfg["sample_rate"]
    (v0 / "config.json").write_text(json.dumps(cfg))
    assert load_upstream("mert", model=str(v0)).sample_rate == 16000


def test_preprocessor_wins_over_config(tmp_path):
    folder = make_tiny_mert(tmp_path / "m", version="v1", do_normalize=False)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["sampling_rate"] = 22050
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.warns(UserWarning, match="differs"):
        up = load_upstream("mert", model=str(folder))
    assert up.sample_rate == 22050 and up.normalize is False


def test_strict_loading_lists_keys(tmp_path):
    folder, state = make_tiny_mert(tmp_path / "m", fmt="bin", legacy_weight_norm=False, return_state=True)
    bad = dict(state)
    bad["encoder.extra_head.weight"] = torch.zeros(2)
    del bad["encoder.layer_norm.bias"]
    torch.save(bad, folder / "pytorch_model.bin")
    with pytest.raises(UpstreamError) as info:
        load_upstream("mert", model=str(folder))
    msg = str(info.value)
    assert "missing keys: encoder.layer_norm.bias" in msg and "unexpected keys: encoder.extra_head.weight" in msg


def test_shape_mismatch_is_clear(tmp_path):
    folder = make_tiny_mert(tmp_path / "m", fmt="safetensors", legacy_weight_norm=False)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UpstreamError, match="do not match its config"):
        load_upstream("mert", model=str(folder))


def test_prefers_safetensors_and_needs_weights(tmp_path):
    folder = make_tiny_mert(tmp_path / "m", fmt="safetensors")
    torch.save({"garbage": torch.zeros(1)}, folder / "pytorch_model.bin")
    load_upstream("mert", model=str(folder))  # the .bin is not read
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(UpstreamError, match="neither model.safetensors nor pytorch_model.bin"):
        load_upstream("mert", model=str(folder))


@pytest.mark.parametrize("field,match", [("feature_extractor_cqt", "CQT"), ("deepnorm", "DeepNorm")])
def test_unsupported_mert_options_refused(tmp_path, field, match):
    folder = make_tiny_mert(tmp_path / "m", config_overrides={field: True})
    with pytest.raises(UpstreamError, match=match):
        load_upstream("mert", model=str(folder))


def test_non_mert_folder_refused(tmp_path):
    folder = make_tiny_hf(tmp_path / "h", kind="hubert")
    with pytest.raises(UpstreamError, match="'hubert' upstream"):
        load_upstream("mert", model=str(folder))


def test_hubert_config_keeps_only_hubert_fields():
    cfg = mert_config_dict("v1", tiny=False, do_stable_layer_norm=True, attention_relax=32.0)
    hc = mert_plugin.hubert_config_from_mert(cfg)
    assert hc.hidden_size == 768 and hc.num_hidden_layers == 12 and hc.do_stable_layer_norm
    assert list(hc.conv_stride) == [5, 2, 2, 2, 2, 2, 2] and hc.feat_proj_layer_norm
    assert not hasattr(hc, "feature_extractor_cqt") and not hasattr(hc, "deepnorm")
    assert hc.model_type == "hubert"


def test_missing_folder_and_source_required(tmp_path):
    with pytest.raises(UpstreamError, match="does not exist"):
        load_upstream("mert", model=str(tmp_path / "absent"))
    with pytest.raises(UpstreamError, match="m-a-p/MERT-v1-95M"):
        load_upstream("mert")


def test_hub_id_offline_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(UpstreamError) as info:
        load_upstream("mert", model="m-a-p/MERT-v1-95M")
    msg = str(info.value)
    assert "\n" not in msg
    assert "hf download m-a-p/MERT-v1-95M" in msg and "huggingface-cli download m-a-p/MERT-v1-95M" in msg
    assert "offline" in msg and "local folder" in msg


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_hub_id_from_offline_cache(tmp_path, monkeypatch, fmt):
    """A Hub id already in the HF cache loads offline, through snapshot_download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    snapshot = hub_cache_snapshot(tmp_path / "hf_home", "m-a-p/MERT-v1-95M")
    _, state = make_tiny_mert(snapshot, version="v1", fmt=fmt, return_state=True)
    up = load_upstream("mert", model="m-a-p/MERT-v1-95M")
    assert up.source == "m-a-p/MERT-v1-95M" and up.sample_rate == 24000
    for key, value in up.model.state_dict().items():
        assert torch.equal(value, state[key]), key
