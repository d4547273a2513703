"""Distillation building blocks: heads, loss terms, frame alignment, PCGrad."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audioembed.distill.align import resample_frames
from audioembed.distill.heads import PredictionHead, PredictionHeads
from audioembed.distill.loss import combine, per_sample_terms
from audioembed.distill.pcgrad import pcgrad_backward

DS = 16
TEACHERS = {"speech": (24, 3), "music": (40, 2)}


# --------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", ["mlp", "lightconv", {"speech": "mlp", "music": "lightconv"}])
def test_head_shapes(design):
    torch.manual_seed(0)
    heads = PredictionHeads(DS, TEACHERS, design)
    x = torch.randn(2, 7, DS)
    out = heads(x, torch.tensor([7, 5]))
    assert set(out) == set(TEACHERS)
    assert out["speech"].shape == (2, 3, 7, 24)
    assert out["music"].shape == (2, 2, 7, 40)
    expected = {n: design for n in TEACHERS} if isinstance(design, str) else design
    assert heads.design == expected
    assert set(heads.heads.keys()) == set(TEACHERS)
    assert {n: heads.heads[n].kind for n in TEACHERS} == expected


def test_shared_head():
    heads = PredictionHeads(DS, {"speech": (24, 3), "music": (24, 3)}, "shared")
    assert heads.design == "shared"
    assert list(heads.heads.keys()) == ["shared"]
    out = heads(torch.randn(2, 5, DS))
    assert out["speech"] is out["music"]
    assert out["speech"].shape == (2, 3, 5, 24)


def test_shared_refuses_different_teachers():
    with pytest.raises(ValueError, match="same dim"):
        PredictionHeads(DS, TEACHERS, "shared")


def test_hybrid_refuses_missing_teacher():
    with pytest.raises(ValueError, match="missing \\['music'\\]"):
        PredictionHeads(DS, TEACHERS, {"speech": "mlp"})
    with pytest.raises(ValueError):
        PredictionHeads(DS, TEACHERS, {"speech": "mlp", "music": "conv"})
    with pytest.raises(ValueError):
        PredictionHeads(DS, TEACHERS, "transformer")


def test_mlp_is_expand_last():
    head = PredictionHead(DS, 24, 3, "mlp")
    assert isinstance(head.expand, nn.Linear) and head.expand.out_features == DS * 3
    assert len(head.outputs) == 3
    assert all(lin.in_features == DS and lin.out_features == 24 for lin in head.outputs)
    # target k depends only on chunk k of the expanded hidden state
    x = torch.randn(1, 4, DS)
    h = head.act(head.expand(x)).view(1, 4, 3, DS)
    out = head(x)
    for k in range(3):
        torch.testing.assert_close(out[:, k], head.outputs[k](h[:, :, k]))


def test_lightconv_padding_does_not_leak():
    torch.manual_seed(1)
    head = PredictionHead(DS, 24, 2, "lightconv").eval()
    item = torch.randn(1, 6, DS)
    alone = head(item, torch.tensor([6]))
    batch = torch.randn(2, 10, DS) * 5  # garbage everywhere, then the item in row 0
    batch[0, :6] = item[0]
    padded = head(batch, torch.tensor([6, 10]))
    assert (alone[0] - padded[0, :, :6]).abs().max() < 1e-6
    # without lengths the garbage does reach the last valid frame (the test is sensitive)
    leaky = head(batch)
    assert (alone[0, :, 5] - leaky[0, :, 5]).abs().max() > 1e-4


# --------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------


def _nls(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def test_loss_hand_computed():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, -1.0], [3.0, 4.0]])
    pred = torch.stack([pred, pred])[:, None]  # (B=2, K=1, T=3, D=2)
    target = torch.stack([target, target])[:, None]
    l1, cos = per_sample_terms(pred, target, torch.tensor([2, 3]))
    assert l1.shape == cos.shape == (2, 1)
    # sample 0: frames 0-1: |diffs| = 0,1,0,2 -> 3/4 ; sample 1 adds a perfect frame: 3/6
    torch.testing.assert_close(l1, torch.tensor([[0.75], [0.5]]))
    c0 = (_nls(1 / math.sqrt(2)) + _nls(-1.0)) / 2
    c1 = (_nls(1 / math.sqrt(2)) + _nls(-1.0) + _nls(1.0)) / 3
    torch.testing.assert_close(cos, torch.tensor([[c0], [c1]]))
    torch.testing.assert_close(combine(l1, cos, 0.5), torch.tensor([0.75 + 0.5 * c0, 0.5 + 0.5 * c1]))


def test_loss_combine_sums_layers():
    l1 = torch.tensor([[1.0, 2.0, 3.0]])
    cos = torch.tensor([[0.1, 0.2, 0.3]])
    torch.testing.assert_close(combine(l1, cos), torch.tensor([6.6]))
    torch.testing.assert_close(combine(l1, cos, cos_weight=2.0), torch.tensor([7.2]))


def test_loss_ignores_padding_and_empty_samples():
    torch.manual_seed(2)
    pred, target = torch.randn(3, 2, 8, 5), torch.randn(3, 2, 8, 5)
    lengths = torch.tensor([8, 5, 0])
    l1, cos = per_sample_terms(pred, target, lengths)
    pred2, target2 = pred.clone(), target.clone()
    pred2[1, :, 5:] = 100.0
    target2[1, :, 5:] = float("nan")
    pred2[2] = float("inf")
    l1b, cos2 = per_sample_terms(pred2, target2, lengths)
    assert torch.equal(l1, l1b) and torch.equal(cos, cos2)
    assert torch.equal(l1[2], torch.zeros(2)) and torch.equal(cos[2], torch.zeros(2))
    assert torch.isfinite(l1).all() and torch.isfinite(cos).all()


def test_loss_identical_inputs():
    x = torch.randn(2, 3, 6, 4)
    l1, cos = per_sample_terms(x, x.clone(), torch.tensor([6, 4]))
    assert torch.equal(l1, torch.zeros(2, 3))
    torch.testing.assert_close(cos, torch.full((2, 3), math.log(1 + math.exp(-1))))


def test_loss_half_inputs_and_grad():
    torch.manual_seed(3)
    pred, target = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    lengths = torch.tensor([6, 3])
    ref = per_sample_terms(pred.half().float(), target.half().float(), lengths)
    p = pred.half().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l1, cos = per_sample_terms(p, target.half(), lengths)
    assert l1.dtype == cos.dtype == torch.float32
    torch.testing.assert_close(l1, ref[0])
    torch.testing.assert_close(cos, ref[1])
    combine(l1, cos).sum().backward()
    assert p.grad is not None and p.grad.dtype == torch.float16
    assert torch.equal(p.grad[1, :, 3:], torch.zeros(2, 3, 4, dtype=torch.float16))


# --------------------------------------------------------------------------------------
# align
# --------------------------------------------------------------------------------------


def test_align_identity_when_lengths_equal():
    x = torch.randn(2, 3, 9, 4).half()
    lengths = torch.tensor([9, 6])
    out = resample_frames(x, lengths, lengths, 9)
    assert out.dtype == torch.float16
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, :, :6], x[1, :, :6])
    assert torch.equal(out[1, :, 6:], torch.zeros(3, 3, 4, dtype=torch.float16))


def _ramp_expected(src_len: int, dst_len: int) -> torch.Tensor:
    i = torch.arange(dst_len, dtype=torch.float64)
    return ((i + 0.5) * src_len / dst_len - 0.5).clamp(0, src_len - 1)


@pytest.mark.parametrize("four_d", [False, True])
def test_align_75_to_50_hz_ramp(four_d):
    # 2 s and 1 s of MERT-v1 (75 Hz) onto student frames (50 Hz); a third item needs no change
    src_lens, dst_lens = [150, 75, 40], [100, 50, 40]
    x = torch.zeros(3, 150, 2)
    for b, s in enumerate(src_lens):
        ramp = torch.arange(s, dtype=torch.float32)
        x[b, :s, 0] = ramp
        x[b, :s, 1] = 2 * ramp + 1
        x[b, s:] = 999.0  # padding must not be used
    if four_d:
        x = torch.stack([x, -x], dim=1)
    out = resample_frames(x, torch.tensor(src_lens), torch.tensor(dst_lens), 110)
    assert out.shape == ((3, 2, 110, 2) if four_d else (3, 110, 2))
    view = out if four_d else out[:, None]
    for b, (s, d) in enumerate(zip(src_lens, dst_lens)):
        exp = _ramp_expected(s, d).float()
        torch.testing.assert_close(view[b, 0, :d, 0], exp)
        torch.testing.assert_close(view[b, 0, :d, 1], 2 * exp + 1)
        if four_d:
            torch.testing.assert_close(view[b, 1, :d, 0], -exp)
        assert torch.equal(view[b, :, d:], torch.zeros_like(view[b, :, d:]))
    # interior of 75 -> 50: frame i sits at source position 1.5 i + 0.25
    torch.testing.assert_close(view[1, 0, 10, 0], torch.tensor(15.25))


def test_align_zero_lengths_and_errors():
    x = torch.randn(2, 5, 3)
    out = resample_frames(x, torch.tensor([0, 5]), torch.tensor([0, 3]), 4)
    assert torch.equal(out[0], torch.zeros(4, 3))
    with pytest.raises(ValueError):
        resample_frames(x, torch.tensor([6, 5]), torch.tensor([3, 3]), 4)
    with pytest.raises(ValueError):
        resample_frames(x, torch.tensor([5, 5]), torch.tensor([5, 3]), 4)


# --------------------------------------------------------------------------------------
# pcgrad
# --------------------------------------------------------------------------------------


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.b = nn.Parameter(torch.tensor(-0.7))

    def linear(self, ga: float, gb: float) -> torch.Tensor:
        # gradient is exactly (ga, gb)
        return ga * self.a + gb * self.b


def _grads(model: _Two) -> torch.Tensor:
    return torch.stack([model.a.grad, model.b.grad])


def test_pcgrad_conflicting_hand_computed():
    m = _Two()
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1 < 0
    # g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); sum = (0.5, 1.5)
    pcgrad_backward([m.linear(1, 0), m.linear(-1, 1)], list(m.parameters()), torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(m), torch.tensor([0.5, 1.5]))


def test_pcgrad_conflicting_nonlinear():
    m = _Two()
    l1 = (m.a - 1.0) ** 2 + m.b**2
    l2 = (m.a + 1.0) ** 2 + (m.b + 2.0) ** 2
    g1 = torch.tensor([2 * (0.3 - 1.0), 2 * -0.7])
    g2 = torch.tensor([2 * (0.3 + 1.0), 2 * (-0.7 + 2.0)])
    assert torch.dot(g1, g2) < 0
    e1 = g1 - torch.dot(g1, g2) / torch.dot(g2, g2) * g2
    e2 = g2 - torch.dot(g1, g2) / torch.dot(g1, g1) * g1
    pcgrad_backward([l1, l2], list(m.parameters()), torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(m), e1 + e2)


def test_pcgrad_no_conflict_is_plain_sum():
    m = _Two()
    pcgrad_backward([m.linear(1, 2), m.linear(3, -1)], list(m.parameters()), torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(m), torch.tensor([4.0, 1.0]))


def test_pcgrad_one_loss_equals_backward():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(7, 3)
    net(x).pow(2).sum().backward()
    ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    pcgrad_backward([net(x).pow(2).sum()], list(net.parameters()), torch.Generator().manual_seed(0))
    for p, r in zip(net.parameters(), ref):
        torch.testing.assert_close(p.grad, r, rtol=0, atol=0)


def test_pcgrad_accumulates_and_leaves_unused_alone():
    m = _Two()
    extra = nn.Parameter(torch.tensor(1.0))
    m.a.grad = torch.tensor(10.0)
    pcgrad_backward([m.linear(1, 0), m.linear(-1, 1)], [m.a, m.b, extra], torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(m), torch.tensor([10.5, 1.5]))
    assert extra.grad is None
    # a second micro-batch adds on top
    pcgrad_backward([m.linear(1, 0), m.linear(-1, 1)], [m.a, m.b, extra], torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(m), torch.tensor([11.0, 3.0]))


def test_pcgrad_seeded_order_is_reproducible():
    # three conflicting tasks: the projection order matters, so the generator must drive it
    gs = [(1.0, 0.0), (-1.0, 1.0), (-0.2, -1.0)]

    def run(seed: int) -> torch.Tensor:
        m = _Two()
        pcgrad_backward([m.linear(*g) for g in gs], list(m.parameters()), torch.Generator().manual_seed(seed))
        return _grads(m)

    results = [run(s) for s in range(12)]
    assert torch.equal(run(5), results[5])
    assert len({tuple(r.tolist()) for r in results}) > 1
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    m1, m2 = _Two(), _Two()
    pcgrad_backward([m1.linear(*g) for g in gs], list(m1.parameters()), gen)
    gen.set_state(state)
    pcgrad_backward([m2.linear(*g) for g in gs], list(m2.parameters()), gen)
    assert torch.equal(_grads(m1), _grads(m2))
