"""No op assumes a memory layout: strided views give the reference's values and gradients.

Each op gets inputs as trainers hand them over: a bias that is a strided view, hidden states
that are a column slice of a wider tensor (row stride > D), a weight that is a slice of a
larger (tied) embedding, targets / advantages / masks / log-probs / weights that are strided
views. Both backends (Triton runs in the interpreter on CPU) are compared with
oar_kernels.reference on the same values made contiguous. Tolerances as in the ops' own
tests (fp32: forward 2e-5, gradients 3e-5 of their scale).
"""
import math

import pytest
import torch

import oar_kernels as oar
from oar_kernels.ops import fused_linear_logprob as lp_mod
from oar_kernels.reference.bilevel import bilevel_reshape_reference
from oar_kernels.reference.logprob import linear_logprob_reference
from oar_kernels.reference.saliency import saliency_reference

BACKENDS = ["torch", "triton"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setitem(lp_mod.CHUNK_BYTES, "cpu", 4 * 64 * 5)


def strided(x: torch.Tensor) -> torch.Tensor:
    """The same values as x, as a non-contiguous view (every other element of a 2x tensor along
    the last dim)."""
    big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    big[..., ::2] = x
    v = big[..., ::2]
    assert not v.is_contiguous() and torch.equal(v, x)
    return v


def lm_head_inputs(N, D, V, g):
    """hidden: columns [3, 3 + D) of a [N, D + 7] tensor; weight: rows [5, 5 + V) of a tied
    [V + 9, D] embedding, columns of a wider one; bias and targets strided."""
    wide = torch.randn(N, D + 7, generator=g)
    emb = torch.randn(V + 9, D + 4, generator=g) / math.sqrt(D) * 3
    h_leaf = wide.requires_grad_(True)
    w_leaf = emb.requires_grad_(True)
    b_leaf = torch.randn(2 * V, generator=g).requires_grad_(True)
    h = h_leaf[:, 3:3 + D]
    w = w_leaf[5:5 + V, 2:2 + D]
    b = b_leaf[::2]
    t = strided(torch.randint(0, V, (N,), generator=g))
    assert h.stride(0) == D + 7 and w.stride(0) == D + 4 and b.stride(0) == 2
    return (h_leaf, w_leaf, b_leaf), (h, w, b, t)


def grads(outs, leaves, ups):
    return torch.autograd.grad(sum((o.double() * u).sum() for o, u in zip(outs, ups)), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entropy", [False, True])
def test_fused_linear_logprob_strided(backend, entropy):
    g = torch.Generator().manual_seed(3)
    N, D, V = 9, 20, 45
    leaves, (h, w, b, t) = lm_head_inputs(N, D, V, g)
    out = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.9, return_entropy=entropy, backend=backend)
    ref = linear_logprob_reference(h.contiguous(), w.contiguous(), t.contiguous(), b.contiguous(), 0.9,
                                   return_entropy=entropy)
    outs, refs = (out, ref) if entropy else ((out,), (ref,))
    ups = [torch.randn(N, dtype=torch.float64, generator=g) for _ in outs]
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-5)
    for a, c in zip(grads(outs, leaves, ups), grads(refs, leaves, ups)):
        torch.testing.assert_close(a, c, atol=3e-5 * max(1.0, c.abs().max().item()), rtol=1e-4)


def test_triton_forward_reads_a_strided_bias():
    """The fused forward kernel itself (no op in between) with bias = x[::2]: it once read
    the bias as if its stride were 1."""
    from oar_kernels.kernels.linear_logprob import fused_forward

    g = torch.Generator().manual_seed(4)
    N, D, V = 6, 16, 40
    h, w = torch.randn(N, D, generator=g), torch.randn(V, D, generator=g)
    b = torch.randn(2 * V, generator=g)[::2]
    t = torch.randint(0, V, (N,), generator=g)
    zt, lse, _ = fused_forward(h, w, t, b, 1.0, False)
    ref = linear_logprob_reference(h, w, t, b.contiguous())
    torch.testing.assert_close(zt - lse, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("token_adv", [False, True])
def test_fused_linear_grpo_loss_strided(backend, token_adv):
    g = torch.Generator().manual_seed(5)
    B, T, D, V = 2, 5, 12, 33
    h_leaf = torch.randn(B, T, D + 6, generator=g).requires_grad_(True)
    w_leaf = (torch.randn(V + 4, D, generator=g) / math.sqrt(D) * 3).requires_grad_(True)
    b_leaf = torch.randn(V, 2, generator=g).requires_grad_(True)
    h, w, b = h_leaf[..., 1:1 + D], w_leaf[2:2 + V], b_leaf[:, 1]
    t = strided(torch.randint(0, V, (B, T), generator=g))
    mask = strided(torch.rand(B, T, generator=g) > 0.2)
    old = strided(-3.5 + 0.3 * torch.randn(B, T, generator=g))
    ref_lp = strided(-3.5 + 0.2 * torch.randn(B, T, generator=g))
    weights = strided(torch.rand(B, T, generator=g) + 0.5)
    adv = strided(torch.randn(B, T, generator=g)) if token_adv else torch.randn(2 * B, generator=g)[::2]
    assert not adv.is_contiguous()
    kw = dict(weights=weights, ref_logp=ref_lp, beta=0.05, epsilon=0.2)
    loss, m = oar.fused_linear_grpo_loss(h, w, t, old, adv, mask, bias=b, backend=backend, **kw)
    lp = linear_logprob_reference(h.reshape(B * T, D), w.contiguous(), t.reshape(-1), b.contiguous()).view(B, T)
    rl, rm = oar.grpo_loss(lp, old.contiguous(), adv.contiguous(), mask.contiguous(),
                           weights=weights.contiguous(), ref_logp=ref_lp.contiguous(), beta=0.05, epsilon=0.2)
    torch.testing.assert_close(loss, rl, atol=1e-6, rtol=1e-5)
    for k in rm:
        torch.testing.assert_close(m[k], rm[k], atol=1e-6, rtol=1e-5)
    leaves = (h_leaf, w_leaf, b_leaf)
    for a, c in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(rl, leaves)):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-4)


def test_grpo_loss_strided():
    """grpo_loss (torch only) on strided log-probs, advantages, masks and weights."""
    g = torch.Generator().manual_seed(6)
    B, T = 3, 7
    lp_leaf = (-2 + 0.1 * torch.randn(B, 2 * T, generator=g)).requires_grad_(True)
    lp = lp_leaf[:, ::2]
    old = strided(-2 + 0.1 * torch.randn(B, T, generator=g))
    adv = torch.randn(2 * B, generator=g)[::2]
    mask = strided(torch.rand(B, T, generator=g) > 0.3)
    w = strided(torch.rand(B, T, generator=g) + 0.5)
    loss, _ = oar.grpo_loss(lp, old, adv, mask, weights=w)
    lpc = lp.detach().clone().requires_grad_(True)
    rl, _ = oar.grpo_loss(lpc, old.contiguous(), adv.contiguous(), mask.contiguous(), weights=w.contiguous())
    torch.testing.assert_close(loss, rl)
    (ga,) = torch.autograd.grad(loss, lp_leaf)
    (gr,) = torch.autograd.grad(rl, lpc)
    torch.testing.assert_close(ga[:, ::2], gr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bilevel_reshape_strided(backend):
    g = torch.Generator().manual_seed(7)
    B, T = 4, 23
    scores = torch.rand(B, T, generator=g) * 3
    mask = torch.rand(B, T, generator=g) > 0.3
    s_t = scores.t().contiguous().t()  # column-major
    m_s = strided(mask)
    s_row = torch.rand(B, T + 5, generator=g)[:, 2:2 + T]  # row-strided slice
    s_row.copy_(scores)
    want = bilevel_reshape_reference(scores, mask, 0.25, 1.0, 0.1, True)
    for s in (s_t, s_row):
        got = oar.bilevel_reshape(s, m_s, backend=backend)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_advantages_and_saliency_strided(backend):
    g = torch.Generator().manual_seed(8)
    rewards = torch.randn(16, generator=g)
    torch.testing.assert_close(oar.group_advantages(strided(rewards), group_size=4),
                               oar.group_advantages(rewards, group_size=4))
    base = torch.randn(3, 6, 2 * 8, generator=g)
    x = base[..., 3:11].requires_grad_(False)  # row-strided [B, T, D] slice
    probe = oar.SaliencyProbe(backend=backend)
    y = probe(x)
    up = strided(torch.randn(3, 6, 8, generator=g))
    (y * up).sum().backward()
    gxi, gn = saliency_reference(up.contiguous(), x.contiguous())
    torch.testing.assert_close(probe.grad_x_input, gxi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probe.grad_norm, gn, atol=1e-5, rtol=1e-5)
