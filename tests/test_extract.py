"""End-to-end extraction: files -> upstream -> HDF5, resuming, bad inputs, windows, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audio_gen
from tiny_models import make_tiny_hf, make_tiny_mert

from audioembed import FeatureReader, extract, load_upstream
from audioembed.audio import load
from audioembed.extraction import ExtractionError, Windowing
from audioembed.store import StoreError


def _reference(upstream, path, layer):
    """Hidden states of one whole file, computed directly through the upstream."""
    wav = torch.from_numpy(load(path, upstream.sample_rate))[None]
    with torch.inference_mode():
        out = upstream(wav, torch.tensor([wav.shape[1]]))
    return out.hidden_states[layer][0, : int(out.lengths[0])].numpy()


def test_mfcc_folder_end_to_end(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    summary = extract(small_corpus, "mfcc", out, pooling="mean+std", progress=False)
    assert summary.extracted == 8 and not summary.failed
    upstream = load_upstream("mfcc")
    with FeatureReader(out) as feats:
        assert len(feats) == 8
        assert feats.attrs["upstream"] == "mfcc" and feats.attrs["sample_rate"] == 16000
        for uid in feats.ids:
            info = feats.info(uid)
            ref = _reference(upstream, info.path, 0)
            assert info.num_frames == ref.shape[0] == upstream.num_frames(info.num_samples)
            got = feats.get(uid)
            np.testing.assert_allclose(got[: ref.shape[1]], ref.mean(0), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(got[ref.shape[1] :], ref.std(0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["fbank", "logmel", "mfcc"])
def test_dsp_windowed_equals_whole_file(tmp_path, name):
    path = tmp_path / "long.flac"
    sig = audio_gen.chirp(100.0, 3000.0, 9.3, 22050) + 0.05 * audio_gen.noise(9.3, 22050, seed=3)
    audio_gen.write_audio(path, sig, 22050)
    whole, windowed = tmp_path / "whole.h5", tmp_path / "win.h5"
    extract([path], name, whole, pooling="none", window_seconds=60, progress=False)
    extract([path], name, windowed, pooling="none", window_seconds=1.0, progress=False)
    with FeatureReader(whole) as a, FeatureReader(windowed) as b:
        x, y = a.get("long.flac"), b.get("long.flac")
        assert b.attrs["window_samples"] == 16000
        assert x.shape == y.shape == (load_upstream(name).num_frames(a.info("long.flac").num_samples), x.shape[1])
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_windowing_plan_covers_every_frame_once():
    hubert_like = type("U", (), {})()
    hubert_like.hop_length, hubert_like.sample_rate, hubert_like.context_samples, hubert_like.name = 320, 16000, 3200, "x"
    hubert_like.num_frames = lambda n: (n - 400) // 320 + 1
    win = Windowing(hubert_like, 1.0)
    for total in (400, 16000, 16399, 16401, 40000, 123457, 16000 * 7):
        plan = win.plan(total)
        kept = []
        for seg_start, seg_end, keep_start, keep_end in plan:
            assert seg_start % 320 == 0 and 0 <= seg_start < seg_end <= total
            assert keep_end <= hubert_like.num_frames(seg_end - seg_start)
            kept.extend(range(seg_start // 320 + keep_start, seg_start // 320 + keep_end))
        assert kept == list(range(hubert_like.num_frames(total)))


def test_hubert_windowed_frame_counts_and_batching(tmp_path):
    model_dir = make_tiny_hf(tmp_path / "hubert", kind="hubert", feat_extract_norm="group")
    corpus = tmp_path / "audio"
    paths = audio_gen.make_corpus(corpus, n=6, seed=4, min_s=0.2, max_s=3.0)
    single, batched, windowed = tmp_path / "s.h5", tmp_path / "b.h5", tmp_path / "w.h5"
    common = dict(model=str(model_dir), pooling="none", progress=False)
    extract(corpus, "hubert", single, batch_seconds=0, **common)
    extract(corpus, "hubert", batched, batch_seconds=30, **common)
    extract(corpus, "hubert", windowed, window_seconds=0.5, **common)
    upstream = load_upstream("hubert", model=str(model_dir))
    with FeatureReader(single) as s, FeatureReader(batched) as b, FeatureReader(windowed) as w:
        assert len(s) == len(paths)
        for uid in s.ids:
            n = s.info(uid).num_samples
            for layer in s.layers:
                x, y, z = s.get(uid, layer), b.get(uid, layer), w.get(uid, layer)
                assert x.shape == y.shape == z.shape == (upstream.num_frames(n), upstream.hidden_size)
                assert np.abs(x - y).max() <= 1e-4  # padded batches == one file at a time
            np.testing.assert_allclose(x, _reference(upstream, s.info(uid).path, s.layers[-1]), atol=1e-4)


def test_resampling_to_each_upstream_rate(tmp_path):
    mert_dir = make_tiny_mert(tmp_path / "mert", version="v1")
    path = tmp_path / "tone.wav"
    audio_gen.write_audio(path, audio_gen.tone(440.0, 2.0, 44100), 44100)
    for name, model, rate in (("mfcc", None, 16000), ("mert", str(mert_dir), 24000)):
        out = tmp_path / f"{name}.h5"
        extract([path], name, out, model=model, pooling="none", progress=False)
        with FeatureReader(out) as feats:
            info = feats.info("tone.wav")
            assert feats.attrs["sample_rate"] == rate and info.num_samples == 2 * rate
            upstream = load_upstream(name, model=model)
            assert info.num_frames == upstream.num_frames(2 * rate) == feats.get("tone.wav").shape[0]
    with FeatureReader(tmp_path / "mert.h5") as feats:
        assert feats.attrs["frame_rate"] == pytest.approx(24000 / feats.attrs["hop_length"])


def test_bad_inputs_are_reported_and_skipped(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    audio_gen.write_audio(root / "good.wav", audio_gen.tone(300.0, 0.5, 16000), 16000)
    audio_gen.write_corrupt(root / "corrupt.wav")
    audio_gen.write_empty(root / "empty.wav")
    audio_gen.write_too_short(root / "short.wav", 16000, n_samples=50)
    audio_gen.write_nan(root / "nan.wav", 16000)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,id\n{root / 'good.wav'},good\nin/missing.wav,missing\n")
    out = tmp_path / "f.h5"
    summary = extract([root], "fbank", out, progress=False)
    assert summary.extracted == 1
    assert set(summary.failed) == {"corrupt.wav", "empty.wav", "short.wav", "nan.wav"}
    for uid, reason in summary.failed.items():
        assert str(root / uid) in reason
    assert "NaN" in summary.failed["nan.wav"] and "short" in summary.failed["short.wav"]
    assert "FAILED" in str(summary)
    missing = extract([manifest], "fbank", tmp_path / "g.h5", progress=False)
    assert missing.extracted == 1 and "missing" in missing.failed
    with pytest.raises(ExtractionError, match="corrupt.wav"):
        extract([root], "fbank", tmp_path / "strict.h5", strict=True, progress=False)
    with FeatureReader(out) as feats:
        assert feats.ids == ["good.wav"]


def test_rerun_skips_and_mismatch_is_refused(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    first = extract(small_corpus, "fbank", out, layers="last", progress=False)
    again = extract(small_corpus, "fbank", out, layers="last", progress=False)
    assert first.extracted == 8 and again.extracted == 0 and again.skipped_done == 8
    with pytest.raises(StoreError, match="upstream"):
        extract(small_corpus, "mfcc", out, progress=False)
    with pytest.raises(StoreError, match="pooling"):
        extract(small_corpus, "fbank", out, pooling="none", progress=False)


def test_shards_gather_equals_unsharded(small_corpus, tmp_path):
    from audioembed.store import gather

    whole = tmp_path / "whole.h5"
    extract(small_corpus, "logmel", whole, progress=False)
    sharded = tmp_path / "sh.h5"
    for k in range(2):
        s = extract(small_corpus, "logmel", sharded, shard=(k, 2), progress=False)
        assert 0 < s.extracted < 8
    assert not sharded.exists()
    gathered = tmp_path / "gathered.h5"
    assert gather(sharded, gathered) == 8
    with FeatureReader(whole) as a, FeatureReader(sharded) as b, FeatureReader(gathered) as c:
        assert a.ids == b.ids == c.ids
        for uid in a.ids:
            np.testing.assert_array_equal(a.get(uid), b.get(uid))
            np.testing.assert_array_equal(a.get(uid), c.get(uid))


def test_layers_and_dtype(small_corpus, tmp_path):
    model_dir = make_tiny_hf(tmp_path / "h", kind="wav2vec2", feat_extract_norm="layer")
    out = tmp_path / "f.h5"
    extract(small_corpus, "wav2vec2", out, model=str(model_dir), layers="0,-1", dtype="float16", progress=False)
    with FeatureReader(out) as feats:
        assert feats.layers == [0, feats.attrs["num_layers"] - 1]
        assert feats.get(feats.ids[0], 0).dtype == np.float16
    with pytest.raises(ExtractionError, match="out of range"):
        extract(small_corpus, "wav2vec2", tmp_path / "g.h5", model=str(model_dir), layers="7", progress=False)


def test_chunk_pooling_is_the_mean_of_each_window(tmp_path):
    path = tmp_path / "clip.wav"
    audio_gen.write_audio(path, audio_gen.chirp(200.0, 2000.0, 3.55, 16000), 16000)
    frames, chunks = tmp_path / "frames.h5", tmp_path / "chunks.h5"
    extract([path], "fbank", frames, pooling="none", window_seconds=1.0, progress=False)
    extract([path], "fbank", chunks, pooling="chunks", window_seconds=1.0, progress=False)
    with FeatureReader(frames) as f, FeatureReader(chunks) as c:
        x, rows = f.get("clip.wav"), c.get("clip.wav")
        assert c.info("clip.wav").num_frames == x.shape[0]
        assert rows.shape == (4, x.shape[1])  # windows of 100 frames: 100, 100, 100, rest
        for i in range(4):
            np.testing.assert_allclose(rows[i], x[100 * i : 100 * (i + 1)].mean(0), rtol=1e-5, atol=1e-5)


def test_truncated_files_are_reported_and_skipped(tmp_path, capsys):
    import soundfile as sf

    root = tmp_path / "in"
    root.mkdir()
    audio_gen.write_audio(root / "good.wav", audio_gen.tone(300.0, 0.5, 16000), 16000)
    full_wav = audio_gen.write_audio(tmp_path / "full.wav", audio_gen.noise(1.0, 16000, seed=5), 16000)
    data = open(full_wav, "rb").read()
    (root / "cut.wav").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "full.ogg", audio_gen.noise(6.0, 16000, seed=6), 16000, format="OGG", subtype="VORBIS")
    data = open(tmp_path / "full.ogg", "rb").read()
    (root / "cut.ogg").write_bytes(data[: len(data) // 2])
    summary = extract([root], "fbank", tmp_path / "f.h5", progress=False)
    assert summary.extracted == 1
    assert set(summary.failed) == {"cut.wav", "cut.ogg"}
    for uid, reason in summary.failed.items():
        assert reason.startswith(f"{root / uid}: truncated")
    assert f"audioembed: skipping {root / 'cut.wav'}: truncated" in capsys.readouterr().err


def _poisoned_upstream(value: float):
    """logmel, except that a loud input (peak > 0.9) gets ``value`` in one frame of its last layer."""
    upstream = load_upstream("logmel")
    forward = upstream.forward

    def poisoned(wavs, lengths):
        out = forward(wavs, lengths)
        for row in range(wavs.shape[0]):
            if wavs[row].abs().max() > 0.9:
                out.hidden_states[-1][row, 2] = value
        return out

    upstream.forward = poisoned
    return upstream


@pytest.mark.parametrize("pooling", ["none", "mean", "mean+std", "chunks"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features_are_left_out_and_named(tmp_path, capsys, pooling, value):
    root = tmp_path / "in"
    root.mkdir()
    audio_gen.write_audio(root / "quiet.wav", audio_gen.tone(300.0, 0.5, 16000, amp=0.5), 16000)
    audio_gen.write_audio(root / "loud.wav", audio_gen.tone(300.0, 0.5, 16000, amp=0.95), 16000, subtype="FLOAT")
    out = tmp_path / "f.h5"
    summary = extract([root], _poisoned_upstream(value), out, pooling=pooling, progress=False)
    assert summary.extracted == 1 and list(summary.failed) == ["loud.wav"]
    assert "NaN or Inf features" in summary.failed["loud.wav"] and str(root / "loud.wav") in summary.failed["loud.wav"]
    assert f"audioembed: skipping {root / 'loud.wav'}" in capsys.readouterr().err
    with FeatureReader(out) as feats:
        assert feats.ids == ["quiet.wav"] and list(feats.failed) == ["loud.wav"]
        assert np.isfinite(feats.get("quiet.wav")).all()


def test_float16_overflow_counts_as_non_finite(tmp_path):
    upstream = load_upstream("logmel")
    forward = upstream.forward

    def huge(wavs, lengths):  # finite in float32, beyond float16's range
        out = forward(wavs, lengths)
        out.hidden_states[-1][:] = 1e6
        return out

    upstream.forward = huge
    audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(300.0, 0.5, 16000), 16000)
    fine = extract([tmp_path / "a.wav"], upstream, tmp_path / "f32.h5", dtype="float32", progress=False)
    assert fine.extracted == 1
    half = extract([tmp_path / "a.wav"], upstream, tmp_path / "f16.h5", dtype="float16", progress=False)
    assert half.extracted == 0 and "float16" in half.failed["a.wav"]


def test_frame_level_short_clips_cost_their_bytes_not_whole_chunks(tmp_path):
    import os

    corpus = tmp_path / "in"
    audio_gen.make_corpus(corpus, n=40, seed=4, min_s=0.3, max_s=1.0)
    out = tmp_path / "f.h5"
    extract(corpus, "mfcc", out, pooling="none", progress=False)
    with FeatureReader(out) as feats:
        array_bytes = sum(a.nbytes for uid in feats.ids for a in feats.get_layers(uid).values())
        count = len(feats)
    per_utterance_overhead = 4096  # group, attributes and dataset headers
    assert count == 40
    assert os.path.getsize(out) <= 1.2 * array_bytes + per_utterance_overhead * count


def test_explicit_items_with_unstorable_ids_are_reported(tmp_path):
    from audioembed.inputs import InputItem

    path = audio_gen.write_audio(tmp_path / "a.wav", audio_gen.tone(300.0, 0.5, 16000), 16000)
    items = [InputItem(id="fine", path=str(path)), InputItem(id="nul\x00", path=str(path))]
    summary = extract(items, "fbank", tmp_path / "f.h5", progress=False)
    assert summary.extracted == 1 and len(summary.failed) == 1
    (reason,) = summary.failed.values()
    assert reason == f"{path}: id 'nul\\x00' contains a NUL character, which HDF5 cannot store"


def test_cpu_packs_short_files_into_batches_and_long_windows_run_alone(tmp_path):
    """One forward pass per short file cost more than the model's work on it (docs/benchmarks/short_files_bench.md):
    on CPU short files share padded batches of CPU_BATCH_SECONDS; a window longer than that still runs alone."""
    from audioembed.extraction import CPU_BATCH_SECONDS

    corpus = tmp_path / "in"
    audio_gen.make_corpus(corpus, n=12, seed=5, min_s=0.2, max_s=0.5)
    long_seconds = CPU_BATCH_SECONDS + 3.0
    audio_gen.write_audio(corpus / "long.wav", audio_gen.tone(330.0, long_seconds, 16000), 16000)
    upstream = load_upstream("fbank")
    shapes = []
    upstream.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    summary = extract(corpus, upstream, tmp_path / "f.h5", pooling="none", progress=False)
    assert summary.extracted == 13 and summary.threads is not None  # ran on CPU
    assert len(shapes) < 13 and max(batch for batch, _ in shapes) > 1
    budget = CPU_BATCH_SECONDS * upstream.sample_rate
    long_batches = [(batch, samples) for batch, samples in shapes if samples > budget]
    assert long_batches == [(1, int(long_seconds * 16000))]
    assert all(batch * samples <= budget for batch, samples in shapes if samples <= budget)
    # batched features are those of one file at a time
    alone = extract(corpus, "fbank", tmp_path / "alone.h5", pooling="none", progress=False, batch_seconds=0)
    assert alone.extracted == 13
    with FeatureReader(tmp_path / "f.h5") as batched, FeatureReader(tmp_path / "alone.h5") as single:
        for uid in single.ids:
            np.testing.assert_allclose(batched.get(uid), single.get(uid), atol=1e-4)


def test_each_header_is_read_once(small_corpus, tmp_path, monkeypatch):
    """The input check's header is handed to the decoder, not read again per file."""
    import audioembed.audio
    import audioembed.extraction

    calls = []
    real = audioembed.audio.probe

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(audioembed.audio, "probe", counting)
    monkeypatch.setattr(audioembed.extraction, "probe", counting)
    summary = extract(small_corpus, "fbank", tmp_path / "f.h5", progress=False)
    assert summary.extracted == 8
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 8


def test_decode_queue_is_bounded_by_samples_not_entries():
    """Many short windows may wait for one batch; a single window larger than the bound is still admitted."""
    import queue as queue_module

    from audioembed.extraction import Segment, SegmentQueue

    def segment(samples):
        return Segment(0, np.zeros(samples, np.float32), 0, 1, True)

    short = SegmentQueue(maxsize=1000)
    for _ in range(25):  # 25 x 40 samples: far more than the 8 entries a count-bounded queue took
        short.put(segment(40), timeout=0.01)
    with pytest.raises(queue_module.Full):  # 1000 samples held
        short.put(segment(40), timeout=0.01)
    big = SegmentQueue(maxsize=1000)
    big.put(segment(5000), timeout=0.01)  # an empty queue takes a window of any size
    with pytest.raises(queue_module.Full):
        big.put(segment(1), timeout=0.01)
    assert big.get(timeout=0.01).samples.shape == (5000,)
    big.put(None)  # the end marker holds no samples but is still an entry
    assert big.qsize() > 0 and big.get(timeout=0.01) is None
