"""The CTC probe's heads: padding-exact, and able to learn a transcript from its frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioembed.probes import CTC_HEADS, CharVocab, ProbeConfig, build_ctc_head, decode_ctc, train_ctc_probe

WORDS = ["ab", "ba", "abc", "cab", "ca", "bc"]


def synthetic_utterances(seed: int, count: int, dim: int = 16):
    """Each character is a fixed random vector held for 4 frames, with a silence frame
    between characters: a transcript is perfectly readable from these frames."""
    rng = np.random.default_rng(0)
    codes = {c: rng.standard_normal(dim).astype(np.float32) * 2 for c in "abc"}
    silence = np.zeros(dim, np.float32)
    rng = np.random.default_rng(seed)
    feats, texts = [], []
    for _ in range(count):
        text = WORDS[rng.integers(len(WORDS))]
        frames = [silence]
        for c in text:
            frames += [codes[c]] * 4 + [silence]
        x = np.stack(frames) + 0.1 * rng.standard_normal((len(frames), dim)).astype(np.float32)
        feats.append(x[None])  # (L=1, T, D)
        texts.append(text)
    return feats, texts


@pytest.mark.parametrize("head", CTC_HEADS)
def test_ctc_head_output_does_not_depend_on_padding(head):
    torch.manual_seed(0)
    model = build_ctc_head(ProbeConfig(ctc_head=head), [0, 1], dim=8, vocab_size=5).eval()
    short, long = torch.randn(2, 1, 7, 8), torch.randn(2, 1, 12, 8)
    batch = torch.zeros(2, 2, 12, 8)
    batch[:, 0, :7], batch[:, 1] = short[:, 0], long[:, 0]
    batch[:, 0, 7:] = 100.0  # garbage in the padding must not reach valid frames
    with torch.no_grad():
        alone = model(short, torch.tensor([7]))[0]
        together = model(batch, torch.tensor([7, 12]))[0, :7]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_conv_ctc_head_learns_readable_transcripts():
    train_feats, train_texts = synthetic_utterances(seed=1, count=48)
    test_feats, test_texts = synthetic_utterances(seed=2, count=12)

    def dev_score(texts):
        return -np.mean([t != r for t, r in zip(texts, test_texts)])

    config = ProbeConfig(ctc_head="conv", max_epochs=40, learning_rate=3e-3)
    model, vocab, epoch = train_ctc_probe([0], train_feats, train_texts, test_feats, dev_score, config, seed=0)
    assert isinstance(vocab, CharVocab) and epoch >= 1
    hypotheses = decode_ctc(model, vocab, test_feats)
    correct = sum(h == r for h, r in zip(hypotheses, test_texts))
    assert correct >= 10, list(zip(hypotheses, test_texts))
