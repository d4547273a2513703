"""Teacher pretraining (audioembed.pretrain): targets, masking, training, resume, loading, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from audio_gen import chirp, noise, tone, write_audio
from tiny_models import single_thread

from audioembed import load_upstream
from audioembed.training.config import ConfigError
from audioembed.training.checkpoints import checkpoint_dirs, load_checkpoint
from audioembed.pretrain.commands import pretrain_command
from audioembed.pretrain.config import load_config
from audioembed.pretrain.model import span_mask
from audioembed.pretrain.targets import (
    HUBERT_GRID,
    FeatureExtractor,
    FeatureSpec,
    band_centres,
    deltas,
    fit_codebook,
    hz_to_mel,
    load_codebooks,
    mel_to_hz,
    save_codebooks,
)
from audioembed.pretrain.trainer import PretrainError, PretrainTrainer
from audioembed.training.runlog import read_log
from audioembed.models.hf_encoder import conv_output_length

#: a tiny teacher with HuBERT's CNN geometry (hop 320), so frame rates are the real ones
TINY_ARCH = (
    "model.arch={hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, "
    "conv_dim=[8,8,8,8,8,8,8], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2}"
)
TINY = [TINY_ARCH, "units.k=8", "units.fit_seconds=12", "data.batch_size=4", "data.crop_seconds=1.0",
        "loss.embed_dim=16", "run.device=\"cpu\"", "run.log_every=1", "run.workers=0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Ten 2-second files of tones, sweeps and noise at 16, 24 and 44.1 kHz."""
    root = tmp_path_factory.mktemp("pretrain_corpus")
    rng = np.random.default_rng(0)
    for i in range(10):
        sr = (16000, 24000, 44100)[i % 3]
        f = float(rng.uniform(150, 1200))
        x = tone(f, 2.0, sr, 0.3) + chirp(f / 2, f * 2, 2.0, sr, 0.2) + noise(2.0, sr, seed=i, amp=0.03)
        x[int(0.8 * sr):int(1.1 * sr)] = noise(0.3, sr, seed=100 + i, amp=0.2)[: int(1.1 * sr) - int(0.8 * sr)]
        write_audio(root / f"clip{i}.wav", x, sr)
    return root


def _config(corpus, out, kind, *sets, **preset):
    return load_config(None, [*TINY, *sets], {"kind": kind, "data": {"manifests": [str(corpus)]},
                                              "run": {"output_dir": str(out)}, **preset})


def _train(config, until_step=None):
    with single_thread():
        trainer = PretrainTrainer(config, progress=False)
        folder = trainer.run(until_step=until_step)
    return trainer, folder


# --------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate,win", [(16000, 400), (24000, 2048)])
def test_features_have_the_cnn_frame_count(sample_rate, win):
    geometry = list(zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)))
    cnn = torch.nn.Sequential(*[torch.nn.Conv1d(1, 1, k, s) for k, s in geometry])  # HuBERT's CNN geometry
    extract = FeatureExtractor(FeatureSpec(sample_rate, win=win))
    rng = np.random.default_rng(1)
    for n in (400, 401, 719, 720, 1039, sample_rate, sample_rate + 123, 4 * sample_rate + 7):
        feats = extract(rng.standard_normal(n), ["mfcc", "logmel", "chroma", "cqt"])
        with torch.no_grad():
            frames = cnn(torch.zeros(1, 1, n)).shape[-1]
        assert frames == conv_output_length(n, geometry) == HUBERT_GRID.num_frames(n)
        spec = extract.spec
        for name, value in feats.items():
            assert value.shape == (frames, spec.dim(name)), (name, n)
            assert np.isfinite(value).all()
    assert extract(np.zeros(399), ["mfcc"])["mfcc"].shape == (0, 39)
    # 1 s gives the model's frame rate: 50 Hz at 16 kHz, 75 Hz at 24 kHz (minus the last partial frame)
    assert HUBERT_GRID.num_frames(sample_rate) == sample_rate // 320 - 1


@pytest.mark.parametrize("sample_rate,win,notes", [
    (16000, 400, ((440.0, 9),)),  # 31 Hz bins: A4 is resolved, not every semitone
    (16000, 1024, ((440.0, 9), (523.25, 0), (392.0, 7))),
    (24000, 2048, ((440.0, 9), (523.25, 0), (392.0, 7))),  # the mert default
])
def test_chroma_and_cqt_of_a4_peak_at_a(sample_rate, win, notes):
    extract = FeatureExtractor(FeatureSpec(sample_rate, win=win))
    for freq, pitch_class in notes:
        feats = extract(tone(freq, 1.0, sample_rate), ["chroma", "cqt"])
        chroma = feats["chroma"][5:-5].mean(axis=0)
        assert int(np.argmax(chroma)) == pitch_class
        assert np.allclose(feats["chroma"][5:-5].sum(axis=1), 1.0, atol=1e-5)
        band = int(np.argmax(feats["cqt"][5:-5].mean(axis=0)))
        centres = band_centres(extract.spec.cqt_fmin, extract.spec.cqt_bands, extract.spec.cqt_bands_per_octave)
        assert abs(12 * np.log2(centres[band] / freq)) < 0.5  # the band of that semitone


@pytest.mark.parametrize("sample_rate,win", [(16000, 400), (24000, 2048)])
def test_logmel_of_a_tone_peaks_at_its_band(sample_rate, win):
    spec = FeatureSpec(sample_rate, win=win)
    extract = FeatureExtractor(spec)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), spec.n_mels + 2))
    for freq in (300.0, 1000.0, 3000.0):
        peak = int(np.argmax(extract(tone(freq, 1.0, sample_rate), ["logmel"])["logmel"][5:-5].mean(axis=0)))
        # the peak band's triangle contains the tone: edges[peak] < f < edges[peak + 2]
        assert edges[peak] < freq < edges[peak + 2], (freq, peak)


def test_deltas_of_a_ramp_are_its_slope():
    ramp = np.arange(20, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])
    d = deltas(ramp)
    assert np.allclose(d[2:-2], [[1.0, -2.0]])
    assert np.allclose(deltas(d)[4:-4], 0.0)


def test_codebook_fit_save_load(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.standard_normal((200, 2)) * 0.3 for c in centres])
    book = fit_codebook("demo", x, 3, seed=0)
    units = book.units(x)
    assert len(set(units[:200])) == len(set(units[200:400])) == len(set(units[400:])) == 1
    assert len(set(units)) == 3
    path = save_codebooks(tmp_path / "u.npz", [book], {"cqt": (np.zeros(2), np.ones(2))}, {"k": 3})
    books, stats, meta = load_codebooks(path)
    assert np.array_equal(books["demo"].units(x), units) and meta == {"k": 3} and set(stats) == {"cqt"}
    assert np.array_equal(fit_codebook("demo", x, 3, seed=0).centroids, book.centroids)  # seeded


# --------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------


def test_span_mask_fraction_padding_and_seed():
    lengths = [400] * 30 + [150, 0, 5]
    mask = span_mask(lengths, 400, 0.8, 10, 2, np.random.default_rng([0, 3]))
    assert mask.shape == (33, 400)
    fraction = mask[:30].mean()
    assert 0.5 < fraction < 0.62  # 1 - (1 - 0.08) ** 10 = 0.566
    assert not mask[30, 150:].any() and mask[30, :150].any()
    assert not mask[31].any()
    assert mask[32, :5].all() and not mask[32, 5:].any()  # shorter than a span: min_masks cover it
    again = span_mask(lengths, 400, 0.8, 10, 2, np.random.default_rng([0, 3]))
    assert np.array_equal(mask, again)
    assert not np.array_equal(mask, span_mask(lengths, 400, 0.8, 10, 2, np.random.default_rng([0, 4])))


# --------------------------------------------------------------------------------------
# training, resume, loading
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubert_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("hubert_run")
    config = _config(corpus, out, "hubert", "optim.max_steps=30", "optim.lr=2e-3", "optim.warmup=3")
    trainer, folder = _train(config)
    return trainer, folder


def test_hubert_loss_decreases(hubert_run):
    trainer, folder = hubert_run
    log = read_log(trainer.output_dir)
    assert [r["step"] for r in log] == list(range(1, 31))
    first = np.mean([r["ce_masked/mfcc"] for r in log[:5]])
    last = np.mean([r["ce_masked/mfcc"] for r in log[-5:]])
    assert last < first - 0.2, (first, last)
    assert all(0.3 < r["masked_fraction"] < 0.8 for r in log)
    assert "cqt_mse" not in log[0]
    assert folder == trainer.output_dir / "model"


def _same_as_trained(upstream, trainer, seconds=1.0):
    """The upstream's last hidden state equals the trained encoder's in eval mode."""
    rate = upstream.sample_rate
    wav = torch.from_numpy(tone(440.0, seconds, rate) + noise(seconds, rate, seed=5))[None]
    out = upstream(wav, torch.tensor([wav.shape[1]]))
    trainer.model.eval()
    with torch.no_grad():
        own = trainer.model.encode(wav, torch.tensor([wav.shape[1]]))
    assert torch.allclose(out.hidden_states[-1], own, atol=1e-5)
    return out


def test_hubert_teacher_loads_through_the_hubert_upstream(hubert_run):
    trainer, folder = hubert_run
    upstream = load_upstream("hubert", model=str(folder))
    assert upstream.sample_rate == 16000 and upstream.hop_length == 320 and not upstream.normalize
    assert upstream.sample_rate / upstream.hop_length == 50.0
    out = _same_as_trained(upstream, trainer)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (1, 49, 32)
    info = json.loads((folder / "audioembed_pretrain.json").read_text())
    assert info["kind"] == "hubert" and info["steps"] == 30 and info["units"]["codebooks"] == ["mfcc"]
    with pytest.raises(Exception, match="mert"):
        load_upstream("mert", model=str(folder))


def test_mert_resume_is_exact_and_loads_through_the_mert_upstream(corpus, tmp_path):
    sets = ("optim.max_steps=6", "run.checkpoint_every=2")
    trainer_a, folder_a = _train(_config(corpus, tmp_path / "straight", "mert", *sets))
    cfg_b = _config(corpus, tmp_path / "resumed", "mert", *sets)
    _, stopped = _train(cfg_b, until_step=3)
    assert stopped.name == "step-00000003" and not (tmp_path / "resumed" / "model").exists()
    trainer_b, folder_b = _train(cfg_b)
    assert trainer_b.step == 6
    a = load_checkpoint(checkpoint_dirs(tmp_path / "straight")[-1])["model"]
    b = load_checkpoint(checkpoint_dirs(tmp_path / "resumed")[-1])["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a, log_b = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert {"ce_masked/logmel", "ce_masked/chroma", "cqt_mse"} <= set(log_a[0])

    config = json.loads((folder_a / "config.json").read_text())
    assert config["model_type"] == "mert_model" and config["architectures"] == ["MERTModel"]
    assert config["sample_rate"] == 24000 and config["feature_extractor_cqt"] is False
    on_disk = torch.load(folder_a / "pytorch_model.bin", weights_only=True)
    assert any(k.endswith("weight_g") for k in on_disk)  # the released MERT key names
    upstream = load_upstream("mert", model=str(folder_a))
    assert upstream.sample_rate == 24000 and upstream.normalize and upstream.sample_rate / upstream.hop_length == 75.0
    out = _same_as_trained(upstream, trainer_a)
    assert out.hidden_states[0].shape == (1, 74, 32)

    with pytest.raises(PretrainError, match="another config"):
        PretrainTrainer(_config(corpus, tmp_path / "resumed", "mert", *sets, "units.k=9"), progress=False).run()
    from audioembed.training.checkpoints import run_folder_lock

    with run_folder_lock(tmp_path / "resumed"), pytest.raises(PretrainError, match="being trained by another process"):
        PretrainTrainer(_config(corpus, tmp_path / "resumed", "mert", *sets), progress=False).run()


def test_truncated_checkpoint_falls_back_and_the_log_keeps_each_step_once(corpus, tmp_path):
    """A cut-short trainer_state.pt is named and the previous checkpoint used; the steps
    trained again after it are logged once (issue 13 items 9 and 13)."""
    config = _config(corpus, tmp_path / "run", "hubert", "optim.max_steps=4", "run.checkpoint_every=2")
    _train(config, until_step=3)  # checkpoints at 2 and 3, log 1..3
    state = tmp_path / "run" / "checkpoints" / "step-00000003" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:500])
    warnings = []
    with single_thread():
        trainer = PretrainTrainer(config, progress=False, warn=warnings.append)
        trainer.run()
    assert trainer.step == 4
    assert len(warnings) == 1 and str(state) in warnings[0] and "step-00000002" in warnings[0]
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4]


def test_config_defaults_by_kind(tmp_path):
    hubert = load_config(None, [], {"kind": "hubert"})
    mert = load_config(None, [], {"kind": "mert"})
    assert (hubert.model.sample_rate, hubert.units.features, hubert.units.k, hubert.loss.cqt_weight) == (16000, ["mfcc"], 50, 0.0)
    assert (mert.model.sample_rate, mert.units.features, mert.units.k, mert.loss.cqt_weight) == (24000, ["logmel", "chroma"], 100, 1.0)
    assert mert.model.normalize and not hubert.model.normalize
    assert hubert.arch()["num_hidden_layers"] == 4 and hubert.arch()["conv_dim"] == [128] * 7
    assert load_config(None, ["model.sample_rate=16000"], {"kind": "mert"}).model.sample_rate == 16000
    with pytest.raises(ConfigError, match="unknown field"):
        load_config(None, ["units.clusters=5"])
    with pytest.raises(ConfigError, match="iteration 2 needs teacher"):
        load_config(None, ["units.iteration=2"])
    path = tmp_path / "c.toml"
    path.write_text('kind = "mert"\n[data]\nmanifests = ["audio"]\n[units]\nk = 12\n')
    cfg = load_config(path, ["optim.max_steps=7"])
    assert cfg.kind == "mert" and cfg.units.k == 12 and cfg.optim.max_steps == 7
    assert cfg.data.manifests == [str(tmp_path / "audio")]


def test_cli_pretrain_resume_and_iteration_2(corpus, hubert_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["--kind", "hubert", "--data", str(corpus), "-o", str(out), "-q"]
    sets = [x for s in [*TINY, "optim.max_steps=3"] for x in ("--set", s)]
    result = runner.invoke(pretrain_command, [*args, *sets, "--until-step", "2"])
    assert result.exit_code == 0, result.output
    assert "stopped at step 2" in result.output
    result = runner.invoke(pretrain_command, [*args, *sets])
    assert result.exit_code == 0, result.output
    assert "teacher written to" in result.output and "--upstream hubert" in result.output
    assert load_upstream("hubert", model=str(out / "model")).num_layers == 3

    # iteration 2: units from layer 1 of the iteration-1 teacher
    _, teacher = hubert_run
    out2 = tmp_path / "iter2"
    result = runner.invoke(pretrain_command, ["--data", str(corpus), "-o", str(out2), "-q", *sets,
                                              "--iteration", "2", "--units-from", str(teacher), "--units-layer", "1"])
    assert result.exit_code == 0, result.output
    log = read_log(out2)
    assert len(log) == 3 and "ce_masked/layer1" in log[0]
    info = json.loads((out2 / "model" / "audioembed_pretrain.json").read_text())
    assert info["units"]["iteration"] == 2 and info["units"]["layer"] == 1

    result = runner.invoke(pretrain_command, ["--data", str(corpus), "-o", str(tmp_path / "bad"), "--set", "units.k=1"])
    assert result.exit_code != 0 and "k must be >= 2" in result.output
    result = runner.invoke(pretrain_command, ["--data", str(corpus), "-o", str(tmp_path / "bad2"),
                                              "--units-from", str(teacher), "--units-layer", "9", *sets])
    assert result.exit_code != 0 and "layer 9 does not exist" in result.output
