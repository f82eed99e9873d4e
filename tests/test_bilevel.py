"""oar.bilevel_reshape against an independent per-row numpy implementation of docs/algorithm.md §5."""
import numpy as np
import pytest
import torch

import oar_kernels as oar


def numpy_bilevel_row(scores, tau, beta, floor, sum_to_len):
    """The formula, written directly from the spec for one row's R masked scores (float64)."""
    scores = np.asarray(scores, dtype=np.float64)
    R = scores.size
    if R == 0:
        return scores
    s = np.log1p(np.maximum(scores, 0.0))
    lo, hi = s.min(), s.max()
    rng = hi - lo if hi > lo else 1.0
    n = (s - lo) / rng
    q = np.quantile(n, tau)  # numpy's default: linear interpolation
    w = np.where(n < q, np.maximum(n / (q + 1e-8), floor), 1.0 + beta * (n - q) / (1.0 - q + 1e-8))
    if sum_to_len:
        total = w.sum()
        w = w * R / (total + 1e-8) if total > 0 else np.ones_like(w)
    return w


def numpy_bilevel(scores, mask, **kw):
    scores, mask = scores.double().numpy(), mask.numpy()
    out = np.ones_like(scores)
    for b in range(scores.shape[0]):
        out[b, mask[b]] = numpy_bilevel_row(scores[b, mask[b]], **kw)
    return torch.from_numpy(out)


def ragged_batch(gen, B=12, T=37, contiguous=True):
    scores = torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
    if contiguous:
        start = torch.randint(0, T // 3, (B,), generator=gen)
        length = torch.randint(0, T, (B,), generator=gen)
        pos = torch.arange(T)
        mask = (pos >= start[:, None]) & (pos < (start + length)[:, None])
    else:
        mask = torch.rand(B, T, generator=gen) < 0.6
    mask[0] = False  # R = 0
    mask[1] = False
    mask[1, 5] = True  # R = 1
    scores[2] = 0.7  # all equal
    scores[3] = -scores[3]  # all negative -> clamp to 0 -> all equal
    scores[4, ::2] *= -1  # mixed signs
    scores[5] *= 1e30  # huge
    scores[6, :] = torch.tensor(0.0)
    scores[6, 3] = 1e-12  # tiny spread
    return scores, mask


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("sum_to_len", [True, False])
@pytest.mark.parametrize("contiguous", [True, False])
def test_matches_numpy(tau, sum_to_len, contiguous):
    gen = torch.Generator().manual_seed(int(tau * 100) + 7 * sum_to_len + 3 * contiguous)
    scores, mask = ragged_batch(gen, contiguous=contiguous)
    kw = dict(tau=tau, beta=1.0, floor=0.1, sum_to_len=sum_to_len)
    want = numpy_bilevel(scores, mask, **kw)
    got64 = oar.bilevel_reshape(scores, mask, backend="torch", **kw)
    got32 = oar.bilevel_reshape(scores.float(), mask, backend="torch", **kw)
    assert got64.dtype == torch.float32 and got32.dtype == torch.float32
    # float64 compute: exact up to the final cast to float32.
    torch.testing.assert_close(got64.double(), want, rtol=2e-7, atol=1e-7)
    # float32 compute: single-precision rounding of log1p / division.
    torch.testing.assert_close(got32.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta,floor", [(0.0, 0.0), (0.5, 0.3), (2.0, 1.0)])
def test_matches_numpy_other_hparams(beta, floor):
    gen = torch.Generator().manual_seed(11)
    scores, mask = ragged_batch(gen, B=9, T=64)
    kw = dict(tau=0.3, beta=beta, floor=floor, sum_to_len=True)
    torch.testing.assert_close(
        oar.bilevel_reshape(scores, mask, **kw).double(), numpy_bilevel(scores, mask, **kw), rtol=2e-7, atol=1e-7
    )


def test_half_precision_scores():
    gen = torch.Generator().manual_seed(3)
    scores, mask = ragged_batch(gen)
    scores = scores.clamp(max=1e4)
    for dtype in (torch.float16, torch.bfloat16):
        s = scores.to(dtype)
        want = numpy_bilevel(s.double(), mask, tau=0.25, beta=1.0, floor=0.1, sum_to_len=True)
        # Inputs are rounded to half first; computation then runs in float32.
        torch.testing.assert_close(oar.bilevel_reshape(s, mask).double(), want, rtol=1e-4, atol=1e-5)


def test_edge_cases_and_invariants():
    gen = torch.Generator().manual_seed(5)
    scores, mask = ragged_batch(gen, B=32, T=50)
    floor = 0.1
    w = oar.bilevel_reshape(scores, mask, floor=floor)
    assert torch.isfinite(w).all()
    assert (w[~mask] == 1.0).all()
    assert (w[0] == 1).all()  # R = 0: no weights
    assert w[1, 5] == pytest.approx(1.0, abs=1e-6)  # R = 1 gives [1]
    for b in (2, 3):  # all-equal scores (and all-negative, clamped) give all ones
        torch.testing.assert_close(w[b][mask[b]], torch.ones(int(mask[b].sum())), rtol=0, atol=1e-6)
    for b in range(32):
        R = int(mask[b].sum())
        if R == 0:
            continue
        wb, sb = w[b][mask[b]].double(), scores[b][mask[b]]
        # Mean weight 1 over the masked span when sum_to_len.
        assert wb.mean().item() == pytest.approx(1.0, abs=1e-5)
        # Weights >= floor, scaled by the row's normalisation.
        raw = oar.bilevel_reshape(scores[b : b + 1], mask[b : b + 1], floor=floor, sum_to_len=False)
        scale = R / raw[0][mask[b]].double().sum()
        assert (wb >= floor * scale - 1e-6).all()
        # Monotone (non-decreasing) in the score.
        order = torch.argsort(sb, stable=True)
        assert (wb[order].diff() >= -1e-6).all()


def test_batch_rows_are_independent():
    gen = torch.Generator().manual_seed(9)
    scores, mask = ragged_batch(gen)
    full = oar.bilevel_reshape(scores, mask)
    for b in range(scores.shape[0]):
        assert torch.equal(full[b], oar.bilevel_reshape(scores[b : b + 1], mask[b : b + 1])[0])


def test_rejects_bad_input():
    s, m = torch.rand(2, 4), torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="scores"):
        oar.bilevel_reshape(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        oar.bilevel_reshape(torch.tensor([[float("inf"), 1.0]]), torch.ones(1, 2, dtype=torch.bool))
    # NaN where the mask is False is padding, not an error.
    w = oar.bilevel_reshape(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[False, True]]))
    assert torch.equal(w, torch.ones(1, 2))
    with pytest.raises(ValueError, match="scores"):
        oar.bilevel_reshape(torch.rand(4), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        oar.bilevel_reshape(torch.randint(0, 3, (2, 4)), m)
    with pytest.raises(ValueError, match="scores"):
        oar.bilevel_reshape([[1.0]], m)
    with pytest.raises(ValueError, match="mask"):
        oar.bilevel_reshape(s, m.float())
    with pytest.raises(ValueError, match="mask"):
        oar.bilevel_reshape(s, m[:, :3])
    for name, kw in [("tau", dict(tau=1.5)), ("tau", dict(tau=-0.1)), ("beta", dict(beta=-1.0)),
                     ("floor", dict(floor=2.0)), ("tau", dict(tau=float("nan"))),
                     ("sum_to_len", dict(sum_to_len=1)), ("backend", dict(backend="cuda"))]:
        with pytest.raises(ValueError, match=name):
            oar.bilevel_reshape(s, m, **kw)
