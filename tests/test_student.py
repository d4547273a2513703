"""Student checkpoints: format, loading as `student` / `unified_student`, batching, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tiny_models import (
    HOP,
    batch_vs_single_diff,
    make_tiny_student,
    plain_batch_vs_single_diff,
    random_wavs,
    single_thread,
    tiny_student_model,
)

from audioembed import UpstreamError, load_upstream
from audioembed_plugins import student as student_plugin
from audioembed.models.student_folder import META_FILE, read_student_metadata, save_student

LENGTHS = (5000, 1200, 260, 35)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return make_tiny_student(tmp_path_factory.mktemp("student") / "s", seed=2)


@pytest.fixture
def no_default_unified(monkeypatch, tmp_path):
    """No env var and no bundled student, whatever the installation holds."""
    monkeypatch.delenv(student_plugin.ENV_UNIFIED, raising=False)
    monkeypatch.setattr(student_plugin, "bundled_unified_student_dir", lambda: tmp_path / "no_bundle")


def test_folder_layout(student_dir):
    names = {p.name for p in student_dir.iterdir()}
    assert {"config.json", "model.safetensors", META_FILE} <= names
    meta = json.loads((student_dir / META_FILE).read_text())
    assert meta["format"] == "audioembed-student" and meta["format_version"] == 1
    assert meta["sample_rate"] == 16000 and meta["normalize"] is False
    assert meta["teachers"] and meta["target_layers"] and "init_fingerprint" in meta and "training" in meta


def test_student_loads_and_matches_hubert(student_dir):
    up = load_upstream("student", model=str(student_dir))
    ref = tiny_student_model(seed=2)
    assert up.name == "student" and type(up.model).__name__ == "HubertModel"
    assert up.sample_rate == 16000 and up.normalize is False and up.hop_length == HOP
    assert up.num_layers == ref.config.num_hidden_layers + 1 == 3
    wav = random_wavs([4000], seed=6)[0]
    with torch.no_grad():
        theirs = ref(wav[None], output_hidden_states=True).hidden_states
        ours = up(wav[None], torch.tensor([4000])).hidden_states
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max().item() <= 1e-5


def test_student_batched_equals_single(student_dir):
    up = load_upstream("student", model=str(student_dir))
    wavs = random_wavs(LENGTHS, seed=4)
    assert batch_vs_single_diff(up, wavs) <= 1e-4
    assert plain_batch_vs_single_diff(tiny_student_model(seed=2), wavs) > 1e-3


def test_unified_student_with_ckpt(student_dir, no_default_unified):
    up = load_upstream("unified_student", model=str(student_dir))
    assert up.name == "unified_student"
    assert batch_vs_single_diff(up, random_wavs(LENGTHS, seed=5)) <= 1e-4


def test_unified_student_without_ckpt_is_clear(no_default_unified):
    with pytest.raises(UpstreamError) as info:
        load_upstream("unified_student")
    msg = str(info.value)
    assert "no bundled unified student" in msg and "audioembed distill" in msg and "--ckpt" in msg


def test_unified_student_env_and_bundled(student_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(student_plugin, "bundled_unified_student_dir", lambda: tmp_path / "no_bundle")
    monkeypatch.setenv(student_plugin.ENV_UNIFIED, str(student_dir))
    assert load_upstream("unified_student").source == str(student_dir)
    monkeypatch.setenv(student_plugin.ENV_UNIFIED, str(tmp_path / "missing"))
    with pytest.raises(UpstreamError, match=student_plugin.ENV_UNIFIED):
        load_upstream("unified_student")
    monkeypatch.delenv(student_plugin.ENV_UNIFIED)
    bundled = make_tiny_student(tmp_path / "bundle" / "unified_student", seed=2)
    monkeypatch.setattr(student_plugin, "bundled_unified_student_dir", lambda: bundled)
    assert load_upstream("unified_student").source == str(bundled)


def test_student_requires_source():
    with pytest.raises(UpstreamError, match="PATH"):
        load_upstream("student")


def test_metadata_sets_rate_and_normalisation(tmp_path):
    folder = make_tiny_student(tmp_path / "s24", seed=1, sample_rate=24000, normalize=True)
    up = load_upstream("student", model=str(folder))
    assert up.sample_rate == 24000 and up.normalize is True and up.frame_rate == 24000 / HOP
    wav = random_wavs([3000], seed=2)[0]
    with torch.no_grad():
        a = up(wav[None], torch.tensor([3000])).hidden_states[-1]
        b = up((2.0 * wav + 0.3)[None], torch.tensor([3000])).hidden_states[-1]
    assert (a - b).abs().max().item() <= 1e-3  # normalised: gain and offset removed


def test_heads_file_is_ignored(tmp_path):
    folder = make_tiny_student(tmp_path / "h", seed=2)
    save_file({"heads.hubert.weight": torch.zeros(3, 32)}, str(folder / "heads.safetensors"))
    assert load_upstream("student", model=str(folder)).num_layers == 3


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.update(format="something-else"), "'format'"),
        (lambda m: m.update(format_version=2), "newer"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: m.update(sample_rate=0), "sample_rate"),
        (lambda m: m.update(normalize="yes"), "normalize"),
    ],
)
def test_invalid_metadata_names_the_file(tmp_path, edit, match):
    folder = make_tiny_student(tmp_path / "bad", seed=2)
    meta = json.loads((folder / META_FILE).read_text())
    edit(meta)
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UpstreamError, match=match) as info:
        load_upstream("student", model=str(folder))
    assert META_FILE in str(info.value)


def test_missing_metadata_or_folder(tmp_path, student_dir):
    plain = tmp_path / "plain"
    tiny_student_model().save_pretrained(str(plain))
    with pytest.raises(UpstreamError, match=META_FILE):
        load_upstream("student", model=str(plain))
    with pytest.raises(UpstreamError, match="does not exist"):
        load_upstream("student", model=str(tmp_path / "nothing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / META_FILE).write_text("{not json")
    with pytest.raises(UpstreamError, match="cannot read"):
        load_upstream("student", model=str(tmp_path / "broken"))


def test_save_student_validates(tmp_path):
    model = tiny_student_model()
    with pytest.raises(ValueError, match="sample_rate"):
        save_student(model, tmp_path / "a", metadata={"sample_rate": 8000})
    with pytest.raises(ValueError, match="normalize"):
        save_student(model, tmp_path / "b", normalize=1)
    with pytest.raises(TypeError):
        save_student(torch.nn.Linear(2, 2), tmp_path / "c")
    assert not (tmp_path / "a").exists()


def test_save_student_round_trip_metadata(tmp_path):
    meta = {"teachers": ["hubert", "mert"], "target_layers": {"hubert": [4, 8, 12]}, "init_fingerprint": "abc"}
    folder = save_student(tiny_student_model(), tmp_path / "rt", metadata=meta)
    on_disk = read_student_metadata(folder)
    assert on_disk["teachers"] == ["hubert", "mert"] and on_disk["target_layers"] == {"hubert": [4, 8, 12]}
    assert on_disk["init_fingerprint"] == "abc" and on_disk["training"] == {}
