"""Evaluation protocol: group folds never silently dropped, official folds, non-finite features,
warnings about untrustworthy splits, pooling, the kNN probe and the recorded protocol."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import audio_gen

from audioembed.cli import main
from audioembed.downstream import DownstreamError, DownstreamConfig, run_downstream
from audioembed.fewshot import FoldError, make_folds
from audioembed.probes import knn_scores
from audioembed.tasks import Example, TaskKind

PITCHES = {"low": 220.0, "mid": 440.0, "high": 880.0}


def _tones(root: Path, count_per_class: int = 8, speakers: int = 3, extra_rows=()) -> Path:
    """Noisy tones whose octave is the label; columns label, speaker, fold (fold = i % 3 + 1)."""
    rng = np.random.default_rng(0)
    rows = ["path,label,speaker,fold"]
    labels = [lab for lab in PITCHES for _ in range(count_per_class)]
    for i, label in enumerate(labels):
        seconds = float(rng.uniform(0.3, 0.6))
        sig = audio_gen.tone(PITCHES[label] * float(rng.uniform(0.99, 1.01)), seconds, 16000, amp=0.4)
        sig = sig + 0.05 * audio_gen.noise(seconds, 16000, seed=i)
        audio_gen.write_audio(root / f"t{i:02d}.wav", sig, 16000)
        rows.append(f"t{i:02d}.wav,{label},spk{i % speakers},{i % 3 + 1}")
    rows += list(extra_rows)
    (root / "tones.csv").write_text("\n".join(rows) + "\n")
    return root / "tones.csv"


@pytest.fixture(scope="module")
def three_speakers(tmp_path_factory):
    return _tones(tmp_path_factory.mktemp("three_speakers"))


def _run(manifest, tmp_path, **kw):
    base = dict(task="classify", upstream="mfcc", data=str(manifest), seeds=2, folds=5, max_epochs=30,
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return run_downstream(DownstreamConfig(**base), tmp_path / "results", progress=False)


# ----------------------------------------------------------------------------- A: group folds


def _examples(groups):
    return [Example(id=f"x{i:02d}", path=f"/x{i}", target="ab"[i % 2], group=g) for i, g in enumerate(groups)]


def test_fewer_groups_than_folds_leaves_one_group_out():
    ex = _examples([f"s{i % 3}" for i in range(30)])
    plan = make_folds(ex, TaskKind.CLASSIFICATION, num_folds=5)
    assert plan.protocol == "leave-one-group-out (3 groups)"
    assert len(plan.folds) == 3
    tested = set()
    for fold in plan.folds:
        test_groups = {ex[i].group for i in fold.test}
        assert len(test_groups) == 1
        assert not test_groups & {ex[i].group for i in fold.train + fold.dev}
        tested |= test_groups
    assert tested == {"s0", "s1", "s2"}


def test_two_groups_and_one_group():
    ex = _examples([f"s{i % 2}" for i in range(30)])
    plan = make_folds(ex, TaskKind.CLASSIFICATION, num_folds=5)
    assert plan.protocol == "leave-one-group-out (2 groups)" and len(plan.folds) == 2
    for fold in plan.folds:
        assert not {ex[i].group for i in fold.test} & {ex[i].group for i in fold.train + fold.dev}
    with pytest.raises(FoldError, match="group-independent folds are impossible"):
        make_folds(_examples(["only"] * 20), TaskKind.CLASSIFICATION, num_folds=5)


def test_protocol_names_each_split_kind():
    many = _examples([f"s{i % 6}" for i in range(30)])
    assert make_folds(many, TaskKind.CLASSIFICATION, 5).protocol == "group k-fold (k=5, by group)"
    plain = _examples([None] * 30)
    assert make_folds(plain, TaskKind.CLASSIFICATION, 5).protocol == "stratified k-fold (k=5)"
    split = [Example(id=f"x{i:02d}", path="/x", target="ab"[i % 2], split="test" if i < 6 else "train")
             for i in range(30)]
    assert make_folds(split, TaskKind.CLASSIFICATION, 5).protocol == "given test split (dev carved from train)"


def test_run_records_and_prints_protocol(three_speakers, tmp_path, capsys):
    result = _run(three_speakers, tmp_path, seeds=1)
    assert result["protocol"]["split"] == "leave-one-group-out (3 groups)"
    assert len(result["data"]["folds"]) == 3
    assert "protocol: leave-one-group-out (3 groups)" in capsys.readouterr().err
    saved = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert saved["protocol"]["split"] == "leave-one-group-out (3 groups)"


# ----------------------------------------------------------------------------- D: official folds


def test_fold_column_tests_each_official_fold(three_speakers, tmp_path):
    result = _run(three_speakers, tmp_path, seeds=1, fold_column="fold")
    assert result["protocol"]["split"] == "official folds (column fold, 3 folds)"
    folds = result["data"]["folds"]
    assert [f["name"] for f in folds] == ["fold-1", "fold-2", "fold-3"]
    assert [f["test"] for f in folds] == [8, 8, 8]  # 24 tones, fold = i % 3 + 1
    items = result["results"]["all"]["per_seed"][0]["test_items"]
    assert sorted(items["ids"]) == sorted(f"t{i:02d}.wav" for i in range(24))  # each tested exactly once
    with pytest.raises(DownstreamError, match="no such column"):
        _run(three_speakers, tmp_path, seeds=1, fold_column="nope")


def test_cli_fold_column(three_speakers, tmp_path):
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["downstream", "classify", "-u", "mfcc", "--data", str(three_speakers),
                                       "--fold-column", "fold", "--seeds", "1", "--max-epochs", "10",
                                       "--cache-dir", str(tmp_path / "c"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "protocol: official folds (column fold, 3 folds)" in result.output


# ----------------------------------------------------------------------------- B: non-finite features


def test_non_finite_cached_features_are_named_and_left_out(three_speakers, tmp_path):
    first = _run(three_speakers, tmp_path, seeds=1)
    assert first["data"]["examples"] == 24
    poisoned = 0
    for path in sorted((tmp_path / "cache").rglob("*.h5")):
        with h5py.File(path, "r+") as h5:
            def poison(name, obj):
                nonlocal poisoned
                if isinstance(obj, h5py.Dataset) and "t05.wav" in name and obj.dtype.kind == "f":
                    data = obj[()]
                    data.flat[0] = np.nan
                    obj[...] = data
                    poisoned += 1
            h5.visititems(poison)
    assert poisoned, "test setup: found no cached features of t05.wav"
    second = _run(three_speakers, tmp_path, seeds=1)
    assert second["data"]["examples"] == 23
    named = [p for p in second["data"]["problems"] if "non-finite" in p]
    assert len(named) == 1 and "t05.wav" in named[0]
    acc = second["results"]["all"]["summary"]["accuracy"]["mean"]
    assert np.isfinite(acc) and acc > 0.6
    assert all(np.isfinite(w) for w in second["results"]["all"]["per_seed"][0]["layer_weights"])


# ----------------------------------------------------------------------------- C: warnings


def test_warnings_for_test_only_label_single_example_and_one_seed(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    manifest = _tones(root, count_per_class=6)
    lines = manifest.read_text().splitlines()
    rows = ["path,label,split"]
    for n, line in enumerate(lines[1:]):
        path, label = line.split(",")[:2]
        split = "test" if n % 6 == 0 or (label == "high" and n % 6 < 3) else "train"
        if label == "high" and split == "train":
            continue  # "high" only in the test part
        rows.append(f"{path},{label},{split}")
    audio_gen.write_audio(root / "lone.wav", audio_gen.tone(3000.0, 0.4, 16000, amp=0.4), 16000)
    rows.append("lone.wav,lone,train")
    manifest.write_text("\n".join(rows) + "\n")
    result = _run(manifest, tmp_path, seeds=1)
    text = " | ".join(result["warnings"])
    assert "only in the test part" in text and "high" in text
    assert "single example: lone" in text
    assert "only 1 seed(s)" in text
    summary = result["results"]["all"]["summary"]["accuracy"]
    assert summary["ci_low"] is None and "not computable" in summary["ci_note"]
    md = next((tmp_path / "results").glob("*.md")).read_text()
    assert "CI not computable" in md and "only in the test part" in md


# ----------------------------------------------------------------------------- E: pooling


def test_mean_std_pooling_is_recorded_and_kept_apart(three_speakers, tmp_path):
    mean = _run(three_speakers, tmp_path, seeds=1)
    both = _run(three_speakers, tmp_path, seeds=1, pool="mean+std")
    assert mean["protocol"]["pooling"] == "mean" and both["protocol"]["pooling"] == "mean+std"
    assert len(list((tmp_path / "results").glob("*.json"))) == 2  # one file each, none overwritten
    with pytest.raises(DownstreamError, match="--pool"):
        _run(three_speakers, tmp_path, seeds=1, pool="max")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.md").read_text()
    assert "pooling: mean+std\n" in text and "pooling: mean\n" in text


# ----------------------------------------------------------------------------- H: kNN probe


def test_knn_scores_by_hand():
    # one layer; class 0 near (1, 0), class 1 near (0, 1)
    x_train = np.array([[[1.0, 0.1]], [[0.9, 0.0]], [[0.0, 1.0]], [[0.1, 0.8]]])
    y = np.array([0, 0, 1, 1])
    x_eval = np.array([[[0.95, 0.05]], [[0.05, 0.9]]])
    scores = knn_scores(x_train, y, x_eval, num_classes=3, neighbours=1)
    assert scores.argmax(axis=1).tolist() == [0, 1]
    assert np.isneginf(scores[:, 2]).all()  # a class without training examples is never predicted


def test_knn_probe_end_to_end_uses_the_same_subsets(three_speakers, tmp_path):
    knn = _run(three_speakers, tmp_path, probe="knn", shots=(2, None))
    centroid = _run(three_speakers, tmp_path, probe="centroid", shots=(2, None))
    for seed in range(2):
        assert (knn["results"]["2"]["per_seed"][seed]["subset_ids"]
                == centroid["results"]["2"]["per_seed"][seed]["subset_ids"])
    assert knn["results"]["all"]["summary"]["accuracy"]["mean"] > 0.8
    assert knn["config"]["probe"] == "knn"


def test_known_dataset_loader_sets_the_official_folds(tmp_path):
    """An ESC-50-layout folder is evaluated on its own folds without any option."""
    root = tmp_path / "ESC-50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rng = np.random.default_rng(1)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(18):
        label = list(PITCHES)[i % 3]
        name = f"{i % 3 + 1}-{i}-A-0.wav"
        sig = audio_gen.tone(PITCHES[label], 0.4, 16000, amp=0.4) + 0.05 * audio_gen.noise(0.4, 16000, seed=i)
        audio_gen.write_audio(root / "audio" / name, sig, 16000)
        rows.append(f"{name},{(i // 3) % 3 + 1},{i % 3},{label},False,{i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    result = run_downstream(DownstreamConfig(task="sound_events", upstream="mfcc", data=str(root), seeds=1, max_epochs=20,
                                      cache_dir=str(tmp_path / "cache")), tmp_path / "results", progress=False)
    assert result["protocol"]["split"] == "official folds (column fold of esc50.csv, 3 folds)"
    assert [f["test"] for f in result["data"]["folds"]] == [6, 6, 6]


# ----------------------------------------------------------------------------- I: one probe runner


def test_downstream_and_dsuperb_share_one_probe_runner():
    import audioembed.downstream as downstream
    import audioembed.dsuperb.evaluate as dsuperb
    import audioembed.probe_runner as runner

    assert downstream.run_fold_loop is runner.run_fold_loop and dsuperb.run_fold_loop is runner.run_fold_loop
    assert downstream.fit_and_score is runner.fit_and_score and dsuperb.fit_and_score is runner.fit_and_score
    assert downstream.EncodedTargets is runner.EncodedTargets and dsuperb.EncodedTargets is runner.EncodedTargets
    # dsuperb's probes now come back with the same per-item predictions as downstream's
    rng = np.random.default_rng(0)
    y = ["a", "b", "c"] * 12
    x = (rng.normal(size=(36, 1, 6)) + np.array([[{"a": 0, "b": 3, "c": 6}[t]] for t in y])[:, :, None]).astype(np.float32)
    config = dsuperb.EvalConfig(upstream="mfcc", folds=3, max_epochs=20)
    probed = dsuperb.probe_instance(x, y, TaskKind.CLASSIFICATION, [0], config)
    items = probed["test_items"]
    assert sorted(items["ids"], key=int) == [str(i) for i in range(36)]
    assert np.mean(items["correct"]) > 0.9 and len(probed["per_fold"]) == 3


def test_seed_free_fits_are_reused_by_later_seeds(three_speakers, tmp_path, monkeypatch):
    """A fit no seed can change (parameter-free probe on the full training set) runs once per
    fold; the later seeds reuse its outcome. K-shot subsets differ per seed and are fitted."""
    import audioembed.downstream as downstream

    calls = []
    real = downstream.fit_and_score

    def counting(*args, **kwargs):
        calls.append(kwargs.get("few_shot"))
        return real(*args, **kwargs)

    monkeypatch.setattr(downstream, "fit_and_score", counting)
    result = _run(three_speakers, tmp_path, probe="centroid", shots=(2, None), seeds=3)
    folds = len(result["data"]["folds"])
    # K-shot: one fit per distinct (fold, subset); two seeds drawing the same subset share one
    drawn = {(fold, tuple(ids)) for s in result["results"]["2"]["per_seed"] for fold, ids in s["subset_ids"].items()}
    assert calls.count(False) == folds and calls.count(True) == len(drawn) > folds
    per_seed = result["results"]["all"]["per_seed"]
    assert len(per_seed) == 3 and all(s["metrics"] == per_seed[0]["metrics"] for s in per_seed)
