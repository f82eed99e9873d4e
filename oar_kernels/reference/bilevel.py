"""Bi-Level reshaping (OAR_SPEC.md section 5), vectorized over the batch in plain PyTorch.

This is both the test oracle for the Triton kernel and the CPU path of oar.bilevel_reshape.
Rows are independent; each is reshaped over its masked positions only (any pattern, not
necessarily contiguous).
"""
from __future__ import annotations

import torch

_EPS = 1e-8


def masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile at level q over masked entries, numpy's default "linear" method.

    Returns [B] (0 for rows with no masked entry). The interpolation mirrors numpy's lerp,
    which switches form at t >= 0.5 for accuracy, so results agree to the last bit in float64.
    """
    n = mask.sum(dim=1)
    ordered = torch.where(mask, values, torch.full_like(values, float("inf"))).sort(dim=1).values
    virtual = q * (n - 1).clamp_min(0).to(torch.float64)
    lo = virtual.floor()
    t = (virtual - lo).to(values.dtype)
    lo = lo.long()
    hi = torch.minimum(lo + 1, (n - 1).clamp_min(0))
    a = ordered.gather(1, lo.unsqueeze(1)).squeeze(1)
    b = ordered.gather(1, hi.unsqueeze(1)).squeeze(1)
    diff = b - a
    out = torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return torch.where(n > 0, out, torch.zeros_like(out))


def bilevel_reshape_reference(
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
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    x = scores.to(dtype)
    inf = torch.tensor(float("inf"), dtype=dtype, device=x.device)
    s = torch.log1p(x.clamp_min(0))
    s = torch.where(mask, s, torch.zeros_like(s))
    count = mask.sum(dim=1, keepdim=True)
    s_min = torch.where(mask, s, inf).amin(dim=1, keepdim=True)
    s_max = torch.where(mask, s, -inf).amax(dim=1, keepdim=True)
    s_min = torch.where(count > 0, s_min, torch.zeros_like(s_min))
    s_max = torch.where(count > 0, s_max, torch.zeros_like(s_max))
    span = s_max - s_min
    span = torch.where(span > 0, span, torch.ones_like(span))  # range taken as 1 when max == min
    n = (s - s_min) / span
    q = masked_quantile(n, mask, tau).unsqueeze(1)
    suppress = torch.clamp_min(n / (q + _EPS), floor)
    boost = 1 + beta * (n - q) / (1 - q + _EPS)
    w = torch.where(n < q, suppress, boost)
    w = torch.where(mask, w, torch.zeros_like(w))
    if sum_to_len:
        total = w.sum(dim=1, keepdim=True)
        scaled = w * count.to(dtype) / (total + _EPS)
        w = torch.where(total > 0, scaled, torch.ones_like(w))
    return torch.where(mask, w, torch.ones_like(w)).to(torch.float32)
