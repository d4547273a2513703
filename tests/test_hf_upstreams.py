"""transformers encoders (hubert, wav2vec2, wavlm, data2vec): loading, batching, layers, errors."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny_models import (
    HOP,
    batch_vs_single_diff,
    hub_cache_snapshot,
    legacy_weight_norm_keys,
    make_tiny_hf,
    pad_batch,
    plain_batch_vs_single_diff,
    random_wavs,
    single_thread,
)

import audioembed
from audioembed import UpstreamError, load_upstream

# very different lengths, the shortest only a few frames long (receptive field is 30 samples)
LENGTHS = (6000, 1700, 333, 41)

pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

# (upstream name, feat_extract_norm, extra config)
CASES = {
    "hubert-group": ("hubert", "group", {}),
    "hubert-layer-stable": ("hubert", "layer", {}),
    "hubert-conv-pos-batchnorm": ("hubert", "group", {"conv_pos_batch_norm": True}),
    "wav2vec2-group": ("wav2vec2", "group", {}),
    "wav2vec2-layer-stable": ("wav2vec2", "layer", {}),
    "wavlm-group": ("wavlm", "group", {}),
    "wavlm-layer-stable": ("wavlm", "layer", {}),
    "data2vec": ("data2vec", "layer", {}),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for case, (kind, norm, extra) in CASES.items():
        out[case] = make_tiny_hf(root / case, kind=kind, feat_extract_norm=norm, seed=3, **extra)
    return out


@pytest.fixture(scope="module")
def upstreams(folders):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {case: load_upstream(CASES[case][0], model=str(folder)) for case, folder in folders.items()}


def _plain(up):
    """A fresh, unpatched transformers model with the same weights (loaded the usual way)."""
    return type(up.model).from_pretrained(up.source).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_batched_equals_single(upstreams, case):
    up = upstreams[case]
    wavs = random_wavs(LENGTHS, seed=11)
    assert batch_vs_single_diff(up, wavs) <= 1e-4


@pytest.mark.parametrize("case", ["hubert-group", "wav2vec2-group", "wavlm-group", "data2vec", "hubert-conv-pos-batchnorm"])
def test_plain_transformers_leaks_padding(upstreams, case):
    """Without the masking the same check fails: the test above proves something."""
    up = upstreams[case]
    assert plain_batch_vs_single_diff(_plain(up), random_wavs(LENGTHS, seed=11)) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_states_equal_transformers_single(upstreams, case):
    up = upstreams[case]
    plain = _plain(up)
    wav = random_wavs([4321], seed=5)[0]
    with torch.no_grad():
        plain_out = plain(wav[None], output_hidden_states=True)
        ref = list(plain_out.hidden_states)
        out = up(wav[None], torch.tensor([wav.numel()]))
    if getattr(plain.config, "do_stable_layer_norm", False):
        # pre-LN: the last state is the final LayerNorm's output whatever transformers version
        ref[-1] = plain_out.last_hidden_state
        assert (out.hidden_states[-1] - plain_out.hidden_states[-1]).abs().max() > 1e-2
    assert len(ref) == plain.config.num_hidden_layers + 1 == up.num_layers == len(out.hidden_states)
    for a, b in zip(out.hidden_states, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5
    assert int(out.lengths[0]) == ref[0].shape[1] == up.num_frames(wav.numel())


def test_masking_installed_where_needed(upstreams):
    assert upstreams["hubert-group"].masking["group_norm"] == ["feature_extractor.conv_layers.0.layer_norm"]
    assert upstreams["wav2vec2-layer-stable"].masking["group_norm"] == []
    assert len(upstreams["data2vec"].masking["pos_conv"]) == 3
    # parameter names are unchanged by the patching
    up = upstreams["hubert-group"]
    assert set(up.model.state_dict()) == set(_plain(up).state_dict())


def test_attributes_and_lengths(upstreams):
    up = upstreams["hubert-group"]
    assert up.sample_rate == 16000 and up.hop_length == HOP and up.frame_rate == 16000 / HOP
    assert up.num_layers == 3 and up.hidden_size == 32
    assert up.context_samples == 32000 and up.context_samples % up.hop_length == 0
    assert up.source is not None and up.name == "hubert"
    for n in (30, 31, 49, 50, 51, 333, 1700, 6000):
        expected = int(up.model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert up.num_frames(n) == expected
    assert up.num_frames(30) == 1 and up.min_samples == 30
    assert up.num_frames(29) <= 0 and up.num_frames(0) <= 0
    batch, lengths = pad_batch(random_wavs(LENGTHS))
    with torch.no_grad():
        out = up(batch, lengths)
    assert out.lengths.tolist() == [up.num_frames(n) for n in LENGTHS]
    assert all(h.shape == (len(LENGTHS), up.num_frames(max(LENGTHS)), 32) for h in out.hidden_states)
    # padded frames carry zeros
    assert out.hidden_states[-1][3, out.lengths[3] :].abs().max() == 0


def test_too_short_input_is_refused(upstreams):
    up = upstreams["hubert-group"]
    batch, lengths = pad_batch(random_wavs([500, 29]))
    with pytest.raises(UpstreamError, match="too short"):
        up(batch, lengths)


def test_describe_and_hash(upstreams):
    up = upstreams["hubert-group"]
    assert up.describe() == {
        "model_class": "HubertModel",
        "sample_rate": 16000,
        "normalize": False,
        "num_layers": 3,
        "hidden_size": 32,
    }
    assert up.weights_hash() == up.weights_hash()
    assert up.weights_hash() != upstreams["hubert-layer-stable"].weights_hash()
    # pre-LN models record whether the last state is layer-normed (transformers 4 vs 5)
    assert upstreams["wav2vec2-layer-stable"].describe()["last_state"] == "final_layer_norm"


def test_stays_in_eval_mode(upstreams):
    up = upstreams["hubert-group"]
    up.train()
    assert not up.training and not up.model.training
    assert up.model.config.layerdrop == 0


def test_deepcopy_keeps_masking(upstreams):
    up = copy.deepcopy(upstreams["data2vec"])
    assert batch_vs_single_diff(up, random_wavs(LENGTHS, seed=2)) <= 1e-4


def test_normalisation_from_preprocessor(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    folder = make_tiny_hf(tmp_path / "norm", kind="wav2vec2", feat_extract_norm="layer", do_normalize=True, seed=4)
    up = load_upstream("wav2vec2", model=str(folder))
    assert up.normalize is True and up.describe()["normalize"] is True
    wavs = random_wavs(LENGTHS, seed=7, scale=0.3, offset=0.2)
    assert batch_vs_single_diff(up, wavs) <= 1e-4
    # matches transformers' own feature extractor + model
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
    plain = _plain(up)
    wav = wavs[0]
    inputs = fe(wav.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        plain_out = plain(inputs["input_values"], output_hidden_states=True)
        ref = [*plain_out.hidden_states[:-1], plain_out.last_hidden_state]  # pre-LN: normed last state
        out = up(wav[None], torch.tensor([wav.numel()])).hidden_states
        # invariant to gain and DC offset (up to eps)
        out2 = up((3.0 * wav - 0.5)[None], torch.tensor([wav.numel()])).hidden_states
    for a, b, c in zip(out, ref, out2):
        assert (a - b).abs().max().item() <= 1e-4
        assert (a - c).abs().max().item() <= 1e-3


def test_no_normalisation_when_preprocessor_says_so(upstreams):
    # (a group-norm CNN is itself nearly gain/offset invariant, so use a layer-norm one)
    up = upstreams["hubert-layer-stable"]
    assert up.normalize is False
    wav = random_wavs([3000], seed=1)[0]
    with torch.no_grad():
        a = up(wav[None], torch.tensor([3000])).hidden_states[-1]
        b = up((3.0 * wav + 0.5)[None], torch.tensor([3000])).hidden_states[-1]
    assert (a - b).abs().max().item() > 1e-2


@pytest.mark.parametrize("norm,expected", [("group", False), ("layer", True)])
def test_fallback_without_preprocessor(tmp_path, norm, expected):
    folder = make_tiny_hf(tmp_path / norm, kind="hubert", feat_extract_norm=norm, preprocessor=False)
    with pytest.warns(UserWarning, match="preprocessor_config.json"):
        up = load_upstream("hubert", model=str(folder))
    assert up.sample_rate == 16000 and up.normalize is expected


def test_sample_rate_from_preprocessor(tmp_path):
    folder = make_tiny_hf(tmp_path / "sr", kind="hubert", sample_rate=24000)
    up = load_upstream("hubert", model=str(folder))
    assert up.sample_rate == 24000 and up.frame_rate == 24000 / HOP
    assert up.context_samples == 48000


def test_legacy_weight_norm_names_load(tmp_path, upstreams):
    """Real Hub HuBERT/wav2vec2 files store the positional conv as weight_g / weight_v."""
    folder = make_tiny_hf(tmp_path / "legacy", kind="hubert", seed=3)
    path = folder / "model.safetensors"
    save_file(legacy_weight_norm_keys(load_file(str(path))), str(path), metadata={"format": "pt"})
    assert any(k.endswith("weight_g") for k in load_file(str(path)))
    up = load_upstream("hubert", model=str(folder))
    ref = upstreams["hubert-group"]
    for (k, a), (_, b) in zip(sorted(up.model.state_dict().items()), sorted(ref.model.state_dict().items())):
        assert torch.equal(a, b), k


def test_wrong_family_is_named(folders):
    with pytest.raises(UpstreamError, match="'wavlm' upstream"):
        load_upstream("hubert", model=str(folders["wavlm-group"]))


def test_missing_local_folder(tmp_path):
    with pytest.raises(UpstreamError, match="does not exist"):
        load_upstream("hubert", model=str(tmp_path / "nope"))
    with pytest.raises(UpstreamError, match="does not exist"):
        load_upstream("wavlm", model="./not/here")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UpstreamError, match="config.json"):
        load_upstream("hubert", model=str(tmp_path / "empty"))


def test_source_is_required():
    with pytest.raises(UpstreamError, match="facebook/hubert-base-ls960"):
        load_upstream("hubert")


@pytest.mark.parametrize("name,repo", [("hubert", "facebook/hubert-base-ls960"), ("data2vec", "facebook/data2vec-audio-base")])
def test_hub_id_offline_gives_one_line_error(tmp_path, monkeypatch, name, repo):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(UpstreamError) as info:
        load_upstream(name, model=repo)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"hf download {repo}" in msg and "huggingface-cli download" in msg
    assert "offline" in msg and "local folder" in msg
    assert str(tmp_path / "hf_home") in msg


def test_hub_id_from_offline_cache(tmp_path, monkeypatch):
    """A Hub id already in the HF cache loads offline (config, preprocessor and weights)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    snapshot = hub_cache_snapshot(tmp_path / "hf_home", "facebook/wav2vec2-base")
    make_tiny_hf(snapshot, kind="wav2vec2", do_normalize=True, sample_rate=16000, seed=8)
    up = load_upstream("wav2vec2", model="facebook/wav2vec2-base")
    assert up.source == "facebook/wav2vec2-base" and up.normalize is True
    assert batch_vs_single_diff(up, random_wavs(LENGTHS, seed=1)) <= 1e-4


def test_registry_lists_all_upstreams():
    registry = audioembed.get_registry()
    names = set(registry.upstreams)
    assert {"hubert", "wav2vec2", "wavlm", "data2vec", "mert", "student", "unified_student",
            "small_hubert", "small_mert"} <= names
    assert not any(k.endswith((":hf", ":mert", ":student", ":bundled")) for k in registry.failed)
    for name in ("hubert", "wav2vec2", "wavlm", "data2vec", "mert", "student"):
        spec = registry.upstream_spec(name)
        assert spec.requires_source and spec.example_source
    assert not registry.upstream_spec("unified_student").requires_source
