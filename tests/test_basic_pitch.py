"""The ``basic_pitch`` upstream: contract, fidelity to basic-pitch 0.4.0's ONNX model, windows.

Golden outputs of the reference (its ONNX model under onnxruntime, through basic-pitch's own
``run_inference`` and on its own 2 s windows, with inner tensors exposed) on real guitar
harmonics are in tests/data/basic_pitch_golden.npz (tests/data/make_teacher_goldens.py).
Tolerances: 1e-4 absolute on the contour, note and onset posteriorgrams and on the branch
feature maps; 5e-4 on the normalised log-CQT (values span about -0.9..1.6; float32 sums over
256-tap kernels in another order).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from audioembed.registry import get_registry, load_upstream
from audioembed_plugins import basic_pitch
from teacher_wheels import batch_with_garbage, golden, read_clip, require_wheel, run_single, run_windowed

pytestmark = [
    require_wheel("basic-pitch", "0.4.0"),
    pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed: pip install -e '.[teachers]'"),
]
CLIP = "music_guitar_22k.flac"
OUTPUTS = ((2, "contour", 264), (4, "note", 88), (6, "onset", 88))


@pytest.fixture(scope="module")
def up():
    return load_upstream("basic_pitch")


@pytest.fixture(scope="module")
def ref():
    return golden("basic_pitch")


@pytest.fixture(scope="module")
def clip():
    return torch.from_numpy(read_clip(CLIP))


def test_registered_with_declared_attributes(up):
    entry = get_registry().upstreams["basic_pitch"]
    assert entry.plugin == "basic_pitch" and entry.distribution == "audioembed"
    assert (up.sample_rate, up.hop_length) == (22050, 256)
    assert up.frame_rate == pytest.approx(86.13, abs=0.01)
    assert (up.num_layers, up.hidden_size, up.context_samples) == (7, 264, 43844)
    assert up.describe()["weights_sha256"] == basic_pitch.WEIGHTS.sha256
    assert "basic_pitch" not in sys.modules  # the reference package's code is never imported


def test_takes_no_model():
    with pytest.raises(Exception, match="takes no --model"):
        load_upstream("basic_pitch", "x")


@pytest.mark.parametrize("n", [1, 256, 257, 40000])
def test_frame_counts_and_shapes(up, n):
    wav = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
    out = up(wav[None], torch.tensor([n]))
    assert int(out.lengths[0]) == up.num_frames(n) == -(-n // 256)
    for layer, h in enumerate(out.hidden_states):
        assert h.shape == (1, -(-n // 256), 264) and torch.isfinite(h).all()
        if layer >= 3:
            assert (h[..., 88:] == 0).all()  # 88-bin layers are zero-padded


def test_batched_equals_single(up):
    g = torch.Generator().manual_seed(2)
    wavs = [0.1 * torch.randn(n, generator=g) for n in (30000, 5000, 45000)]
    batch, lengths = batch_with_garbage(wavs)
    out = up(batch, lengths)
    for i, w in enumerate(wavs):
        single = run_single(up, w)
        t = int(out.lengths[i])
        assert t == single[0].shape[0]
        for layer in range(7):
            assert (out.hidden_states[layer][i, :t] - single[layer]).abs().max() <= 1e-4


def test_model_windows_match_the_onnx_model(up, ref, clip):
    """basic-pitch's own two windows of the recording through our network and through the
    ONNX graph (onnxruntime): outputs and inner feature maps."""
    padded = np.concatenate([np.zeros(3840, np.float32), clip.numpy()])
    frames = torch.from_numpy(ref["window_frames"])
    for index, start in enumerate(ref["window_audio_start"].tolist()):
        window = np.pad(padded[start : start + 43844], (0, max(0, start + 43844 - len(padded))))
        with torch.no_grad():
            maps = up.window_maps(torch.from_numpy(window)[None])
        for layer, key, _ in OUTPUTS:
            assert np.abs(maps[layer][0, frames].numpy() - ref[f"w{index}_{key}"]).max() <= 1e-4, (index, key)
        if index == 0:
            assert np.abs(maps[0][0, frames].numpy() - ref["w0_cqt_h1"]).max() <= 5e-4
            for layer, key in ((1, "contour_maps"), (3, "note_maps"), (5, "onset_maps")):
                assert np.abs(maps[layer][0, frames].numpy() - ref[f"w0_{key}_mean"]).max() <= 1e-4, key


def test_first_window_equals_run_inference(up, ref, clip):
    """The upstream's frames equal basic-pitch's run_inference for the whole first window
    (142 frames); later windows are frame-aligned here and drift in run_inference."""
    states = run_single(up, clip)
    assert states[0].shape[0] == -(-clip.numel() // 256) == 259
    assert int(ref["run_num_frames"]) == clip.numel() * 86 // 22050 == 258
    frames = ref["run_frames"]
    first = frames < 142
    for layer, key, width in OUTPUTS:
        ours = states[layer][:, :width].numpy()
        assert np.abs(ours[frames[first]] - ref[f"run_{key}"][first]).max() <= 1e-4, key
    # the recording's harmonic at B4 (MIDI 71, note bin 71 - 21 = 50) is found
    note = states[4][:, :88].numpy()
    assert note[40:120].mean(axis=0).argmax() in (49, 50, 51)


def test_windows_advance_by_whole_frames(up, clip):
    """Delaying the input by one window advance (142 hops) delays every later frame by
    exactly 142 frames: frame t is centred on sample 256 t in every window."""
    wav = torch.cat([clip, clip])
    shift = 142 * 256
    delayed = torch.cat([torch.zeros(shift), wav])
    a, b = run_single(up, wav), run_single(up, delayed)
    assert b[0].shape[0] == a[0].shape[0] + 142
    for layer in range(7):
        assert (b[layer][142 + 142 :] - a[layer][142:]).abs().max() <= 1e-4


def test_long_files_in_windows_keep_exact_frame_counts(up, clip):
    wav = torch.cat([clip, clip.flip(0), clip])  # 9 s
    whole = run_single(up, wav)
    windowed = run_windowed(up, wav, window_seconds=3.0)
    for w, h in zip(windowed, whole):
        assert w.shape == h.shape and torch.isfinite(w).all()
