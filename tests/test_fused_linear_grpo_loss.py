"""oar.fused_linear_grpo_loss against oar.grpo_loss on reference log-probs and against
liger-kernel's LigerFusedLinearGRPOLoss (CPU, compiled=False).

Tolerances: fp32 loss and metrics atol 1e-6 (same math, different summation order), gradients
atol 1e-6 / rtol 1e-4; against liger (its own chunking and fp32 arithmetic) atol 1e-5 / rtol
1e-4; fp16 / bf16 inputs: loss atol 1e-4, gradients (rounded to the input dtype) 2e-3 / 2e-2
of the gradient scale.
"""
import math

import pytest
import torch

import oar_kernels as oar
from oar_kernels.ops import fused_linear_logprob as lp_mod
from oar_kernels.reference.logprob import linear_logprob_reference

BACKENDS = ["torch", "triton"]
LOSS_TYPES = ["grpo", "bnpo", "dapo", "dr_grpo"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setitem(lp_mod.CHUNK_BYTES, "cpu", 4 * 128 * 4)


def make(B, T, D, V, dtype=torch.float32, bias=True, seed=0, temperature=1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D, generator=g).to(dtype).requires_grad_(True)
    w = (torch.randn(V, D, generator=g) / math.sqrt(D) * 3).to(dtype).requires_grad_(True)
    b = torch.randn(V, generator=g).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[:, 0] = True
    with torch.no_grad():
        lp = linear_logprob_reference(h.reshape(-1, D), w, t.reshape(-1), b, temperature).view(B, T)
    # old/ref log-probs near the current ones so some ratios clip and some do not
    old = (lp + 0.3 * torch.randn(B, T, generator=g)).float()
    ref = (lp + 0.2 * torch.randn(B, T, generator=g)).float()
    adv = torch.randn(B, generator=g)
    return h, w, b, t, mask, old, ref, adv


def ref_loss(h, w, b, t, old, adv, mask, temperature=1.0, **kw):
    B, T, D = h.shape
    lp = linear_logprob_reference(h.reshape(-1, D), w, t.reshape(-1), b, temperature).view(B, T)
    return oar.grpo_loss(lp, old, adv, mask, **kw)


def params(h, w, b):
    return [p for p in (h, w, b) if p is not None]


def assert_grads(loss, rloss, ps, atol=1e-6, rtol=1e-4):
    for a, c in zip(torch.autograd.grad(loss, ps), torch.autograd.grad(rloss, ps)):
        torch.testing.assert_close(a, c, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_nonuniform_weights_match_grpo_loss_on_reference(backend, loss_type):
    B, T, D, V = 3, 5, 24, 70
    h, w, b, t, mask, old, ref, adv = make(B, T, D, V, temperature=0.8)
    mask[2] = False  # a fully-masked row
    weights = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) * 2
    kw = dict(weights=weights, ref_logp=ref, beta=0.05, epsilon=0.2, epsilon_high=0.28,
              loss_type=loss_type, max_completion_length=T + 2)
    loss, m = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, temperature=0.8, bias=b, backend=backend, **kw)
    rl, rm = ref_loss(h, w, b, t, old, adv, mask, temperature=0.8, **kw)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, rl, atol=1e-6, rtol=1e-5)
    assert set(m) == set(rm)
    for k in rm:
        torch.testing.assert_close(m[k], rm[k], atol=1e-6, rtol=1e-5)
        assert not m[k].requires_grad
    assert_grads(loss, rl, params(h, w, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_on_policy_token_advantages_no_bias(backend):
    B, T, D, V = 2, 7, 16, 33
    h, w, _, t, mask, _, _, _ = make(B, T, D, V, bias=False)
    adv = torch.randn(B, T)
    loss, m = oar.fused_linear_grpo_loss(h, w, t, None, adv, mask, backend=backend)
    rl, rm = ref_loss(h, w, None, t, None, adv, mask)
    torch.testing.assert_close(loss, rl, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m["ratio_mean"], rm["ratio_mean"])
    assert_grads(loss, rl, [h, w])


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token(backend):
    h, w, b, t, mask, old, _, adv = make(1, 1, 8, 13)
    loss, _ = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend=backend)
    rl, _ = ref_loss(h, w, b, t, old, adv, mask)
    torch.testing.assert_close(loss, rl, atol=1e-6, rtol=1e-5)
    assert_grads(loss, rl, [h, w, b])


def test_padding_ids_at_masked_positions_and_all_masked():
    B, T, D, V = 2, 4, 8, 19
    h, w, b, t, mask, old, _, adv = make(B, T, D, V)
    t = t.clone()
    mask[1, 2:] = False
    t[1, 2:] = -100
    loss, _ = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend="torch")
    t_ok = torch.where(mask, t, 0)
    rl, _ = ref_loss(h, w, b, t_ok, old, adv, mask)
    torch.testing.assert_close(loss, rl, atol=1e-6, rtol=1e-5)
    # everything masked: zero loss, zero gradients, no NaN
    none = torch.zeros(B, T, dtype=torch.bool)
    loss0, m0 = oar.fused_linear_grpo_loss(h, w, t_ok, old, adv, none, bias=b, backend="torch")
    assert loss0.item() == 0.0 and all(torch.isfinite(v) for v in m0.values())
    for g in torch.autograd.grad(loss0, (h, w, b)):
        assert torch.count_nonzero(g) == 0


def test_no_grad_forward_only():
    B, T, D, V = 2, 3, 8, 21
    h, w, b, t, mask, old, _, adv = make(B, T, D, V)
    with torch.no_grad():
        loss, m = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend="torch")
    rl, rm = ref_loss(h, w, b, t, old, adv, mask)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, rl.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m["ratio_mean"], rm["ratio_mean"])


def test_grad_output_scales():
    B, T, D, V = 2, 3, 8, 21
    h, w, b, t, mask, old, _, adv = make(B, T, D, V)
    loss, _ = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend="torch")
    g1 = torch.autograd.grad(loss, (h, w, b), retain_graph=True)
    g3 = torch.autograd.grad(-3.0 * loss, (h, w, b))
    for a, c in zip(g1, g3):
        torch.testing.assert_close(c, -3.0 * a)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_accumulation_equals_one_batch(loss_type):
    B, T, D, V = 4, 5, 12, 40
    h, w, b, t, mask, old, ref, adv = make(B, T, D, V)
    mask[3, 1:] = False
    weights = torch.rand(B, T) + 0.5
    kw = dict(ref_logp=ref, beta=0.1, loss_type=loss_type, max_completion_length=T)
    full, _ = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, weights=weights, bias=b, backend="torch", **kw)
    g_full = torch.autograd.grad(full, (h, w, b))

    n_items = int(mask.sum())
    total = 0.0
    acc = [torch.zeros_like(p) for p in (h, w, b)]
    for sl in (slice(0, 1), slice(1, 4)):  # unequal micro-batches
        mkw = dict(kw, ref_logp=ref[sl])
        part, _ = oar.fused_linear_grpo_loss(
            h[sl], w, t[sl], old[sl], adv[sl], mask[sl], weights=weights[sl], bias=b, backend="torch",
            num_sequences=B, num_items_in_batch=n_items, **mkw,
        )
        total = total + part.detach()
        for a, g in zip(acc, torch.autograd.grad(part, (h, w, b))):
            a += g
    torch.testing.assert_close(total, full.detach(), atol=1e-6, rtol=1e-5)
    for a, g in zip(acc, g_full):
        torch.testing.assert_close(a, g, atol=1e-6, rtol=1e-5)


def test_gradcheck_float64_torch_path():
    B, T, D, V = 2, 3, 4, 7
    h, w, b, t, mask, old, ref, adv = make(B, T, D, V, dtype=torch.float64)
    old = old.double() - 0.05  # away from the clip boundaries
    weights = torch.rand(B, T, dtype=torch.float64) + 0.5

    def f(h, w, b):
        loss, _ = oar.fused_linear_grpo_loss(
            h, w, t, old, adv.double(), mask, weights=weights, ref_logp=ref.double(), beta=0.1,
            epsilon=10.0, temperature=0.9, bias=b, backend="torch",
        )
        return loss

    assert torch.autograd.gradcheck(f, (h, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_inputs(backend, dtype, tol):
    B, T, D, V = 2, 5, 24, 45
    h, w, b, t, mask, old, ref, adv = make(B, T, D, V, dtype=dtype)
    loss, _ = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend=backend)
    rl, _ = ref_loss(h, w, b, t, old, adv, mask)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, rl, atol=1e-4, rtol=1e-4)
    for a, c in zip(torch.autograd.grad(loss, (h, w, b)), torch.autograd.grad(rl, (h, w, b))):
        assert a.dtype == dtype
        scale = c.abs().max().item()
        torch.testing.assert_close(a.float(), c.float(), atol=tol * scale, rtol=tol)


# ----------------------------------------------------------------------------- liger


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta,temperature", [(0.0, 1.0), (0.04, 0.7)])
def test_uniform_weights_match_liger(backend, loss_type, beta, temperature):
    LigerFusedLinearGRPOLoss = pytest.importorskip(
        "liger_kernel.chunked_loss.grpo_loss", reason="liger-kernel is not installed").LigerFusedLinearGRPOLoss

    B, T, D, V = 3, 6, 16, 57
    h, w, b, t, mask, old, ref, adv = make(B, T, D, V, temperature=temperature)
    liger = LigerFusedLinearGRPOLoss(
        beta=beta, compiled=False, use_ref_model=beta > 0, chunk_size=2, epsilon_low=0.2, epsilon_high=0.25,
        loss_type=loss_type, max_completion_length=T + 1, temperature=temperature,
    )
    ll, lmetrics = liger(h, w, t, mask.float(), adv, bias=b, ref_per_token_logps=ref if beta > 0 else None,
                         old_per_token_logps=old)
    loss, m = oar.fused_linear_grpo_loss(
        h, w, t, old, adv, mask, weights=torch.ones(B, T), ref_logp=ref if beta > 0 else None, beta=beta,
        epsilon=0.2, epsilon_high=0.25, loss_type=loss_type, max_completion_length=T + 1,
        temperature=temperature, bias=b, backend=backend,
    )
    torch.testing.assert_close(loss, ll, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m["clip_ratio"], lmetrics[-1], atol=1e-6, rtol=0)
    if beta > 0:
        torch.testing.assert_close(m["kl"], lmetrics[0], atol=1e-5, rtol=1e-4)
    assert_grads(loss, ll, [h, w, b], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs():
    B, T, D, V = 2, 3, 8, 11
    h, w, b, t, mask, old, _, adv = make(B, T, D, V)
    f = oar.fused_linear_grpo_loss
    with pytest.raises(ValueError, match="hidden"):
        f(h[0], w, t, old, adv, mask)
    with pytest.raises(ValueError, match="targets"):
        f(h, w, t[:, :2], old, adv, mask)
    with pytest.raises(ValueError, match="mask"):
        f(h, w, t, old, adv, mask.float())
    with pytest.raises(ValueError, match="old_logp"):
        f(h, w, t, old[:, :2], adv, mask)
    with pytest.raises(ValueError, match="advantages"):
        f(h, w, t, old, adv[:1], mask)
    with pytest.raises(ValueError, match="weight"):
        f(h, w[:, :5], t, old, adv, mask)
    with pytest.raises(ValueError, match="targets"):
        bad = t.clone()
        bad[0, 0] = V  # out of range at a masked-in position
        f(h, w, bad, old, adv, mask)
    with pytest.raises(ValueError, match="max_completion_length"):
        f(h, w, t, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="ref_logp"):
        f(h, w, t, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="temperature"):
        f(h, w, t, old, adv, mask, temperature=-1.0)
    with pytest.raises(ValueError, match="loss_type"):
        f(h, w, t, old, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="hidden"):
        f(torch.randn(B, D, T).transpose(1, 2), w, t, old, adv, mask)
