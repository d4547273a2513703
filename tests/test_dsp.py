"""The weight-free DSP upstreams: shapes, frame counts, batching, determinism, windowing."""

from __future__ import annotations

import math

import pytest
import torch

from audioembed import Upstream
from audioembed.registry import get_registry, load_upstream
from audioembed_plugins import dsp

SR = 16000
NAMES = ("fbank", "logmel", "mfcc")
DIMS = {"fbank": 80, "logmel": 128, "mfcc": 39}


@pytest.fixture(scope="module", params=NAMES)
def upstream(request) -> Upstream:
    return load_upstream(request.param)


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g)


def _run(up: Upstream, wav: torch.Tensor) -> torch.Tensor:
    out = up(wav[None], torch.tensor([wav.numel()]))
    return out.hidden_states[0][0, : int(out.lengths[0])]


def test_registered_with_declared_attributes():
    reg = get_registry()
    for name in NAMES:
        entry = reg.upstreams[name]
        assert entry.plugin == "dsp"
        assert entry.distribution == "audioembed"
        up = entry.spec.load(None)
        assert up.name == name
        assert up.sample_rate == SR and up.hop_length == 160 and up.frame_rate == 100
        assert up.num_layers == 1 and up.hidden_size == DIMS[name]
        assert up.source is None
        assert up.context_samples > 0 and up.context_samples % up.hop_length == 0
        assert up.describe()["sample_rate"] == SR


def test_weight_free_upstreams_reject_a_model():
    with pytest.raises(Exception, match="takes no --model"):
        load_upstream("fbank", "some/model")


def test_num_frames_formulas():
    fb, lm, mf = dsp.FbankUpstream(), dsp.LogMelUpstream(), dsp.MfccUpstream()
    for n, expected in [(0, -2), (399, 0), (400, 1), (401, 1), (559, 1), (560, 2), (16000, 98)]:
        assert fb.num_frames(n) == expected
        assert mf.num_frames(n) == expected
    for n in (0, 1, 159, 160, 400, 16000):
        assert lm.num_frames(n) == n // 160 + 1


@pytest.mark.parametrize(
    "n", [1, 100, 256, 257, 399, 400, 401, 559, 560, 561, 719, 720, 1000, 4321, 16000, 16001]
)
def test_output_matches_num_frames(upstream, n):
    out = upstream(_noise(n)[None], torch.tensor([n]))
    assert len(out.hidden_states) == upstream.num_layers == 1
    expected = max(upstream.num_frames(n), 0)
    assert int(out.lengths[0]) == expected
    assert out.hidden_states[0].shape == (1, expected, upstream.hidden_size)
    assert torch.isfinite(out.hidden_states[0]).all()


def test_batched_equals_single_exactly(upstream):
    lengths = [16000, 7000, 401, 300, 12345]
    wavs = [_noise(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(wavs), max(lengths))
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    batch[1, lengths[1] :] = 5.0  # garbage in the padding must not leak in
    out = upstream(batch, torch.tensor(lengths))
    h = out.hidden_states[0]
    assert h.shape[:2] == (len(wavs), max(max(upstream.num_frames(n), 0) for n in lengths))
    for i, w in enumerate(wavs):
        single = _run(upstream, w)
        t = int(out.lengths[i])
        assert t == single.shape[0] == max(upstream.num_frames(lengths[i]), 0)
        assert torch.equal(h[i, :t], single)
        assert (h[i, t:] == 0).all()  # padding frames are zeros


def test_deterministic(upstream):
    w = _noise(8000, seed=3)
    assert torch.equal(_run(upstream, w), _run(upstream, w.clone()))


@pytest.mark.parametrize("name", ["fbank", "logmel"])
def test_tone_energy_lands_in_expected_mel_band(name):
    up = load_upstream(name)
    freq = 1000.0
    t = torch.arange(SR) / SR
    feats = _run(up, 0.5 * torch.sin(2 * math.pi * freq * t))
    peak = int(feats.mean(0).argmax())
    # the band whose filter has the largest weight at the tone's FFT bin
    fft_bin = round(freq / (SR / 512))
    expected = int(up.mel[fft_bin].argmax())
    assert abs(peak - expected) <= 1
    # and that band is far above the average band
    assert feats.mean(0)[peak] > feats.mean() + 5


def test_mfcc_has_static_delta_and_delta_delta():
    up = load_upstream("mfcc")
    w = _noise(16000, seed=5)
    feats = _run(up, w)
    static, delta, delta2 = feats[:, :13], feats[:, 13:26], feats[:, 26:]
    # interior frames: the +-2 regression on the static (then delta) coefficients
    t = static.shape[0]
    k = torch.arange(1, 3, dtype=torch.float32)
    mid = t // 2
    manual = sum(kk * (static[mid + int(kk)] - static[mid - int(kk)]) for kk in k) / 10
    assert torch.allclose(delta[mid], manual, atol=1e-5)
    manual2 = sum(kk * (delta[mid + int(kk)] - delta[mid - int(kk)]) for kk in k) / 10
    assert torch.allclose(delta2[mid], manual2, atol=1e-5)
    # edge replication: the first delta uses frame 0 in place of frames -1 and -2
    manual0 = (1 * (static[1] - static[0]) + 2 * (static[2] - static[0])) / 10
    assert torch.allclose(delta[0], manual0, atol=1e-5)


def _windowed(up: Upstream, wav: torch.Tensor, window: int, context: int) -> torch.Tensor:
    """What the core does for long files: windows [s, s+W), each with ``context`` samples
    either side (clipped at the file ends), keeping the frames that belong to the window."""
    hop = up.hop_length
    n = wav.numel()
    total = up.num_frames(n)
    kept = []
    for s in range(0, n, window):
        a = max(0, s - context)
        b = min(n, s + window + context)
        assert a % hop == 0
        feats = _run(up, wav[a:b])
        first = s // hop
        last = total if s + window >= n else min((s + window) // hop, total)  # the final window keeps the tail
        g0, g1 = first - a // hop, last - a // hop
        if g1 > feats.shape[0]:  # too little right context: the segment lacks frames
            feats = torch.cat([feats, feats.new_full((g1 - feats.shape[0], feats.shape[1]), float("nan"))])
        kept.append(feats[g0:g1])
    return torch.cat(kept)


def test_windowed_with_context_equals_whole(upstream):
    n = int(7.3 * SR)
    t = torch.arange(n) / SR
    wav = _noise(n, seed=11) + 0.3 * torch.sin(2 * math.pi * 440 * t) * torch.sin(2 * math.pi * 0.7 * t)
    whole = _run(upstream, wav)
    assert whole.shape[0] == upstream.num_frames(n)

    C = upstream.context_samples
    win = _windowed(upstream, wav, SR, C)
    assert win.shape == whole.shape
    assert (win - whole).abs().max() <= 1e-4

    # without context the windows differ: the test above really checks the margin
    no_ctx = _windowed(upstream, wav, SR, 0)
    assert no_ctx.shape == whole.shape
    assert not ((no_ctx - whole).abs().max() <= 1e-4)  # NaN (missing frames) also counts as different

    # and the declared margin is tight at hop resolution: one hop less is not enough
    less = _windowed(upstream, wav, SR, C - upstream.hop_length)
    assert not ((less - whole).abs().max() <= 1e-4)
