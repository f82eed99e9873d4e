"""Bi-Level reshaping Triton kernel vs the torch reference (oar_kernels/reference/bilevel.py).

On CPU the kernel runs in Triton's interpreter (tests/conftest.py), so shapes stay small.
Tolerances: both sides upcast the same (possibly 16-bit) scores to fp32, so they differ only
by log1p implementations (a few ulp) and the order of the row sum: rtol = atol = 1e-5.
float64 scores: the reference works in float64, the kernel in float32 after log1p: 1e-5 too.
"""
import pytest
import torch

import oar_kernels as oar
from oar_kernels.kernels.bilevel import bilevel_reshape_triton
from oar_kernels.reference.bilevel import bilevel_reshape_reference

TOL = dict(rtol=1e-5, atol=1e-5)


def _edge_batch(T: int = 37, seed: int = 0):
    """Rows: ragged span, R=0, R=1, all-equal, negatives, huge, scattered mask, mixed."""
    g = torch.Generator().manual_seed(seed)
    B = 8
    scores = torch.rand(B, T, generator=g) * 4
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 3:29] = True                                   # ragged contiguous span
    # row 1: R = 0 (all ones out)
    mask[2, 11] = True                                     # R = 1
    mask[3, 2:20] = True
    scores[3] = 2.5                                        # all equal
    mask[4, :] = True
    scores[4] = -torch.rand(T, generator=g) * 3            # negatives clamp to 0
    scores[4, ::5] = torch.rand(len(range(0, T, 5)), generator=g)
    mask[5, 1:] = True
    scores[5] = torch.rand(T, generator=g) * 1e30          # huge
    mask[6] = torch.rand(T, generator=g) < 0.4             # scattered, non-contiguous
    mask[7] = torch.rand(T, generator=g) < 0.8
    scores[7] = torch.randn(T, generator=g).exp() * 3      # heavy tailed, with ties below
    scores[7, ::3] = 0.0
    return scores, mask


def _poisoned_out(shape):
    return torch.full(shape, float("nan"), dtype=torch.float32)


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("sum_to_len", [True, False])
def test_matches_reference_fp32(tau, sum_to_len):
    scores, mask = _edge_batch(seed=int(tau * 4) + 10 * sum_to_len)
    out = _poisoned_out(scores.shape)
    w = bilevel_reshape_triton(scores, mask, tau, 1.0, 0.1, sum_to_len, out=out)
    ref = bilevel_reshape_reference(scores, mask, tau, 1.0, 0.1, sum_to_len)
    assert w.data_ptr() == out.data_ptr()
    assert not torch.isnan(w).any()
    torch.testing.assert_close(w, ref, **TOL)
    assert torch.equal(w[~mask], torch.ones_like(w[~mask]))
    assert torch.equal(w[1], torch.ones_like(w[1]))       # R = 0
    assert w[2, 11].item() == pytest.approx(1.0, abs=1e-6)  # R = 1
    assert torch.allclose(w[3], torch.ones_like(w[3]))    # all equal
    if sum_to_len:
        counts = mask.sum(1)
        sums = torch.where(mask, w, torch.zeros_like(w)).sum(1)
        torch.testing.assert_close(sums, counts.float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_matches_reference_dtypes(dtype):
    scores, mask = _edge_batch(seed=3)
    scores[5] = torch.rand(scores.shape[1]) * 6e4 if dtype == torch.float16 else scores[5]
    scores = scores.to(dtype)
    w = bilevel_reshape_triton(scores, mask, 0.25, 1.0, 0.1, True, out=_poisoned_out(scores.shape))
    ref = bilevel_reshape_reference(scores, mask, 0.25, 1.0, 0.1, True)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, ref, **TOL)


def test_other_parameters_and_public_op():
    scores, mask = _edge_batch(T=53, seed=7)
    kw = dict(tau=1 / 3, beta=2.5, floor=0.0, sum_to_len=True)
    w = oar.bilevel_reshape(scores, mask, backend="triton", **kw)
    torch.testing.assert_close(w, bilevel_reshape_reference(scores, mask, **kw), **TOL)


def test_nan_scores_outside_mask_are_never_read():
    scores, mask = _edge_batch(seed=5)
    scores = scores.masked_fill(~mask, float("nan"))
    w = bilevel_reshape_triton(scores, mask, 0.25, 1.0, 0.1, True, out=_poisoned_out(scores.shape))
    ref = bilevel_reshape_reference(scores.nan_to_num(0.0), mask, 0.25, 1.0, 0.1, True)
    assert not torch.isnan(w).any()
    torch.testing.assert_close(w, ref, **TOL)


def test_noncontiguous_inputs():
    scores, mask = _edge_batch(T=40, seed=9)
    scores_t = scores.t().contiguous().t()          # column-major view
    mask_s = mask.repeat_interleave(2, dim=1)[:, ::2]  # strided view, same pattern
    assert torch.equal(mask_s, mask)
    assert not scores_t.is_contiguous() and not mask_s.is_contiguous()
    w = bilevel_reshape_triton(scores_t, mask_s, 0.5, 1.0, 0.1, False)
    torch.testing.assert_close(w, bilevel_reshape_reference(scores, mask, 0.5, 1.0, 0.1, False), **TOL)


@pytest.mark.parametrize("tau,sum_to_len", [(0.25, True), (1.0, False)])
def test_blocked_path(tau, sum_to_len):
    """Rows longer than the register block: walked in pieces (forced with a tiny block)."""
    scores, mask = _edge_batch(T=40, seed=11)
    scores, mask = scores[[0, 1, 6, 7]], mask[[0, 1, 6, 7]]
    out = _poisoned_out(scores.shape)
    w = bilevel_reshape_triton(scores, mask, tau, 1.0, 0.1, sum_to_len, out=out, max_single_block=16)
    torch.testing.assert_close(w, bilevel_reshape_reference(scores, mask, tau, 1.0, 0.1, sum_to_len), **TOL)


def test_long_rows_default_blocking():
    """T above the register limit takes the blocked path on its own (T = 4099: 3 blocks)."""
    g = torch.Generator().manual_seed(1)
    T = 4099
    scores = torch.rand(2, T, generator=g) ** 3 * 10
    mask = torch.rand(2, T, generator=g) < 0.7
    w = bilevel_reshape_triton(scores, mask, 0.25, 1.0, 0.1, True, out=_poisoned_out((2, T)))
    torch.testing.assert_close(w, bilevel_reshape_reference(scores, mask, 0.25, 1.0, 0.1, True), **TOL)


def test_quantile_is_exact():
    """With sum_to_len off and beta = 0, tokens at or above q get exactly 1 and those below
    get n / q: the split point itself checks the selected order statistics."""
    vals = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 7.0, 6.0, 9.0, 8.0, 0.5]])
    mask = torch.ones_like(vals, dtype=torch.bool)
    for tau in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        w = bilevel_reshape_triton(vals, mask, tau, 0.0, 0.0, False)
        s = torch.log1p(vals)
        n = (s - s.min()) / (s.max() - s.min())
        q = torch.quantile(n.double(), tau).float()
        below = n < q
        assert torch.equal(w[~below], torch.ones_like(w[~below])), tau
        torch.testing.assert_close(w[below], (n / (q + 1e-8))[below], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (2, 1)])
def test_degenerate_shapes(shape):
    scores = torch.rand(shape)
    mask = torch.ones(shape, dtype=torch.bool)
    w = bilevel_reshape_triton(scores, mask, 0.25, 1.0, 0.1, True)
    assert w.shape == shape and w.dtype == torch.float32
    torch.testing.assert_close(w, bilevel_reshape_reference(scores, mask), **TOL)


def test_benchmark_gpu_rows_run_blind():
    """benchmarks/gpu_check.py:bilevel_rows runs end to end (tiny sizes, CPU interpreter)."""
    from bench_loader import load_benchmark

    rows = load_benchmark("gpu_check").bilevel_rows("cpu", batch=3, seq=40, long_shape=(1, 70), repeats=1)
    assert len(rows) == 5
    for row in rows:
        assert row.op == "bilevel_reshape" and "error" not in row.metric, row
    assert all(r.ok for r in rows[1:])  # correctness rows; the speed row is meaningless here
