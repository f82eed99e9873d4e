"""The public ops against the independent oracles of oar_kernels/reference on random inputs
(fp32; gradients where the op is differentiable), and the oracles themselves against hand
computations, so that a wrong op or a wrong oracle fails here."""
import math

import pytest
import torch

import oar_kernels as oar
from oar_kernels.reference import (
    bilevel_reshape_reference,
    group_advantages_reference,
    grpo_loss_reference,
    linear_logprob_reference,
)

LOSS_TYPES = ["grpo", "bnpo", "dapo", "dr_grpo"]


# ------------------------------------------------------------------------------------------
# Bi-Level reshaping
# ------------------------------------------------------------------------------------------


def ragged_scores(seed, B=10, T=23, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(B, T, generator=g).exp() * 2).to(dtype)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[0] = False  # R = 0
    mask[1] = False
    mask[1, 4] = True  # R = 1
    mask[2] = True
    scores[2] = 0.5  # all equal
    scores[3, ::2] *= -1  # negatives clamp to 0
    scores[4] = torch.randint(0, 3, (T,), generator=g).to(dtype)  # ties
    scores[5, ~mask[5]] = float("nan")  # padding may hold anything
    return scores, mask


def test_bilevel_oracle_by_hand():
    # s = log1p(I) = 0..4, n = 0, .25, .5, .75, 1; tau = .25 puts q at n = .25 exactly.
    scores = torch.tensor([[math.expm1(k) for k in range(5)] + [7.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * 5 + [False]])
    raw = [0.1, 1.0, 1 + 0.25 / 0.75, 1 + 0.5 / 0.75, 1 + 0.75 / 0.75]  # floor, then the boosts
    want = torch.tensor([w * 5 / sum(raw) for w in raw] + [1.0], dtype=torch.float64)
    got = bilevel_reshape_reference(scores, mask, tau=0.25, beta=1.0, floor=0.1, sum_to_len=True)
    torch.testing.assert_close(got.double(), want[None], rtol=1e-6, atol=1e-6)
    no_sum = bilevel_reshape_reference(scores, mask, tau=0.25, beta=1.0, floor=0.1, sum_to_len=False)
    torch.testing.assert_close(no_sum.double(), torch.tensor([raw + [1.0]], dtype=torch.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("sum_to_len", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bilevel_torch_path_matches_oracle(tau, sum_to_len, dtype):
    scores, mask = ragged_scores(int(tau * 10) + 3 * sum_to_len, dtype=dtype)
    kw = dict(tau=tau, beta=0.7, floor=0.15, sum_to_len=sum_to_len)
    want = bilevel_reshape_reference(scores, mask, **kw)
    got = oar.bilevel_reshape(scores, mask, backend="torch", **kw)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, want, **tol)
    assert torch.equal(got[~mask], torch.ones_like(got[~mask]))
    assert not torch.allclose(want[mask], torch.ones_like(want[mask]))  # the rows really get reshaped


def test_bilevel_default_cpu_path_matches_oracle():
    # "auto" on CPU: the C kernel where the install built it, else the torch path
    scores, mask = ragged_scores(17, B=16, T=64)
    torch.testing.assert_close(oar.bilevel_reshape(scores, mask), bilevel_reshape_reference(scores, mask),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Group advantages
# ------------------------------------------------------------------------------------------


def test_group_advantages_oracle_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0])
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    got = group_advantages_reference(r[:4], 4, "group", eps=0.0)
    torch.testing.assert_close(got, torch.tensor([1.5, -0.5, -0.5, -0.5], dtype=torch.float64))
    assert torch.equal(group_advantages_reference(r[4:], 2, "group"), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(group_advantages_reference(r[:4], 2, "none"),
                               torch.tensor([0.5, -0.5, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("G", [2, 3, 8])
def test_group_advantages_match_oracle(scale, G):
    g = torch.Generator().manual_seed(G)
    r = torch.randint(0, 2, (G * 6,), generator=g).float()
    r[G:] += torch.rand(G * 5, generator=g) * 3
    got = oar.group_advantages(r, G, scale=scale)
    want = group_advantages_reference(r, G, scale)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# GRPO loss
# ------------------------------------------------------------------------------------------


def loss_batch(seed, B=5, T=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g)  # ratios on both sides of the clip range
    ref = logp + 0.2 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = torch.rand(B, T, generator=g) < 0.75
    mask[0, 0] = True
    mask[1] = False  # a row with no counted token
    weights = torch.rand(B, T, generator=g) * 2
    return logp, old, ref, adv, mask, weights


def test_grpo_oracle_by_hand():
    # one sequence, two tokens: rho = e^0.5 (clipped at 1.2 for a > 0) and rho = 1
    logp = torch.tensor([[0.0, -1.0]])
    old = torch.tensor([[-0.5, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    weights = torch.tensor([[2.0, 0.5]])
    loss, metrics = grpo_loss_reference(logp, old, torch.tensor([1.0]), mask, weights=weights, epsilon=0.2)
    per_token = [-min(math.exp(0.5) * 2.0, 1.2 * 2.0), -0.5]
    assert float(loss) == pytest.approx(sum(per_token) / 2, rel=1e-12)
    assert metrics["clip_ratio_high"] == 0.5 and metrics["clip_ratio_low"] == 0.0
    assert metrics["adv_abs_mean"] == pytest.approx(1.25)
    loss_b, _ = grpo_loss_reference(logp, old, torch.tensor([1.0]), mask, weights=weights, loss_type="dr_grpo",
                                    max_completion_length=4, num_sequences=2)
    assert float(loss_b) == pytest.approx(sum(per_token) / 8, rel=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.05])
@pytest.mark.parametrize("token_adv", [False, True])
def test_grpo_loss_matches_oracle(loss_type, beta, token_adv):
    logp, old, ref, adv, mask, weights = loss_batch(LOSS_TYPES.index(loss_type) + 10 * token_adv)
    if token_adv:
        adv = adv[:, None] * torch.linspace(0.5, 1.5, logp.shape[1])
    kw = dict(weights=weights, ref_logp=ref if beta else None, epsilon=0.2, epsilon_high=0.28, beta=beta,
              loss_type=loss_type, max_completion_length=logp.shape[1] + 2)
    extra = dict(num_sequences=9, num_items_in_batch=31) if token_adv else {}
    lp_op, lp_ref = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    loss, metrics = oar.grpo_loss(lp_op, old, adv, mask, **kw, **extra)
    want, want_metrics = grpo_loss_reference(lp_ref, old, adv, mask, **kw, **extra)
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-5, atol=1e-7)
    loss.backward()
    want.backward()
    torch.testing.assert_close(lp_op.grad.double(), lp_ref.grad.double(), rtol=1e-5, atol=1e-7)
    assert lp_ref.grad.abs().sum() > 0
    assert set(metrics) == set(want_metrics)
    for name, value in want_metrics.items():
        assert float(metrics[name]) == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert 0 < want_metrics["clip_ratio"] < 1  # the batch exercises clipping


def test_grpo_loss_on_policy_matches_oracle():
    logp, _, _, adv, mask, weights = loss_batch(3)
    lp_op, lp_ref = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    loss, _ = oar.grpo_loss(lp_op, None, adv, mask, weights=weights)
    want, _ = grpo_loss_reference(lp_ref, None, adv, mask, weights=weights)
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-6, atol=1e-7)
    loss.backward()
    want.backward()
    torch.testing.assert_close(lp_op.grad.double(), lp_ref.grad.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_fused_linear_grpo_loss_matches_oracle(loss_type):
    g = torch.Generator().manual_seed(5)
    B, T, D, V = 3, 4, 8, 11
    hidden = torch.randn(B, T, D, generator=g)
    weight = torch.randn(V, D, generator=g) * 0.5
    targets = torch.randint(0, V, (B, T), generator=g)
    _, old, ref, adv, mask, weights = loss_batch(7, B, T)
    with torch.no_grad():
        old = linear_logprob_reference(hidden.view(-1, D), weight, targets.view(-1)).view(B, T) + old * 0.1
    kw = dict(weights=weights, ref_logp=ref, epsilon=0.2, beta=0.04, loss_type=loss_type)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, _ = oar.fused_linear_grpo_loss(h1, w1, targets, old, adv, mask, **kw)
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp = linear_logprob_reference(h2.view(-1, D), w2, targets.view(-1)).view(B, T)
    want, _ = grpo_loss_reference(logp, old, adv, mask, **kw)
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-5, atol=1e-7)
    loss.backward()
    want.backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)
