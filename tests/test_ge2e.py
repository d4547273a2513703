"""The ``ge2e`` upstream: contract, fidelity to Resemblyzer 0.1.4, long-file windows.

Golden outputs of Resemblyzer's own code on a real utterance are in tests/data/ge2e_golden.npz
(tests/data/make_teacher_goldens.py says how they were made). Tolerances: 1e-4 absolute on
LSTM outputs and embeddings, 1e-5 relative on the mel power spectrogram, 1e-6 relative on the
volume gain.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from audioembed.registry import get_registry, load_upstream
from audioembed_plugins import ge2e
from teacher_wheels import batch_with_garbage, golden, read_clip, require_wheel, run_single, run_windowed

pytestmark = require_wheel("resemblyzer", "0.1.4")
CLIP = "speech_librivox_16k.wav"


@pytest.fixture(scope="module")
def up():
    return load_upstream("ge2e")


@pytest.fixture(scope="module")
def ref():
    return golden("ge2e")


def _reference_input(ref: dict) -> torch.Tensor:
    """The clip as Resemblyzer's preprocess_wav left it: gain, then its VAD mask of 30 ms blocks."""
    wav = read_clip(CLIP) * np.float32(ref["gain"])
    block = int(ref["vad_window"])
    wav = wav[: len(wav) - len(wav) % block].reshape(-1, block)[ref["vad_keep"]].reshape(-1)
    assert len(wav) == int(ref["num_samples"])
    return torch.from_numpy(np.ascontiguousarray(wav))


def test_registered_with_declared_attributes(up):
    entry = get_registry().upstreams["ge2e"]
    assert entry.plugin == "ge2e" and entry.distribution == "audioembed"
    assert (up.sample_rate, up.hop_length, up.frame_rate) == (16000, 160, 100)
    assert (up.num_layers, up.hidden_size) == (5, 256)
    assert up.context_samples == 4 * 16000 and up.context_samples % up.hop_length == 0
    assert up.source == "resemblyzer==0.1.4:resemblyzer/pretrained.pt"
    assert up.describe()["weights_sha256"] == ge2e.WEIGHTS.sha256


def test_reference_package_code_is_never_imported(up):
    assert "resemblyzer" not in sys.modules  # only its weight file is read


def test_takes_no_model():
    with pytest.raises(Exception, match="takes no --model"):
        load_upstream("ge2e", "some/folder")


@pytest.mark.parametrize("n", [1, 159, 160, 161, 400, 4321, 16000])
def test_frame_counts_and_shapes(up, n):
    wav = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
    out = up(wav[None], torch.tensor([n]))
    assert int(out.lengths[0]) == up.num_frames(n) == n // 160 + 1
    assert len(out.hidden_states) == 5
    for h in out.hidden_states:
        assert h.shape == (1, n // 160 + 1, 256) and torch.isfinite(h).all()
    assert (out.hidden_states[0][..., 40:] == 0).all()  # mel occupies dims 0-39


def test_batched_equals_single(up):
    g = torch.Generator().manual_seed(0)
    wavs = [0.05 * torch.randn(n, generator=g) for n in (16000, 7000, 401, 12345)]
    batch, lengths = batch_with_garbage(wavs)
    out = up(batch, lengths)
    for i, w in enumerate(wavs):
        single = run_single(up, w)
        t = int(out.lengths[i])
        assert t == single[0].shape[0]
        for layer in range(5):
            assert (out.hidden_states[layer][i, :t] - single[layer]).abs().max() <= 1e-4
            assert (out.hidden_states[layer][i, t:] == 0).all()


def test_volume_gain_matches_resemblyzer(ref):
    wav = torch.from_numpy(read_clip(CLIP))
    assert ge2e.volume_gain(wav) == pytest.approx(float(ref["gain"]), rel=1e-6)
    assert float(ref["quiet_gain"]) > 10  # the quiet copy really is raised
    quiet = wav * np.float32(0.01)
    assert ge2e.volume_gain(quiet) == pytest.approx(float(ref["quiet_gain"]), rel=1e-6)
    assert ge2e.volume_gain(torch.zeros(100)) == 1.0  # silence: nothing to normalise


def test_hidden_states_match_resemblyzer(up, ref):
    wav = _reference_input(ref)
    states = run_single(up, wav)
    assert states[0].shape[0] == int(ref["num_frames"])
    frames = torch.from_numpy(ref["frames"])
    mel = states[0][frames, :40].numpy()
    assert np.abs(mel - ref["mel"]).max() <= 1e-5 * np.abs(ref["mel"]).max()
    assert np.abs(states[3][frames].numpy() - ref["lstm3"]).max() <= 1e-4
    assert np.abs(states[4][frames].numpy() - ref["frame_embedding"]).max() <= 1e-4


def test_utterance_embedding_matches_embed_utterance(up, ref):
    embed, partials, slices = up.utterance_embedding(_reference_input(ref))
    assert [a for a, _ in slices] == ref["partial_starts"].tolist()
    assert np.abs(partials.numpy() - ref["partial_embeddings"]).max() <= 1e-4
    assert np.abs(embed.numpy() - ref["embedding"]).max() <= 1e-4
    # and it is a speaker embedding: unit norm, non-negative (ReLU)
    assert float(embed.norm()) == pytest.approx(1.0, abs=1e-5) and (embed >= 0).all()


def _long_speech() -> torch.Tensor:
    """14 s of real speech above -30 dBFS (gain 1 in every window), built from the clip."""
    wav = read_clip(CLIP)
    parts = [wav, wav[::-1], wav * np.float32(0.7), wav[8000:], wav]
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def test_long_files_windows_with_left_context(up):
    """Windows of a long file: exact frame counts; the mel and LSTM layers 1-2 equal the
    whole-file run, because 4 s of left context is far more than their memory; layer 3 and
    the frame embedding keep a speaker memory longer than any window (documented)."""
    wav = _long_speech()
    assert ge2e.volume_gain(wav) == 1.0
    whole = run_single(up, wav)
    windowed = run_windowed(up, wav, window_seconds=3.0)
    for w, h in zip(windowed, whole):
        assert w.shape == h.shape and h.shape[0] == up.num_frames(wav.numel())
    for layer in (0, 1, 2):
        assert (windowed[layer] - whole[layer]).abs().max() <= 1e-4, layer
    # the context is what makes layers 1-2 agree: with half a second, layer 2 does not
    up_short = copy.copy(up)
    up_short.context_samples = 8000
    short = run_windowed(up_short, wav, window_seconds=3.0)
    assert (short[2] - whole[2]).abs().max() > 1e-3
    for layer in (3, 4):
        assert torch.isfinite(windowed[layer]).all()
