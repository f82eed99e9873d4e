"""Bi-Level reshaping (docs/algorithm.md section 5), vectorized over the batch in PyTorch.

The torch path of oar.bilevel_reshape (CPU tensors without the C kernel, backend="torch"). The
test oracle is a separate, per-row version in oar_kernels/reference/bilevel.py. Rows are
independent; each is reshaped over its masked positions only (any pattern, not necessarily
contiguous).

Speed notes (CPU path): torch.where / masked_fill with a bool mask run several times slower
than float arithmetic on CPU, so the mask is applied as a 0/1 float (exact: x * 1 = x,
x * 0 = 0 and x + 0 = x for finite x), and a row sort goes through numpy's vectorized sort,
an order of magnitude faster than torch.sort on CPU. The results are bit-identical to the
direct formulation (torch.where padding, a per-row sort of n), checked on random inputs.
"""
from __future__ import annotations

import numpy as np
import torch

_EPS = 1e-8
_CPU_CHUNK_ELEMENTS = 1 << 16  # 256 KiB per float32 temporary


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending (values only)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.detach().numpy(), axis=1))
    return x.sort(dim=1).values


def bilevel_reshape_torch(
    scores: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.25,
    beta: float = 1.0,
    floor: float = 0.1,
    sum_to_len: bool = True,
) -> torch.Tensor:
    """Weights [B, T] float32, 1.0 where mask is False. No input checks (see oar.bilevel_reshape).

    Computes in float64 when scores are float64, else in float32.
    """
    out = torch.empty(scores.shape, dtype=torch.float32, device=scores.device)
    B, T = scores.shape
    if B == 0 or T == 0:
        return out
    # On CPU, rows go in groups small enough for each temporary to stay in the L2 cache;
    # the dozen elementwise passes below then run from cache instead of memory.
    rows = max(1, _CPU_CHUNK_ELEMENTS // max(T, 1)) if scores.device.type == "cpu" else max(B, 1)
    for start in range(0, B, rows):
        sl = slice(start, start + rows)
        _reshape_rows(scores[sl], mask[sl], tau, beta, floor, sum_to_len, out[sl])
    return out


def _reshape_rows(scores, mask, tau, beta, floor, sum_to_len, out):
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    on = mask.view(torch.uint8).to(dtype)  # 1.0 at masked positions
    off = 1.0 - on
    count = on.sum(dim=1, keepdim=True)  # exact in float; a bool sum would copy to int64 first

    # s = log1p(max(I, 0)) at masked positions, 0 elsewhere (scores there may be NaN / Inf)
    s = torch.nan_to_num(scores.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    s.mul_(on).clamp_min_(0).log1p_()
    empty = count == 0
    s_max = torch.where(empty, 0.0, s.amax(dim=1, keepdim=True))  # s >= 0: padding 0 is harmless
    big = torch.finfo(dtype).max
    key = torch.add(s, off, alpha=big)  # padding sorts last: s + big rounds to big
    s_min = torch.where(empty, 0.0, key.amin(dim=1, keepdim=True))
    span = s_max - s_min
    span = torch.where(span > 0, span, torch.ones_like(span))  # range taken as 1 when max == min

    # quantile of n = (s - min) / span, numpy's "linear" method. n is monotone in s, so its
    # order statistics are the normalized order statistics of s.
    last = (count.long() - 1).clamp_min_(0)  # all [rows, 1] from here to q
    virtual = tau * last.to(torch.float64)
    lo = virtual.floor()
    t = (virtual - lo).to(dtype)
    lo = lo.long()
    hi = torch.minimum(lo + 1, last)
    ordered = _sort_rows(key)
    a = (ordered.gather(1, lo) - s_min) / span
    b = (ordered.gather(1, hi) - s_min) / span
    diff = b - a
    q = torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's lerp
    q = torch.where(empty, 0.0, q)

    n = (s - s_min).div_(span)
    suppress = (n / (q + _EPS)).clamp_min_(floor)
    boost = (n - q).mul_(beta).div_(1 - q + _EPS).add_(1)
    # w = where(n < q, suppress, boost) as an exact 0/1 blend (both sides are finite)
    below = torch.lt(n, q, out=torch.empty_like(n))
    w = suppress.mul_(below).addcmul_(boost, below.neg_().add_(1)).mul_(on)
    if sum_to_len:
        # A row with R >= 1 has total >= 1 (its largest n gets a boost >= 1), so the
        # spec's "all ones when sum <= 0" only concerns empty rows: ones below.
        total = w.sum(dim=1, keepdim=True)
        w.mul_(count).div_(total + _EPS)
    torch.add(w, off, out=out)
