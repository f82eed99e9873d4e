"""oar.grpo_loss: equal to liger-kernel's fused GRPO loss with uniform weights, to a
hand-written per-token loop with OAR weights, and exact under gradient accumulation."""
import math

import pytest
import torch

import oar_kernels as oar

LOSS_TYPES = ["grpo", "bnpo", "dapo", "dr_grpo"]


def make_batch(seed, B=4, T=7, H=16, V=23, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=gen, dtype=dtype)
    weight = torch.randn(V, H, generator=gen, dtype=dtype) * 0.3
    targets = torch.randint(0, V, (B, T), generator=gen)
    lengths = torch.tensor([T, T - 2, 1, T - 3])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    adv = torch.randn(B, generator=gen, dtype=dtype)
    with torch.no_grad():
        logp = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[..., None])[..., 0]
    # Old / reference log-probs near the current ones, so some ratios clip on each side.
    old = logp + 0.3 * torch.randn(B, T, generator=gen, dtype=dtype)
    ref = logp + 0.2 * torch.randn(B, T, generator=gen, dtype=dtype)
    return hidden, weight, targets, mask, adv, old, ref


def logprobs(hidden, weight, targets):
    return torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[..., None])[..., 0]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_uniform_weights_match_liger(loss_type, beta, eps_high):
    LigerFusedLinearGRPOLoss = pytest.importorskip(
        "liger_kernel.chunked_loss", reason="liger-kernel is not installed").LigerFusedLinearGRPOLoss
    hidden, weight, targets, mask, adv, old, ref = make_batch(seed=1 + LOSS_TYPES.index(loss_type))
    T = hidden.shape[1]
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()

    loss, metrics = oar.grpo_loss(
        logprobs(h1, w1, targets), old, adv, mask, weights=torch.ones_like(old),
        ref_logp=ref if beta else None, epsilon=0.2, epsilon_high=eps_high, beta=beta,
        loss_type=loss_type, max_completion_length=T,
    )
    loss.backward()

    liger = LigerFusedLinearGRPOLoss(
        beta=beta, compiled=False, use_ref_model=beta > 0, epsilon_low=0.2,
        epsilon_high=0.2 if eps_high is None else eps_high, loss_type=loss_type,
        max_completion_length=T,
    )
    ref_loss, ref_metrics = liger(
        h2, w2, targets, mask.float(), adv, ref_per_token_logps=ref if beta else None, old_per_token_logps=old
    )
    ref_loss.backward()

    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["clip_ratio"], ref_metrics[-1], rtol=1e-5, atol=1e-6)
    if beta:
        torch.testing.assert_close(metrics["kl"], ref_metrics[0], rtol=1e-5, atol=1e-6)
    assert 0 < metrics["clip_ratio"] < 1  # the batch really exercises clipping


def loop_loss(logp, old, adv, mask, weights, ref, eps_low, eps_high, beta, loss_type, max_len):
    """Per-token Python loop, written straight from docs/algorithm.md §6."""
    B, T = logp.shape
    total, per_seq, n_tok = 0.0, [], 0
    for i in range(B):
        seq = 0.0
        count = 0
        for t in range(T):
            if not mask[i, t]:
                continue
            a = weights[i, t] * adv[i]
            rho = torch.exp(logp[i, t] - old[i, t])
            l_t = -torch.minimum(rho * a, torch.clamp(rho, 1 - eps_low, 1 + eps_high) * a)
            if beta:
                d = ref[i, t] - logp[i, t]
                l_t = l_t + beta * (torch.exp(d) - d - 1)
            seq = seq + l_t
            count += 1
        per_seq.append(seq / max(count, 1))
        total = total + seq
        n_tok += count
    if loss_type == "grpo":
        return sum(per_seq) / B
    if loss_type in ("bnpo", "dapo"):
        return total / max(n_tok, 1)
    return total / (B * max_len)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_oar_weights_match_per_token_loop(loss_type):
    hidden, weight, targets, mask, adv, old, ref = make_batch(seed=7, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(*old.shape, generator=gen, dtype=torch.float64) * 2
    lp1 = logprobs(hidden, weight, targets).requires_grad_()
    lp2 = lp1.detach().clone().requires_grad_()
    loss, metrics = oar.grpo_loss(lp1, old, adv, mask, weights=w, ref_logp=ref, epsilon=0.2, epsilon_high=0.3,
                                  beta=0.05, loss_type=loss_type, max_completion_length=11)
    want = loop_loss(lp2, old, adv, mask, w, ref, 0.2, 0.3, 0.05, loss_type, 11)
    loss.backward()
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp1.grad, lp2.grad, rtol=1e-12, atol=1e-12)
    m = mask.double()
    torch.testing.assert_close(metrics["adv_abs_mean"], ((w * adv[:, None]).abs() * m).sum().float() / m.sum().float())


def test_per_token_advantages_equal_weighted_sequence_advantages():
    hidden, weight, targets, mask, adv, old, _ = make_batch(seed=3)
    w = torch.rand_like(old) + 0.5
    lp = logprobs(hidden, weight, targets)
    a, _ = oar.grpo_loss(lp, old, adv, mask, weights=w)
    b, _ = oar.grpo_loss(lp, old, w * adv[:, None], mask)
    torch.testing.assert_close(a, b)


def test_on_policy_old_logp_none():
    hidden, weight, targets, mask, adv, _, _ = make_batch(seed=4)
    lp = logprobs(hidden, weight, targets)
    a, m = oar.grpo_loss(lp, None, adv, mask)
    b, _ = oar.grpo_loss(lp, lp.detach(), adv, mask)
    torch.testing.assert_close(a, b)
    assert m["clip_ratio"] == 0 and m["ratio_mean"] == 1


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_accumulation_equals_one_batch(loss_type):
    B, T = 8, 9
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(B, T, 16, generator=gen, dtype=torch.float64)
    weight = (torch.randn(23, 16, generator=gen, dtype=torch.float64) * 0.3).requires_grad_()
    targets = torch.randint(0, 23, (B, T), generator=gen)
    mask = torch.arange(T)[None, :] < torch.randint(1, T + 1, (B, 1), generator=gen)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    w = torch.rand(B, T, generator=gen, dtype=torch.float64) + 0.5
    with torch.no_grad():
        old = logprobs(hidden, weight, targets) + 0.2 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    kw = dict(loss_type=loss_type, max_completion_length=T, epsilon_high=0.28)

    full, _ = oar.grpo_loss(logprobs(hidden, weight, targets), old, adv, mask, weights=w, **kw)
    (g_full,) = torch.autograd.grad(full, weight)

    total = 0.0
    g_acc = torch.zeros_like(weight)
    n_items = int(mask.sum())
    for sl in (slice(0, 3), slice(3, 4), slice(4, 8)):  # unequal micro-batches
        part, _ = oar.grpo_loss(
            logprobs(hidden[sl], weight, targets[sl]), old[sl], adv[sl], mask[sl], weights=w[sl],
            num_sequences=B, num_items_in_batch=n_items, **kw,
        )
        (g,) = torch.autograd.grad(part, weight)
        g_acc += g
        total = total + part.detach()
    torch.testing.assert_close(total, full.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_acc, g_full, rtol=1e-12, atol=1e-12)


def test_half_precision_logp():
    hidden, weight, targets, mask, adv, old, _ = make_batch(seed=8)
    lp = logprobs(hidden, weight, targets)
    want, _ = oar.grpo_loss(lp, old, adv, mask)
    for dtype in (torch.float16, torch.bfloat16):
        got, _ = oar.grpo_loss(lp.to(dtype), old.to(dtype), adv, mask)
        assert got.dtype == torch.float32
        # Only the inputs are rounded (bf16 has 8 mantissa bits); arithmetic runs in float32.
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


def test_gradcheck_float64():
    hidden, weight, targets, mask, adv, old, ref = make_batch(seed=9, dtype=torch.float64)
    lp = logprobs(hidden, weight, targets).detach().requires_grad_()
    w = torch.rand_like(old) + 0.5

    def f(x):
        return oar.grpo_loss(x, old, adv, mask, weights=w, ref_logp=ref, beta=0.1, epsilon_high=0.3)[0]

    assert torch.autograd.gradcheck(f, (lp,))


def test_fully_masked_batch_is_zero_not_nan():
    hidden, weight, targets, mask, adv, old, ref = make_batch(seed=2)
    lp = logprobs(hidden, weight, targets).requires_grad_()
    for lt in LOSS_TYPES:
        loss, metrics = oar.grpo_loss(lp, old, adv, torch.zeros_like(mask), loss_type=lt, max_completion_length=7)
        loss.backward()
        assert loss.item() == 0 and all(math.isfinite(v.item()) for v in metrics.values())
        assert torch.equal(lp.grad, torch.zeros_like(lp))


def test_rejects_bad_input():
    lp, old = torch.randn(2, 3), torch.randn(2, 3)
    adv, mask = torch.randn(2), torch.ones(2, 3, dtype=torch.bool)
    cases = [
        ("logp", dict(logp=torch.randn(6))),
        ("logp", dict(logp=torch.randint(0, 2, (2, 3)))),
        ("old_logp", dict(old_logp=torch.randn(2, 4))),
        ("advantages", dict(advantages=torch.randn(3))),
        ("advantages", dict(advantages=torch.tensor([1.0, float("nan")]))),
        ("mask", dict(mask=mask.float())),
        ("mask", dict(mask=mask[:, :2])),
        ("weights", dict(weights=torch.ones(2, 2))),
        ("weights", dict(weights=torch.full((2, 3), float("inf")))),
        ("ref_logp", dict(beta=0.1)),
        ("beta", dict(beta=-0.1)),
        ("epsilon", dict(epsilon=-0.2)),
        ("epsilon_high", dict(epsilon_high=float("nan"))),
        ("loss_type", dict(loss_type="ppo")),
        ("max_completion_length", dict(loss_type="dr_grpo")),
        ("max_completion_length", dict(max_completion_length=0)),
        ("num_sequences", dict(num_sequences=0)),
    ]
    for name, override in cases:
        kw = dict(logp=lp, old_logp=old, advantages=adv, mask=mask)
        kw.update(override)
        with pytest.raises(ValueError, match=name):
            oar.grpo_loss(**kw)
