"""Downstream runner end to end: learnability, cache reuse, paired few-shot subsets, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import audio_gen

from audioembed.cli import main
from audioembed.downstream import DownstreamConfig, run_downstream
from audioembed.featurizer import Featurizer
from audioembed.fewshot import draw_subset, make_folds
from audioembed.tasks import Example, TaskKind

PITCHES = {"low": 220.0, "mid": 440.0, "high": 880.0, "top": 1760.0}


@pytest.fixture(scope="module")
def tone_manifest(tmp_path_factory):
    """A task whose label is plainly audible: the octave of a noisy tone (4 classes x 12)."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    rows = ["path,label,shuffled,speaker"]
    labels = [lab for lab in PITCHES for _ in range(12)]
    shuffled = list(rng.permutation(labels))
    for i, label in enumerate(labels):
        seconds = float(rng.uniform(0.4, 0.9))
        sig = audio_gen.tone(PITCHES[label] * float(rng.uniform(0.99, 1.01)), seconds, 16000, amp=0.4)
        sig = sig + 0.05 * audio_gen.noise(seconds, 16000, seed=i)
        audio_gen.write_audio(root / f"t{i:02d}.wav", sig, 16000)
        rows.append(f"t{i:02d}.wav,{label},{shuffled[i]},spk{i % 5}")
    (root / "tones.csv").write_text("\n".join(rows) + "\n")
    return root / "tones.csv"


def _run(manifest, tmp_path, **kw):
    base = dict(task="classify", upstream="mfcc", data=str(manifest), seeds=2, folds=4, max_epochs=60,
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return run_downstream(DownstreamConfig(**base), tmp_path / "results", progress=False)


def test_learnable_label_vs_shuffled_control(tone_manifest, tmp_path):
    real = _run(tone_manifest, tmp_path)
    control = _run(tone_manifest, tmp_path, task_options={"label_column": "shuffled"})
    acc = real["results"]["all"]["summary"]["accuracy"]["mean"]
    chance = control["results"]["all"]["summary"]["accuracy"]["mean"]
    assert acc >= 0.85, acc
    assert chance <= 0.5, chance  # 4 classes: chance is 0.25
    # speaker-independent folds: no speaker in both train and test
    assert len(real["data"]["folds"]) == 4


def test_second_run_reuses_cached_features(tone_manifest, tmp_path, monkeypatch):
    first = _run(tone_manifest, tmp_path, seeds=1)
    assert first["data"]["features_extracted"] == 48
    import audioembed_plugins.dsp as dsp

    def boom(*args, **kwargs):
        raise AssertionError("the upstream ran again")

    monkeypatch.setattr(dsp.MfccUpstream, "forward", boom)
    second = _run(tone_manifest, tmp_path, seeds=1, probe="mlp")
    assert second["data"]["features_extracted"] == 0 and second["data"]["features_from_cache"] == 48


def test_fewshot_subsets_paired_and_reproducible(tone_manifest, tmp_path):
    a = _run(tone_manifest, tmp_path, shots=(2, None), seeds=3)
    b = _run(tone_manifest, tmp_path, shots=(2, None), seeds=3, upstream="fbank")
    again = _run(tone_manifest, tmp_path, shots=(2, None), seeds=3)
    for seed in range(3):
        ids_a = a["results"]["2"]["per_seed"][seed]["subset_ids"]
        assert ids_a == b["results"]["2"]["per_seed"][seed]["subset_ids"]  # same subset for every upstream
        assert all(len(ids) == 2 * 4 for ids in ids_a.values())  # 2 shots x 4 classes per fold
    assert a["results"]["2"]["per_seed"][0]["subset_ids"] != a["results"]["2"]["per_seed"][1]["subset_ids"]
    assert a["results"]["2"]["summary"] == again["results"]["2"]["summary"]  # same seed, same numbers
    s = a["results"]["2"]["summary"]["accuracy"]
    assert s["n"] == 3 and s["ci_low"] <= s["mean"] <= s["ci_high"]
    weights = a["results"]["all"]["per_seed"][0]["layer_weights"]
    assert weights == pytest.approx([1.0])  # one-layer upstream


def test_centroid_probe_and_cli_and_report(tone_manifest, tmp_path):
    out = tmp_path / "results"
    runner = CliRunner()
    result = runner.invoke(main, ["downstream", "classify", "-u", "mfcc", "--data", str(tone_manifest), "--shots", "1,4",
                                  "--seeds", "2", "--probe", "centroid", "--cache-dir", str(tmp_path / "c"),
                                  "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "| 1 |" in result.output and "| 4 |" in result.output
    files = list(out.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["results"]["4"]["summary"]["accuracy"]["mean"] > 0.6
    result = runner.invoke(main, ["report", str(out), "-o", str(tmp_path / "report.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert "| classify | accuracy |" in text and "fewshot_classify.png" in text
    assert (tmp_path / "report_plots" / "fewshot_classify.png").stat().st_size > 1000


def test_featurizer_uniform_start_and_shapes():
    feat = Featurizer([0, 2, 5])
    assert torch.allclose(feat.normalized_weights(), torch.full((3,), 1 / 3))
    pooled = torch.randn(3, 4, 8)
    assert torch.allclose(feat(pooled), pooled.mean(0), atol=1e-6)
    frames = torch.randn(3, 2, 7, 8)
    assert feat(frames).shape == (2, 7, 8)
    live = [torch.randn(2, 7, 8) for _ in range(6)]
    assert torch.allclose(feat.from_hidden_states(live), (live[0] + live[2] + live[5]) / 3, atol=1e-6)
    assert feat.layer_weights() == pytest.approx([1 / 3] * 3)


def test_multilabel_greedy_cover_and_group_folds():
    tags = [("a",), ("a", "b"), ("c",), ("a",), ("b", "c"), ("a",), ("c",), ("a", "c")]
    ex = [Example(id=f"x{i}", path=f"/x{i}", target=t, group=f"g{i % 4}") for i, t in enumerate(tags)]
    subset = draw_subset(ex, range(len(ex)), TaskKind.MULTILABEL, 2, seed=0)
    counts = {t: sum(t in ex[i].target for i in subset) for t in "abc"}
    assert all(c >= 2 for c in counts.values()), counts
    assert draw_subset(ex, range(len(ex)), TaskKind.MULTILABEL, 2, seed=0) == subset
    cls = [Example(id=f"y{i}", path=f"/y{i}", target="ab"[i % 2], group=f"s{i % 6}") for i in range(24)]
    for fold in make_folds(cls, TaskKind.CLASSIFICATION, num_folds=3).folds:
        train_groups = {cls[i].group for i in fold.train}
        assert not train_groups & {cls[i].group for i in fold.test}
        assert not set(fold.train) & set(fold.test) and not set(fold.dev) & set(fold.test)
