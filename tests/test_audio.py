"""Decoding, mixing down and resampling on real files in real formats."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import soxr

from audio_gen import (
    chirp,
    make_corpus,
    noise,
    tone,
    write_audio,
    write_corrupt,
    write_empty,
    write_nan,
    write_too_short,
)
from audioembed.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    AudioInfo,
    load,
    probe,
    resampled_length,
    stream,
)

RATE_PAIRS = [
    (8000, 16000),
    (44100, 16000),
    (22050, 24000),
    (48000, 16000),
    (16000, 8000),
    (32000, 16000),
    (44100, 48000),
    (16000, 24000),
    (12345, 16000),
]


def _soxr_stream_len(x: np.ndarray, src: int, dst: int, chunk: int) -> int:
    rs = soxr.ResampleStream(src, dst, 1, dtype="float32", quality="HQ")
    n = sum(len(rs.resample_chunk(x[i : i + chunk], last=False)) for i in range(0, len(x), chunk))
    return n + len(rs.resample_chunk(np.zeros(0, np.float32), last=True))


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# --- resampled_length ------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", RATE_PAIRS)
def test_resampled_length_matches_soxr_stream(src, dst):
    rng = np.random.default_rng(src + dst)
    lengths = list(range(0, 30)) + [int(v) for v in rng.integers(30, 60_000, 8)]
    for n in lengths:
        x = rng.standard_normal(n).astype(np.float32)
        for chunk in {max(1, n // 3 + 1), 7}:
            assert _soxr_stream_len(x, src, dst, chunk) == resampled_length(n, src, dst), (n, chunk)


def test_resampled_length_formula_edges():
    assert resampled_length(0, 44100, 16000) == 0
    assert resampled_length(123, 16000, 16000) == 123
    # round half up: 1 sample at 2:1 down gives 1, 3 gives 2
    assert resampled_length(1, 16000, 8000) == 1
    assert resampled_length(3, 16000, 8000) == 2
    assert resampled_length(1, 44100, 16000) == 0  # 0.36 rounds to 0
    assert resampled_length(16000 * 3600, 16000, 44100) == 44100 * 3600
    # exact integer arithmetic for lengths where floats would be at risk
    assert resampled_length(10**15 + 1, 16000, 8000) == 5 * 10**14 + 1
    with pytest.raises(ValueError):
        resampled_length(-1, 16000, 8000)
    with pytest.raises(ValueError):
        resampled_length(10, 0, 8000)


@pytest.mark.parametrize("src,dst", RATE_PAIRS)
def test_file_output_length_is_exact(tmp_path, src, dst):
    n = int(src * 0.37) + 3  # deliberately not a round number of samples
    p = write_audio(tmp_path / "x.wav", noise(n / src, src, seed=1)[:n], src)
    info = probe(p)
    assert info.num_samples == n
    y = load(p, dst)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == resampled_length(n, src, dst)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 50])
def test_tiny_inputs(tmp_path, n):
    for src, dst in [(44100, 16000), (8000, 16000), (48000, 16000)]:
        p = write_too_short(tmp_path / f"short_{src}.wav", src, n_samples=n)
        y = load(p, dst)
        assert len(y) == resampled_length(n, src, dst)
        assert np.array_equal(np.concatenate(list(stream(p, dst)) or [np.zeros(0, np.float32)]), y)


# --- content -----------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", [(44100, 16000), (8000, 16000), (22050, 24000), (48000, 16000)])
def test_tone_keeps_frequency_and_level(tmp_path, src, dst):
    p = write_audio(tmp_path / "tone.wav", tone(440.0, 1.0, src, amp=0.5), src, subtype="FLOAT")
    y = load(p, dst)
    assert abs(_peak_hz(y, dst) - 440.0) <= 2.0
    mid = y[len(y) // 4 : 3 * len(y) // 4]  # away from the filter's edge transients
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_upsampling_adds_no_images(tmp_path):
    p = write_audio(tmp_path / "t.wav", tone(3000.0, 1.0, 8000), 8000, subtype="FLOAT")
    y = load(p, 16000)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[freqs > 4100].max() < 1e-3 * spec.max()  # image at 5 kHz suppressed


def test_downsampling_removes_content_above_nyquist(tmp_path):
    sr = 44100
    x = tone(1000.0, 1.0, sr, amp=0.3) + tone(12000.0, 1.0, sr, amp=0.3)
    p = write_audio(tmp_path / "two.wav", x, sr, subtype="FLOAT")
    y = load(p, 16000)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    # 12 kHz would alias to 4 kHz if not filtered out
    assert spec[np.abs(freqs - 4000) < 50].max() < 1e-3 * spec.max()
    assert abs(_peak_hz(y, 16000) - 1000.0) <= 2.0


def test_same_rate_is_not_resampled(tmp_path):
    x = chirp(100.0, 3000.0, 0.8, 16000)
    p = write_audio(tmp_path / "c.wav", x, 16000, subtype="FLOAT")
    assert np.array_equal(load(p, 16000), x)


def test_stereo_is_averaged(tmp_path):
    sr = 16000
    left, right = tone(300.0, 0.5, sr), noise(0.5, sr, seed=3)
    p = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    info = probe(p)
    assert info.channels == 2
    y = load(p, sr)
    np.testing.assert_allclose(y, (left + right) / 2, rtol=0, atol=1e-7)
    # identical channels mix down to the signal itself (mean, not sum)
    p2 = write_audio(tmp_path / "dup.wav", np.stack([left] * 4, axis=1), sr, subtype="FLOAT")
    np.testing.assert_allclose(load(p2, sr), left, rtol=0, atol=1e-7)
    # mixing happens before resampling: same as resampling the mono mix
    p3 = write_audio(tmp_path / "mono_mix.wav", (left + right) / 2, sr, subtype="FLOAT")
    np.testing.assert_allclose(load(p, 24000), load(p3, 24000), rtol=0, atol=1e-6)


# --- streaming ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return make_corpus(d, 8, seed=7, min_s=0.6, max_s=1.6)


@pytest.mark.parametrize("dst", [16000, 24000])
def test_stream_equals_load_and_block_size_does_not_matter(corpus, dst):
    for p in corpus:
        info = probe(p)
        whole = load(p, dst)
        assert len(whole) == resampled_length(info.num_samples, info.sample_rate, dst)
        small = np.concatenate(list(stream(p, dst, block_seconds=0.1)))
        big = np.concatenate(list(stream(p, dst, block_seconds=100)))
        odd = np.concatenate(list(stream(p, dst, block_seconds=0.0123)))
        # soxr's streaming state makes chunking invisible: bitwise identical
        assert np.array_equal(small, whole), p
        assert np.array_equal(big, whole), p
        assert np.array_equal(odd, whole), p


def test_stream_yields_bounded_blocks(tmp_path):
    sr, dst = 44100, 16000
    p = write_audio(tmp_path / "long.flac", noise(3.0, sr, seed=5), sr)
    blocks = list(stream(p, dst, block_seconds=0.25))
    assert len(blocks) >= 12
    assert all(b.dtype == np.float32 and b.ndim == 1 and b.size > 0 for b in blocks)
    # a block is about block_seconds of output; the final flush adds at most the filter delay
    assert max(len(b) for b in blocks) < 2 * 0.25 * dst


def test_corpus_is_varied_and_deterministic(tmp_path):
    a = make_corpus(tmp_path / "a", 12, seed=1)
    b = make_corpus(tmp_path / "b", 12, seed=1)
    infos = [probe(p) for p in a]
    assert {i.sample_rate for i in infos} == {8000, 16000, 22050, 44100}
    assert {os.path.splitext(p)[1] for p in a} == {".wav", ".flac", ".ogg"}
    assert {i.channels for i in infos} == {1, 2}
    assert len({i.num_samples for i in infos}) > 6
    for pa, pb in zip(a, b):
        assert np.array_equal(sf.read(pa)[0], sf.read(pb)[0])


# --- formats -----------------------------------------------------------------------------


_LOSSLESS = ["wav", "flac", "aiff", "au", "w64", "caf"]
_LOSSY = ["ogg", "oga", "opus", "mp3"]


@pytest.mark.parametrize("ext", _LOSSLESS + _LOSSY)
def test_formats_decode(tmp_path, ext):
    assert f".{ext}" in AUDIO_EXTENSIONS
    sr = 48000 if ext == "opus" else 22050  # Opus only takes a few rates
    x = tone(440.0, 0.7, sr, amp=0.4) + tone(1234.0, 0.7, sr, amp=0.2)
    path = tmp_path / f"f.{ext}"
    try:
        write_audio(path, x, sr)
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        if ext in _LOSSLESS:
            raise
        pytest.skip(f"libsndfile here cannot write {ext}: {err}")
    info = probe(path)
    assert (info.sample_rate, info.channels) == (sr, 1)
    assert info.duration == pytest.approx(0.7, abs=0.06)
    y = load(path, 16000)
    assert len(y) == resampled_length(info.num_samples, sr, 16000)
    if ext in _LOSSLESS:
        assert info.num_samples == len(x)
        np.testing.assert_allclose(load(path, sr), x, atol=1e-4)  # 16-bit quantisation
    else:
        assert abs(_peak_hz(y, 16000) - 440.0) <= 3.0
        ref = load(write_audio(tmp_path / "ref.wav", x, sr, subtype="FLOAT"), 16000)
        if len(ref) == len(y):  # lossy codecs may pad; compare shapes only when aligned
            assert np.corrcoef(ref, y)[0, 1] > 0.95


# --- bad files ---------------------------------------------------------------------------


def _assert_audio_error(path, fn, needle):
    with pytest.raises(AudioError) as info:
        fn(path)
    err = info.value
    assert err.path == os.fspath(path)
    assert str(err).startswith(f"{os.fspath(path)}: ")
    assert needle in err.reason and needle in str(err)
    return err


@pytest.mark.parametrize(
    "fn",
    [probe, lambda p: load(p, 16000), lambda p: stream(p, 16000)],
    ids=["probe", "load", "stream"],
)
def test_header_problems_raise_audio_error(tmp_path, fn):
    _assert_audio_error(tmp_path / "missing.wav", fn, "not found")
    _assert_audio_error(write_corrupt(tmp_path / "corrupt.wav"), fn, "cannot decode")
    _assert_audio_error(write_empty(tmp_path / "empty.wav"), fn, "empty file")
    os.mkdir(tmp_path / "folder.wav")
    _assert_audio_error(tmp_path / "folder.wav", fn, "directory")


def test_stream_checks_the_header_before_iteration(tmp_path):
    # errors surface at the call, not at the first next(), so callers can report early
    with pytest.raises(AudioError):
        stream(write_corrupt(tmp_path / "c.wav"), 16000)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dst", [16000, 8000])
def test_nan_and_inf_samples(tmp_path, value, dst):
    p = write_nan(tmp_path / "bad.wav", 16000, value=value)
    assert probe(p).num_samples > 0  # the header is fine; the samples are not
    _assert_audio_error(p, lambda q: load(q, dst), "contains NaN or Inf samples")


def test_truncated_flac_raises(tmp_path):
    p = write_audio(tmp_path / "full.flac", noise(1.0, 16000, seed=2), 16000)
    data = open(p, "rb").read()
    bad = tmp_path / "trunc.flac"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as info:
        load(bad, 16000)
    assert str(bad) in str(info.value) and "truncated" in info.value.reason


def _cut(src, dst, keep: int):
    dst.write_bytes(open(src, "rb").read()[:keep])
    return dst


def test_truncated_wav_raises(tmp_path):
    # libsndfile reads a cut WAV as a shorter file; the data chunk's declared size says otherwise
    p = write_audio(tmp_path / "full.wav", noise(1.0, 16000, seed=3), 16000)
    size = os.path.getsize(p)
    err = _assert_audio_error(_cut(p, tmp_path / "half.wav", size // 2), probe, "truncated")
    assert "16000 frames" in err.reason
    _assert_audio_error(_cut(p, tmp_path / "almost.wav", size - 2), lambda q: load(q, 16000), "truncated")
    # a streaming writer's open length (0xFFFFFFFF) is not a truncation
    data = bytearray(open(p, "rb").read())
    at = data.index(b"data")
    data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    assert probe(tmp_path / "stream.wav").num_samples == 16000


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_truncated_ogg_raises(tmp_path, subtype):
    sr = 48000 if subtype == "OPUS" else 16000
    p = tmp_path / "full.ogg"
    try:
        sf.write(p, np.concatenate([tone(300.0, 4.0, sr), noise(4.0, sr, seed=4)]), sr, format="OGG", subtype=subtype)
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        pytest.skip(f"libsndfile here cannot write Ogg {subtype}: {err}")
    assert probe(p).num_samples == 8 * sr
    data = open(p, "rb").read()
    for keep in (len(data) // 3, len(data) // 2, len(data) - 7):
        _assert_audio_error(_cut(p, tmp_path / f"cut{keep}.ogg", keep), probe, "truncated")
    # cut exactly at a page boundary: every page is whole, but the end-of-stream page is missing
    last_page = data.rindex(b"OggS")
    _assert_audio_error(_cut(p, tmp_path / "nopage.ogg", last_page), probe, "end-of-stream")


def test_too_short_file_still_loads(tmp_path):
    # Too short for a model is the extractor's call, not a decoding error.
    p = write_too_short(tmp_path / "short.wav", 44100, n_samples=50)
    assert probe(p).num_samples == 50
    assert len(load(p, 16000)) == resampled_length(50, 44100, 16000) == 18


def test_audio_error_and_info_basics(tmp_path):
    err = AudioError("/x/y.wav", "boom")
    assert (str(err), err.path, err.reason) == ("/x/y.wav: boom", "/x/y.wav", "boom")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.path, copy.reason) == (str(err), err.path, err.reason)
    assert AudioInfo("a.wav", 16000, 24000, 1).duration == 1.5
    p = write_audio(tmp_path / "a.wav", tone(200.0, 0.5, 8000), 8000)
    assert probe(p) == AudioInfo(str(p), 8000, 4000, 1)
    assert probe(tmp_path / "a.wav").path == str(p)  # PathLike accepted


def test_bad_arguments(tmp_path):
    p = write_audio(tmp_path / "a.wav", tone(200.0, 0.1, 8000), 8000)
    for sr in (0, -16000, 1.5):
        with pytest.raises(ValueError):
            stream(p, sr)
    with pytest.raises(ValueError):
        stream(p, 16000, block_seconds=0)
