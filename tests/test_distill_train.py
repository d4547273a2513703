"""The distillation trainer end to end, with two different tiny teachers.

Teachers: a HuBERT at 16 kHz (32 d, 2 layers, 800 frames/s) and a MERT-v1 at 24 kHz
(48 d, 3 layers, 1200 frames/s), so heads differ per teacher and the music targets are
resampled in time to the student's frames. Audio is generated; runs take a few steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import audio_gen
from tiny_models import CONV, make_tiny_hf, make_tiny_mert, single_thread

from audioembed import load_upstream
from audioembed.cli import main as cli
from audioembed.distill.config import config_from_dict, dump_toml
from audioembed.training.config import ConfigError
from audioembed.distill.data import BatchLoader
from audioembed.distill.merge import task_vector
from audioembed.distill.teachers import load_teachers
from audioembed.distill.trainer import DistillError, Trainer, build_distiller
from audioembed.training.runlog import read_log

STUDENT_ARCH = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    **{k: list(v) for k, v in CONV.items()},
)
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Corpus (4 speech files at 16 kHz, 4 music files at 44.1/24 kHz) and the two teachers."""
    root = tmp_path_factory.mktemp("distill_train")
    rows = []
    for i in range(4):
        x = audio_gen.chirp(150 + 40 * i, 900, 1.6, 16000) + audio_gen.noise(1.6, 16000, seed=i, amp=0.05)
        audio_gen.write_audio(root / "audio" / f"speech{i}.wav", x, 16000)
        rows.append({"path": f"audio/speech{i}.wav", "domain": "speech"})
        sr = 44100 if i % 2 else 24000
        y = audio_gen.tone(220 * (i + 1), 1.6, sr, amp=0.3) + audio_gen.tone(330 * (i + 1), 1.6, sr, amp=0.2)
        audio_gen.write_audio(root / "audio" / f"music{i}.wav", y, sr)
        rows.append({"path": f"audio/music{i}.wav", "domain": "music"})
    manifest = root / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    speech = make_tiny_hf(root / "t_speech", "hubert", seed=0)
    music = make_tiny_mert(
        root / "t_music", version="v1", seed=1,
        config_overrides=dict(hidden_size=48, num_hidden_layers=3, intermediate_size=96),
    )
    speech2 = make_tiny_hf(root / "t_speech2", "hubert", seed=5)
    return dict(root=root, manifest=manifest, speech=speech, music=music, speech2=speech2)


def raw_config(world, output: Path, *, teachers=("speech", "music"), **sections) -> dict:
    specs = {
        "speech": {"name": "speech", "upstream": "hubert", "model": str(world["speech"]), "domains": ["speech"]},
        "music": {"name": "music", "upstream": "mert", "model": str(world["music"]), "domains": ["music"]},
        "speech2": {"name": "speech2", "upstream": "hubert", "model": str(world["speech2"]), "domains": ["speech"]},
    }
    raw = {
        "teachers": [specs[t] for t in teachers],
        "data": {"manifests": [str(world["manifest"])], "crop_seconds": 0.5, "min_seconds": 0.5, "batch_size": 4},
        "student": {"init": "random", "arch": dict(STUDENT_ARCH)},
        "optim": {"lr": 2e-3, "warmup": 2, "max_steps": 6},
        "run": {"output_dir": str(output), "checkpoint_every": 3, "log_every": 1, "device": "cpu", "workers": 0},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def make_trainer(world, output, **sections) -> Trainer:
    return Trainer(config_from_dict(raw_config(world, output, **sections)), progress=False, warn=lambda m: None)


def student_weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_multi_teacher_loss_goes_down_and_student_loads(world, tmp_path):
    out = tmp_path / "run"
    with single_thread():
        trainer = make_trainer(world, out, optim={"max_steps": 40, "lr": 3e-3, "warmup": 4}, run={"checkpoint_every": 100})
        folder = trainer.run()
    assert folder == out / "student"
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 41))
    first = sum(r["loss"] for r in log[:3]) / 3
    last = sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    record = log[-1]
    assert set(record["teachers"]) == {"speech", "music"}
    assert list(record["teachers"]["speech"]["l1"]) == ["1", "2"]  # spread over 2 layers
    assert list(record["teachers"]["music"]["cos"]) == ["1", "2", "3"]
    assert record["audio_seconds_per_second"] > 0

    # heads: one per teacher, shaped for the teacher's width and number of target layers
    heads = load_file(str(folder / "heads.safetensors"))
    out_shapes = {}
    for key, value in heads.items():
        if key.endswith("weight") and value.dim() == 2:
            out_shapes.setdefault(key.split(".")[1], set()).add(tuple(value.shape))
    # DistilHuBERT head: Linear(student -> student x K), then K Linear(student -> teacher)
    assert out_shapes == {"speech": {(32 * 2, 32), (32, 32)}, "music": {(32 * 3, 32), (48, 32)}}

    meta = json.loads((folder / "audioembed_student.json").read_text())
    described = json.dumps(meta)
    assert "init_fingerprint" in described and '"steps": 40' in described
    assert meta and "music" in described and "24000" in described

    student = load_upstream("student", model=str(folder))
    wav = torch.from_numpy(audio_gen.tone(300, 1.0, 16000)).float()[None]
    with torch.no_grad():
        hs = student(wav, torch.tensor([wav.shape[1]])).hidden_states
    assert len(hs) == 2 and hs[-1].shape[-1] == 32


def test_cached_targets_give_the_online_loss(world, tmp_path):
    from audioembed.distill.commands import distill_cache_command

    raw = raw_config(world, tmp_path / "run", data={"cache_dir": str(tmp_path / "cache")})
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(config_from_dict(raw)))
    with single_thread():
        result = CliRunner().invoke(distill_cache_command, ["-c", str(cfg_path), "-q", "--batch-size", "3"])
        assert result.exit_code == 0, result.output
        cached = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
        raw["data"]["cache_dir"] = ""
        online = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
        # one batch of the cache's crops, decoded at every rate the online teachers need
        loader = BatchLoader(cached.items, cached._sampler(), [16000, 24000], start_step=0, max_steps=2, workers=0)
        batches = list(loader)
        a = cached.evaluate(batches[0][0], batches[0][1])
        b = online.evaluate(batches[0][0], batches[0][1])
        other = online.evaluate(batches[1][0], batches[1][1])
    assert a.loss == pytest.approx(b.loss, rel=2e-3)
    for name in ("speech", "music"):
        for kind in ("l1", "cos"):
            for layer, value in a.per_teacher[name][kind].items():
                assert value == pytest.approx(b.per_teacher[name][kind][layer], rel=5e-3, abs=1e-4)
    assert abs(other.loss - b.loss) > 1e-3 * abs(b.loss)  # another batch: another loss

    with single_thread():  # and training from the cache runs
        cached.run(until_step=2)
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2]

    # a student initialised from a teacher still gets the teacher's weights with cached targets
    raw["student"] = {"init": "teacher:speech", "arch": {"num_hidden_layers": 1}}
    online = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    cached = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
    assert cached.teachers[0].upstream is None  # the teacher's weights were dropped after init
    assert cached.init_fingerprint == online.init_fingerprint
    assert cached.init_report == online.init_report


def test_resume_is_exact(world, tmp_path):
    with single_thread():
        make_trainer(world, tmp_path / "straight").run()
        first = make_trainer(world, tmp_path / "resumed")
        stopped = first.run(until_step=3)
        assert stopped.name == "step-00000003" and not (tmp_path / "resumed" / "student").exists()
        del first
        second = make_trainer(world, tmp_path / "resumed")
        second.run()
    assert second.step == 6
    a = student_weights(tmp_path / "straight" / "student")
    b = student_weights(tmp_path / "resumed" / "student")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = load_file(str(tmp_path / "straight" / "student" / "heads.safetensors"))
    hb = load_file(str(tmp_path / "resumed" / "student" / "heads.safetensors"))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    log = read_log(tmp_path / "resumed")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log] == [r["loss"] for r in read_log(tmp_path / "straight")]


def test_resume_after_a_kill_logs_each_step_once(world, tmp_path):
    """Steps logged after the last checkpoint are trained again on resume: the log keeps one
    record per step (issue 13 item 13)."""
    out = tmp_path / "run"
    with single_thread():
        make_trainer(world, out).run(until_step=5)  # checkpoints at 3 and 5, log 1..5
        shutil.rmtree(out / "checkpoints" / "step-00000005")  # as if killed after logging 4, 5
        make_trainer(world, out).run()
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]


def test_truncated_checkpoint_falls_back_to_the_previous_one(world, tmp_path):
    """A trainer_state.pt cut short (e.g. by a copy) is named, and the run resumes exactly from
    the previous checkpoint (issue 13 item 9)."""
    with single_thread():
        make_trainer(world, tmp_path / "straight").run()
        make_trainer(world, tmp_path / "resumed", run={"keep_checkpoints": 3}).run(until_step=5)
        state = tmp_path / "resumed" / "checkpoints" / "step-00000005" / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[:1000])
        warnings = []
        trainer = Trainer(config_from_dict(raw_config(world, tmp_path / "resumed", run={"keep_checkpoints": 3})),
                          progress=False, warn=warnings.append)
        trainer.run()
    assert trainer.step == 6
    assert len(warnings) == 1 and str(state) in warnings[0] and "previous checkpoint step-00000003" in warnings[0]
    a = student_weights(tmp_path / "straight" / "student")
    b = student_weights(tmp_path / "resumed" / "student")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_log(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]


def test_changed_config_is_refused_on_resume(world, tmp_path):
    with single_thread():
        make_trainer(world, tmp_path / "run").run(until_step=1)
        with pytest.raises(DistillError, match=r"another config.*optim\.lr"):
            make_trainer(world, tmp_path / "run", optim={"lr": 1e-4}).run()
        # max_steps shapes the learning-rate schedule: refused too
        with pytest.raises(DistillError, match=r"optim\.max_steps"):
            make_trainer(world, tmp_path / "run", optim={"max_steps": 2}).run()
        # logging and checkpoint frequency may change
        trainer = make_trainer(world, tmp_path / "run", run={"log_every": 2, "checkpoint_every": 1})
        trainer.run(until_step=2)
    assert trainer.step == 2


def test_a_run_folder_trains_in_one_process_at_a_time(world, tmp_path):
    """A second trainer on a folder another holds is refused with the holder's pid; the lock
    goes with the holder."""
    from audioembed.training.checkpoints import CheckpointError, run_folder_lock

    folder = tmp_path / "run"
    with run_folder_lock(folder):
        with pytest.raises(CheckpointError, match=rf"another process \(pid {os.getpid()}\)"):
            with run_folder_lock(folder):
                pass
        with single_thread(), pytest.raises(DistillError, match="being trained by another process"):
            make_trainer(world, folder).run(until_step=1)
    with single_thread():
        trainer = make_trainer(world, folder)
        trainer.run(until_step=1)
    assert trainer.step == 1


def test_config_errors(world, tmp_path):
    with pytest.raises(ConfigError, match="names no teacher"):
        config_from_dict(raw_config(world, tmp_path, student={"init": "teacher:nobody"}))
    with pytest.raises(ConfigError, match="divisible"):
        make_trainer(world, tmp_path, data={"batch_size": 3}, optim={"accumulate": 2})
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_dict({**raw_config(world, tmp_path), "opt": {}})


def test_domain_separated_supervision_and_pcgrad(world, tmp_path):
    out = tmp_path / "run"
    with single_thread():
        make_trainer(
            world, out, loss={"domain_separated": True, "pcgrad": True},
            data={"domain_weights": {"speech": 3, "music": 1}}, optim={"max_steps": 4},
        ).run()
    log = read_log(out)
    counts = [(r["teachers"]["speech"]["samples"], r["teachers"]["music"]["samples"]) for r in log]
    assert all(s + m == 4 for s, m in counts)  # each sample supervised by its own teacher only
    assert sum(s for s, _ in counts) > sum(m for _, m in counts)  # 3:1 mixing ratio
    assert all(r["loss"] == r["loss"] for r in log)  # finite, not NaN

    out2 = tmp_path / "every"
    with single_thread():
        make_trainer(world, out2, optim={"max_steps": 1}).run()
    r = read_log(out2)[0]
    assert r["teachers"]["speech"]["samples"] == r["teachers"]["music"]["samples"] == 4


def test_initialisation_modes(world, tmp_path):
    cpu = torch.device("cpu")

    def distiller(**student):
        cfg = config_from_dict(raw_config(world, tmp_path, teachers=("speech", "speech2", "music"), student=student))
        return build_distiller(cfg, load_teachers(cfg, cpu))

    teacher = load_upstream("hubert", model=str(world["speech"])).model.state_dict()
    teacher2 = load_upstream("hubert", model=str(world["speech2"])).model.state_dict()
    d, report, fingerprint = distiller(init="teacher:speech", arch={"num_hidden_layers": 1})
    state = d.student.model.state_dict()
    assert report.method == "teacher" and report.copied == len(state)  # same widths: all of layer 0
    for key in ("feature_extractor.conv_layers.0.conv.weight", "encoder.layers.0.attention.k_proj.weight"):
        assert torch.equal(state[key], teacher[key])
    assert d.student.model.config.num_hidden_layers == 1

    d2, report2, _ = distiller(init="average:speech,speech2", arch={"num_hidden_layers": 1})
    key = "encoder.layers.0.feed_forward.output_dense.weight"
    assert torch.allclose(d2.student.model.state_dict()[key], (teacher[key] + teacher2[key]) / 2)
    assert report2.method == "average"

    d3, report3, fp_random = distiller(init="random")
    assert report3.method == "random" and fp_random != fingerprint
    _, _, again = distiller(init="random")
    assert again == fp_random  # seeded

    with pytest.raises(Exception, match="differ in hidden_size"):
        distiller(init="average:speech,music")


def test_paper_b_flow_from_the_cli(world, tmp_path):
    """Shared init -> speech-only and music-only students -> merge grid -> extract."""
    runner = CliRunner()

    def cfg(name, teachers, **student):
        raw = raw_config(world, tmp_path / name, teachers=teachers, student=student, optim={"max_steps": 2})
        path = tmp_path / f"{name}.toml"
        path.write_text(dump_toml(config_from_dict(raw)))
        return str(path)

    def invoke(*args):
        with single_thread():
            result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "initial student" in invoke("distill", "-c", cfg("base", ("speech",), init="teacher:speech"), "--init-only", "-q")
    init = tmp_path / "base" / "init"
    for name, teacher in (("speech_student", "speech"), ("music_student", "music")):
        # the init folder fixes the architecture: no arch overrides
        path = cfg(name, (teacher,), init=str(init), arch={})
        assert "student written" in invoke("distill", "-c", path, "-q")
    s, m = tmp_path / "speech_student" / "student", tmp_path / "music_student" / "student"

    invoke("merge", "--base", str(init), "--add", f"{s}:0.7", "--add", f"{m}:0.3", "-o", str(tmp_path / "merged"))
    theta0 = student_weights(init)
    ts, tm = task_vector(student_weights(s), theta0), task_vector(student_weights(m), theta0)
    merged = student_weights(tmp_path / "merged")
    for key in ts:
        assert torch.allclose(merged[key], theta0[key] + 0.7 * ts[key] + 0.3 * tm[key], atol=1e-6)
    assert not (tmp_path / "merged" / "heads.safetensors").exists()

    invoke("merge", "--base", str(init), "--add", str(s), "--add", str(m), "--sweep", "-o", str(tmp_path / "grid"))
    grid = sorted(p.name for p in (tmp_path / "grid").iterdir() if p.is_dir())
    assert len(grid) == 5

    # a student from another init is refused
    invoke("distill", "-c", cfg("other", ("speech2",), init="teacher:speech2"), "-q")
    with single_thread():
        result = runner.invoke(cli, ["merge", "--base", str(init), "--add", f"{s}:0.5",
                                     "--add", f"{tmp_path / 'other' / 'student'}:0.5", "-o", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "did not start from the weights in the base" in result.output, result.output

    invoke("extract", "--upstream", "student", "--ckpt", str(tmp_path / "merged"), str(world["root"] / "audio"),
           "-o", str(tmp_path / "feats.h5"), "--device", "cpu")
    assert (tmp_path / "feats.h5").is_file()


def test_ddp_matches_single_process(world, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 4: the same loss curve as one process."""
    raw = raw_config(world, tmp_path / "ddp", optim={"max_steps": 3}, student={"arch": {**STUDENT_ARCH, **NO_DROPOUT}})
    path = tmp_path / "ddp.toml"
    path.write_text(dump_toml(config_from_dict(raw)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "audioembed", "distill", "-c", str(path), "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw["run"]["output_dir"] = str(tmp_path / "single")
    with single_thread():
        Trainer(config_from_dict(raw), progress=False, warn=lambda m: None).run()
    ddp, single = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["teachers"]["music"]["samples"] == b["teachers"]["music"]["samples"]
    wa, wb = student_weights(tmp_path / "ddp" / "student"), student_weights(tmp_path / "single" / "student")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4


def test_normalized_targets_are_centred_unit_rms_and_resume_exactly(world, tmp_path):
    """loss.normalize_targets: the targets the loss sees on the statistics batches have mean 0
    per dimension and RMS 1 per layer; cached and online teachers give the same statistics; a
    resumed run reuses the checkpoint's statistics and ends with the same weights."""
    loss = {"normalize_targets": True, "target_stats_steps": 2}
    with single_thread():
        online = make_trainer(world, tmp_path / "online", loss=loss)
        stats = online.estimate_target_stats()
        loader = BatchLoader(online.items, online._sampler(), online._rates(), start_step=0, max_steps=2, workers=0)
        online.target_stats = stats
        for teacher in online.teachers:
            mean, scale = stats[teacher.spec.name]
            assert mean.shape == (len(teacher.layers), teacher.hidden_size) and scale.shape == (len(teacher.layers), 1)
            frames = []
            for step in range(2):
                for batch in loader.load_step(step).micro_batches:
                    raw, lengths = online._raw_targets(teacher, batch)
                    normed = (raw - mean[None, :, None, :]) / scale[None, :, :, None]
                    frames += [normed[b, :, : int(n)] for b, n in enumerate(lengths)]
            x = torch.cat(frames, dim=1)  # (K, frames, D)
            assert x.mean(dim=1).abs().max() < 1e-4
            assert torch.allclose(x.pow(2).mean(dim=(1, 2)), torch.ones(len(teacher.layers)), atol=1e-3)
            assert mean.abs().max() > 0.05  # the raw targets were not centred already

        # statistics from the cache (its own tiling of crops, so close to, not equal to, the online ones)
        from audioembed.distill.cache import prepare_teacher_cache

        raw = raw_config(world, tmp_path / "cached", loss=loss, data={"cache_dir": str(tmp_path / "cache")})
        prepare_teacher_cache(config_from_dict(raw), progress=False, warn=lambda m: None)
        cached = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
        from_cache = cached.estimate_target_stats()
        assert set(from_cache) == set(stats)
        for name, (mean, scale) in from_cache.items():
            assert mean.shape == stats[name][0].shape and torch.allclose(scale, stats[name][1], rtol=0.25)

        make_trainer(world, tmp_path / "straight", loss=loss).run()
        make_trainer(world, tmp_path / "resumed", loss=loss).run(until_step=3)
        second = make_trainer(world, tmp_path / "resumed", loss=loss)
        second.estimate_target_stats = None  # resuming must take the checkpoint's statistics
        second.run()
    a = student_weights(tmp_path / "straight" / "student")
    b = student_weights(tmp_path / "resumed" / "student")
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "straight" / "student" / "audioembed_student.json").read_text())
    assert meta["training"]["normalize_targets"] is True
