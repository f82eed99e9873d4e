"""oar.fused_linear_logprob against the materialized reference, and its Triton kernels.

On CPU the Triton kernels run in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
so shapes stay small. Tolerances:
  fp32: forward atol 2e-5, gradients atol 3e-5 x the gradient's largest magnitude / rtol 1e-4
        (fp32 accumulation on both sides, different summation order; the entropy gradient has
        cancellations, measured at <= 9e-6 of its scale over 20 seeds);
  fp16 / bf16 inputs: the forward is computed in fp32 from the same 16-bit inputs as the
        reference, so it stays at atol 1e-4; gradients are rounded to the input dtype at the
        end: atol/rtol 2e-3 (fp16) and 2e-2 (bf16) relative to the gradient scale.
"""
import math

import pytest
import torch

import oar_kernels as oar
from oar_kernels.ops import fused_linear_logprob as op_mod
from oar_kernels.reference.logprob import linear_logprob_reference

BACKENDS = ["torch", "triton"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # a few rows per chunk, so every test crosses chunk boundaries (and a partial last chunk)
    monkeypatch.setitem(op_mod.CHUNK_BYTES, "cpu", 4 * 128 * 5)


def make(N, D, V, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g).to(dtype).requires_grad_(True)
    w = (torch.randn(V, D, generator=g) / math.sqrt(D) * 3).to(dtype).requires_grad_(True)
    b = (torch.randn(V, generator=g)).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    return h, w, b, t


def grads_of(outs, upstream, params):
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream))
    return torch.autograd.grad(loss, [p for p in params if p is not None])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "N,D,V,bias,temperature,entropy",
    [
        (1, 16, 37, True, 1.0, False),  # N = 1
        (19, 40, 101, True, 0.7, False),  # nothing a power of two, temperature != 1
        (13, 24, 64, False, 1.3, True),  # entropy, no bias
        (8, 33, 129, True, 0.5, True),
    ],
)
def test_matches_reference_fp32(backend, N, D, V, bias, temperature, entropy):
    h, w, b, t = make(N, D, V, bias=bias)
    out = oar.fused_linear_logprob(h, w, t, bias=b, temperature=temperature, return_entropy=entropy, backend=backend)
    ref = linear_logprob_reference(h, w, t, bias=b, temperature=temperature, return_entropy=entropy)
    outs = out if entropy else (out,)
    refs = ref if entropy else (ref,)
    for o, r in zip(outs, refs):
        assert o.dtype == torch.float32 and o.shape == (N,)
        torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(N * V)
    up = [torch.randn(N, dtype=torch.float64, generator=g) for _ in outs]
    params = (h, w, b)
    for gf, gr in zip(grads_of(outs, up, params), grads_of(refs, up, params)):
        torch.testing.assert_close(gf, gr, atol=3e-5 * max(1.0, gr.abs().max().item()), rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_inputs(backend, dtype, tol):
    N, D, V = 11, 40, 75
    h, w, b, t = make(N, D, V, dtype=dtype)
    lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.8, return_entropy=True, backend=backend)
    rlp, rent = linear_logprob_reference(h, w, t, bias=b, temperature=0.8, return_entropy=True)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, rlp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ent, rent, atol=1e-4, rtol=1e-4)
    g = torch.Generator().manual_seed(1)
    up = [torch.randn(N, dtype=torch.float64, generator=g) for _ in range(2)]
    for gf, gr in zip(grads_of((lp, ent), up, (h, w, b)), grads_of((rlp, rent), up, (h, w, b))):
        assert gf.dtype == dtype
        scale = gr.abs().max().item()
        torch.testing.assert_close(gf.float(), gr.float(), atol=tol * scale, rtol=tol)


def test_entropy_only_gradient_and_no_grad_inputs():
    h, w, b, t = make(6, 16, 40)
    lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, return_entropy=True, backend="torch")
    rlp, rent = linear_logprob_reference(h, w, t, bias=b, return_entropy=True)
    for gf, gr in zip(torch.autograd.grad(ent.sum(), (h, w, b)), torch.autograd.grad(rent.sum(), (h, w, b))):
        torch.testing.assert_close(gf, gr, atol=2e-5, rtol=1e-4)
    # no input requires grad: plain forward
    with torch.no_grad():
        out = oar.fused_linear_logprob(h, w, t, bias=b, backend="torch")
    torch.testing.assert_close(out, rlp.detach(), atol=2e-5, rtol=1e-5)


def test_gradcheck_float64_torch_path():
    h, w, b, t = make(5, 6, 9, dtype=torch.float64)

    def f(h, w, b):
        return oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.9, return_entropy=True, backend="torch")

    assert torch.autograd.gradcheck(f, (h, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    h, w, b, t = make(0, 8, 10)
    out = oar.fused_linear_logprob(h, w, t, bias=b, backend=backend)
    assert out.shape == (0,)
    gh, gw, gb = torch.autograd.grad(out.sum(), (h, w, b), allow_unused=True)
    assert gh.shape == (0, 8) and torch.count_nonzero(gw) == 0


def test_float64_reference_tight():
    h, w, b, t = make(9, 12, 31, dtype=torch.float64)
    out = oar.fused_linear_logprob(h, w, t, bias=b, backend="torch")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, linear_logprob_reference(h, w, t, bias=b), atol=1e-12, rtol=1e-12)


def test_chunking_does_not_change_result(monkeypatch):
    h, w, b, t = make(23, 16, 50)
    monkeypatch.setitem(op_mod.CHUNK_BYTES, "cpu", 1 << 30)
    one = oar.fused_linear_logprob(h, w, t, bias=b, backend="torch")
    g_one = torch.autograd.grad(one.sum(), (h, w, b))
    monkeypatch.setitem(op_mod.CHUNK_BYTES, "cpu", 4 * 50 * 3)
    many = oar.fused_linear_logprob(h, w, t, bias=b, backend="torch")
    g_many = torch.autograd.grad(many.sum(), (h, w, b))
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)
    # Gradients sum per-chunk partials, so fp32 rounding differs (seen: 1.1e-6 on entries ~0.04);
    # a chunking bug (a row or vocabulary slice dropped or counted twice) is off by > 1e-2.
    for a, c in zip(g_one, g_many):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", ["vocab", "rows"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-5), (torch.bfloat16, 2e-2)])
def test_backward_either_axis(monkeypatch, backend, axis, dtype, tol):
    """The backward walks vocabulary blocks (d weight written once per block) or row chunks
    (d weight accumulated); both give the reference gradients of logp and entropy, with many
    blocks and a partial last one. A dropped or doubled block, a target gradient credited to
    the wrong block or a bias slice off by one is off by far more than the tolerance."""
    from oar_kernels.ops import _lm_head_chunks as chunks

    monkeypatch.setattr(chunks, "grad_axis", lambda n, v: axis)
    monkeypatch.setitem(chunks.CHUNK_BYTES, "cpu", 4 * 23 * 7)  # 7 columns of 23 rows; 2 rows of 77
    N, D, V = (23, 24, 77)
    h, w, b, t = make(N, D, V, dtype=dtype)
    t[:4] = torch.tensor([0, 6, 7, V - 1])  # targets on block edges
    lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.8, return_entropy=True, backend=backend)
    rlp, rent = linear_logprob_reference(h, w, t, bias=b, temperature=0.8, return_entropy=True)
    up = [torch.randn(N, dtype=torch.float64) for _ in range(2)]
    for gf, gr in zip(grads_of((lp, ent), up, (h, w, b)), grads_of((rlp, rent), up, (h, w, b))):
        assert gf.dtype == dtype
        scale = gr.abs().max().item()
        torch.testing.assert_close(gf.float(), gr.float(), atol=tol * scale, rtol=max(tol, 1e-4))


def test_backward_axis_is_the_smaller_accumulator():
    from oar_kernels.ops._lm_head_chunks import grad_axis

    assert grad_axis(8192, 131072) == "vocab" and grad_axis(4096, 1000) == "rows"


# ----------------------------------------------------------------------------- kernels


@pytest.fixture
def kernels(monkeypatch):
    from oar_kernels.kernels import linear_logprob as K

    return K


@pytest.fixture
def poisoned(monkeypatch):
    """Every kernel output buffer is NaN before the launch: an unwritten element fails."""
    from oar_kernels.kernels import linear_logprob as K

    def nan_empty(shape, device, dtype):
        return torch.full(shape, float("nan"), device=device, dtype=dtype)

    monkeypatch.setattr(K, "_empty", nan_empty)
    return K


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_forward_kernel(poisoned, splits, dtype):
    K = poisoned
    h, w, b, t = make(21, 40, 150, dtype=dtype)
    zt, lse, ent = K.fused_forward(h.detach(), w.detach(), t, b.detach(), 0.7, True, num_splits=splits)
    rlp, rent = linear_logprob_reference(h.detach(), w.detach(), t, b.detach(), 0.7, return_entropy=True)
    torch.testing.assert_close(zt - lse, rlp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent, rent, atol=2e-5, rtol=1e-5)


def test_chunk_kernels(poisoned):
    K = poisoned
    h, w, b, t = make(7, 16, 77)
    z = torch.addmm(b.detach(), h.detach(), w.detach().t())
    zt, lse, ent = K.chunk_stats(z, t, 0.6, True)
    rlp, rent = linear_logprob_reference(h.detach(), w.detach(), t, b.detach(), 0.6, return_entropy=True)
    torch.testing.assert_close(zt - lse, rlp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent, rent, atol=2e-5, rtol=1e-5)
    # d logits against autograd through log_softmax
    gen = torch.Generator().manual_seed(3)
    g, gh = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
    out = torch.full_like(z, float("nan"))
    K.chunk_dlogits(z, out, t, lse, g, 0.6, gh, ent)
    zz = z.clone().requires_grad_(True)
    ls = torch.log_softmax(zz / 0.6, dim=-1)
    loss = (ls.gather(1, t[:, None]).squeeze(1) * g).sum() + (-(ls.exp() * ls).sum(1) * gh).sum()
    (ref,) = torch.autograd.grad(loss, zz)
    # fp32 vs fp32 autograd; the entropy term p (log p + H) adds a few ulps of |log p|
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # in place (out is z itself), without the entropy term
    zz2 = z.clone()
    K.chunk_dlogits(zz2, zz2, t, lse, g, 0.6)
    zr = z.clone().requires_grad_(True)
    (ref2,) = torch.autograd.grad((torch.log_softmax(zr / 0.6, -1).gather(1, t[:, None]).squeeze(1) * g).sum(), zr)
    torch.testing.assert_close(zz2, ref2, atol=1e-6, rtol=1e-5)
    # a block of vocabulary columns (col0 > 0): the same columns of the whole-row result
    c0, c1 = 30, 61
    blk = z[:, c0:c1].contiguous()
    outb = torch.full_like(blk, float("nan"))
    K.chunk_dlogits(blk, outb, t, lse, g, 0.6, gh, ent, col0=c0)
    torch.testing.assert_close(outb, ref[:, c0:c1], atol=1e-5, rtol=1e-5)


class _GridRecorder:
    def __init__(self):
        self.grids = []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return lambda *a, **k: None


def test_grids_use_axis0_only(monkeypatch, kernels):
    """Long sequences / big vocabularies: every launch is 1-D (axis 0 allows 2**31 - 1 programs),
    never more than 65535 programs on axes 1 or 2."""
    K = kernels
    rec = _GridRecorder()
    monkeypatch.setattr(K, "_fused_fwd_kernel", rec)
    monkeypatch.setattr(K, "_chunk_stats_kernel", rec)
    monkeypatch.setattr(K, "_chunk_dlogits_kernel", rec)
    N, D, V = 2_000_000, 16, 200_000
    h = torch.empty((N, D))
    w = torch.empty((V, D))
    t = torch.zeros(N, dtype=torch.long)
    K.fused_forward(h, w, t, None, 1.0, False, num_splits=4)
    z = torch.empty((100_000, 2))
    tt = torch.zeros(100_000, dtype=torch.long)
    K.chunk_stats(z, tt, 1.0, False)
    K.chunk_dlogits(z, z, tt, torch.zeros(100_000), torch.zeros(100_000), 1.0)
    assert len(rec.grids) == 3
    for grid in rec.grids:
        assert len(grid) == 1
    assert rec.grids[0][0] > 65535 and rec.grids[1][0] == 100_000


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs():
    h, w, b, t = make(4, 8, 10)
    f = oar.fused_linear_logprob
    with pytest.raises(ValueError, match="hidden"):
        f(h[0], w, t)
    with pytest.raises(ValueError, match="weight"):
        f(h, w[:, :7], t)
    with pytest.raises(ValueError, match="weight"):
        f(h, w.double(), t)
    with pytest.raises(ValueError, match="weight"):
        f(h, torch.empty(10, 8, device="meta"), t)
    with pytest.raises(ValueError, match="bias"):
        f(h, w, t, bias=torch.zeros(9))
    with pytest.raises(ValueError, match="targets"):
        f(h, w, t.float())
    with pytest.raises(ValueError, match="targets"):
        f(h, w, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="targets"):
        f(h, w, torch.tensor([0, -1, 3, 2]))
    with pytest.raises(ValueError, match="hidden"):
        f(torch.randn(8, 4).t(), w, t)  # last dim not contiguous
    with pytest.raises(ValueError, match="temperature"):
        f(h, w, t, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        f(h, w, t, backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        f(h.double(), w.double(), t, backend="triton")
    with pytest.raises(ValueError, match="return_entropy"):
        f(h, w, t, return_entropy=1)
    with pytest.raises(ValueError, match="forward_mode"):
        f(h, w, t, forward_mode="tiled")


@pytest.mark.parametrize("mode", ["chunked", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_forward_modes(mode, dtype):
    """Both Triton forwards (cuBLAS logits chunk + row-stats kernel; the fused kernel) agree
    with the reference, and so do the gradients after either."""
    h, w, b, t = make(10, 24, 90, dtype=dtype)
    lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.9, return_entropy=True, backend="triton",
                                       forward_mode=mode)
    rlp, rent = linear_logprob_reference(h, w, t, bias=b, temperature=0.9, return_entropy=True)
    torch.testing.assert_close(lp, rlp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent, rent, atol=2e-5, rtol=1e-5)
    up = [torch.randn(10, dtype=torch.float64) for _ in range(2)]
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    for gf, gr in zip(grads_of((lp, ent), up, (h, w, b)), grads_of((rlp, rent), up, (h, w, b))):
        scale = 1.0 if dtype == torch.float32 else gr.abs().max().item()
        torch.testing.assert_close(gf.float(), gr.float(), atol=tol * scale, rtol=max(tol, 1e-4))
