"""Every built-in task trains end to end on tiny generated data in its own layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import audio_gen
from tiny_models import make_tiny_hf

from audioembed import FeatureReader
from audioembed.downstream import DownstreamConfig, run_downstream


def _clip(path: Path, freq: float, seed: int, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sig = audio_gen.tone(freq, seconds, 16000, amp=0.4) + 0.05 * audio_gen.noise(seconds, 16000, seed=seed)
    audio_gen.write_audio(path, sig, 16000)


def _emotion(root: Path) -> Path:  # CREMA-D file names: actor_sentence_emotion_level
    for actor in (1001, 1002, 1003):
        for k, (emotion, freq) in enumerate((("ANG", 300.0), ("SAD", 900.0))):
            for take, sentence in enumerate(("DFA", "IEO")):
                _clip(root / f"{actor}_{sentence}_{emotion}_XX.wav", freq, actor + 10 * k + take)
    return root


def _genre(root: Path) -> Path:  # GTZAN: genres/<genre>/<genre>.NNNNN.wav
    for k, (genre, freq) in enumerate((("blues", 250.0), ("metal", 1200.0))):
        for i in range(6):
            _clip(root / "genres" / genre / f"{genre}.{i:05d}.wav", freq, 100 * k + i)
    return root


def _key(root: Path) -> Path:  # GiantSteps: audio/N.LOFI.wav + annotations/key/N.LOFI.key
    for i in range(12):
        key, freq = (("C major", 262.0), ("Eb minor", 311.0))[i % 2]
        _clip(root / "audio" / f"{i}.LOFI.wav", freq, i)
        (root / "annotations" / "key").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "key" / f"{i}.LOFI.key").write_text(key + "\n")
    return root


def _tagging(root: Path) -> Path:  # manifest with a tags column
    rows = ["path,tags"]
    for i in range(15):
        tags = ["drums", "guitar;drums", "piano"][i % 3]
        _clip(root / f"c{i}.wav", 200.0 + 300.0 * (i % 3), i)
        rows.append(f"c{i}.wav,{tags}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return root / "tags.csv"


def _asr(root: Path) -> Path:  # manifest with transcripts
    rows = ["path,transcript,speaker"]
    words = ["yes", "no", "yes no", "no no", "yes yes"]
    for i in range(15):
        _clip(root / f"u{i}.wav", 300.0 + 50 * (i % 5), i, seconds=0.8)
        rows.append(f"u{i}.wav,{words[i % 5]},s{i % 3}")
    (root / "asr.csv").write_text("\n".join(rows) + "\n")
    return root / "asr.csv"


def _speakers(root: Path) -> Path:
    rows = ["path,speaker"]
    for i in range(12):
        _clip(root / f"s{i}.wav", (200.0, 700.0, 1500.0)[i % 3], i)
        rows.append(f"s{i}.wav,spk{i % 3}")
    (root / "spk.csv").write_text("\n".join(rows) + "\n")
    return root / "spk.csv"


CASES = {
    "emotion": (_emotion, {"accuracy", "uar"}),
    "genre": (_genre, {"accuracy", "macro_f1"}),
    "key": (_key, {"mirex", "accuracy"}),
    "tagging": (_tagging, {"roc_auc", "pr_auc"}),
    "speaker_id": (_speakers, {"accuracy", "macro_f1"}),
    "asr": (_asr, {"wer", "cer"}),
    "asr-conv": (_asr, {"wer", "cer"}),
    "genre-chunks": (_genre, {"accuracy", "macro_f1"}),
}


@pytest.mark.parametrize("task", list(CASES))
def test_task_end_to_end(task, tmp_path):
    make_data, metrics = CASES[task]
    data = make_data(tmp_path / "data")
    chunk, ctc_head = None, "lstm"
    if task == "asr-conv":
        task, ctc_head = "asr", "conv"
    if task == "genre-chunks":  # chunk-level training: 0.2 s chunks of 0.5 s clips, clip-level scores
        task, chunk = "genre", 0.2
    upstream, model = "mfcc", None
    if task == "asr":  # frame-level path with a neural upstream
        upstream, model = "hubert", str(make_tiny_hf(tmp_path / "hubert", kind="hubert"))
    config = DownstreamConfig(task=task, upstream=upstream, model=model, data=str(data), shots=(2, None), seeds=2,
                       folds=3, max_epochs=4, chunk_seconds=chunk, ctc_head=ctc_head, cache_dir=str(tmp_path / "cache"))
    result = run_downstream(config, tmp_path / "results", progress=False)
    for shots in ("2", "all"):
        summary = result["results"][shots]["summary"]
        assert set(summary) == metrics
        assert all(np.isfinite(s["mean"]) for s in summary.values())
        assert len(result["results"][shots]["per_seed"]) == 2
    assert result["data"]["examples"] > 0 and not result["data"]["problems"]
    if task == "emotion":  # speaker-independent folds from CREMA-D actor ids
        assert len(result["data"]["folds"]) == 3
    if task == "key":
        assert result["labels"][0] == "C major" and len(result["labels"]) == 24
    assert len(list((tmp_path / "results").glob("*.json"))) == 1
    if task == "asr":  # the result names the head that was trained, not the unused --probe
        assert list((tmp_path / "results").glob(f"*_ctc-{ctc_head}.json"))
    if chunk:
        (store,) = (tmp_path / "cache").glob("*-chunks-*.h5")
        with FeatureReader(store) as feats:
            assert feats.get(feats.ids[0], 0).shape[0] == 3  # 0.5 s clip -> 3 chunks of <= 0.2 s
