"""Bi-Level reshaping (docs/algorithm.md section 5), written row by row from the spec: the test oracle.

Each row's R scores at its masked positions (any pattern) are reshaped on their own:

    s = log1p(max(I, 0))
    n = (s - min s) / (max s - min s)          (the range is taken as 1 when max == min)
    q = quantile(n, tau)                       (numpy's default "linear" method, by hand below)
    w = max(n / (q + 1e-8), floor)   where n < q          (suppression)
    w = 1 + beta (n - q) / (1 - q + 1e-8)   elsewhere     (boosting)
    sum_to_len: w = w * R / (sum w + 1e-8)

and every unmasked position gets exactly 1 (a row with R = 0 is all ones). Computes in float64
when the scores are float64, else in float32, as the public op does; speed is no concern here.
The public op's own paths are separate code: oar_kernels/ops/_bilevel_torch.py (vectorized
torch), csrc/bilevel.c (CPU) and oar_kernels/kernels/bilevel.py (Triton).
"""
from __future__ import annotations

import math

import torch

EPS = 1e-8


def linear_quantile(sorted_values: torch.Tensor, tau: float) -> torch.Tensor:
    """The tau-quantile of an ascending 1-D tensor, numpy's "linear" method: the order
    statistics around position tau * (R - 1), interpolated as numpy's lerp does."""
    R = sorted_values.numel()
    pos = tau * (R - 1)
    k = math.floor(pos)
    t = pos - k
    a = sorted_values[k]
    b = sorted_values[min(k + 1, R - 1)]
    if t < 0.5:
        return a + (b - a) * t
    return b - (b - a) * (1 - t)


def bilevel_reshape_row(scores: torch.Tensor, tau: float, beta: float, floor: float, sum_to_len: bool) -> torch.Tensor:
    """Weights of one row's R >= 1 masked scores (1-D), in the scores' dtype."""
    R = scores.numel()
    s = torch.log1p(torch.clamp(scores, min=0.0))
    lo, hi = s.min(), s.max()
    span = hi - lo if hi > lo else torch.ones_like(hi)
    n = (s - lo) / span
    q = linear_quantile(torch.sort(n).values, tau)
    suppressed = torch.clamp(n / (q + EPS), min=floor)
    boosted = 1 + beta * (n - q) / (1 - q + EPS)
    w = torch.where(n < q, suppressed, boosted)
    if sum_to_len:
        w = w * R / (w.sum() + EPS)
    return w


def bilevel_reshape_reference(
    scores: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.25,
    beta: float = 1.0,
    floor: float = 0.1,
    sum_to_len: bool = True,
) -> torch.Tensor:
    """Weights [B, T] float32, 1.0 where mask is False. No input checks (see oar.bilevel_reshape);
    scores at masked positions must be finite (padding may hold anything)."""
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    out = torch.ones(scores.shape, dtype=torch.float32, device=scores.device)
    for b in range(scores.shape[0]):
        row_mask = mask[b].bool()
        if not row_mask.any():
            continue
        w = bilevel_reshape_row(scores[b][row_mask].to(dtype), tau, beta, floor, sum_to_len)
        out[b][row_mask] = w.to(torch.float32)
    return out
