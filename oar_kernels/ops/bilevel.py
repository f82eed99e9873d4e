"""oar.bilevel_reshape: token importance scores -> OAR weights (docs/algorithm.md section 5)."""
from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_mask, check_number, check_tensor
from ._bilevel_torch import bilevel_reshape_torch
from ._dispatch import resolve_backend


def _native_ok(scores: torch.Tensor) -> bool:
    """auto on CPU: the C kernel, except for float64 scores (it computes in float32)."""
    if scores.device.type != "cpu" or scores.dtype == torch.float64:
        return False
    from ..native.bilevel import available

    return available()


def bilevel_reshape(
    scores: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.25,
    beta: float = 1.0,
    floor: float = 0.1,
    sum_to_len: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Bi-Level reshaping of per-token importance scores into advantage weights.

    Per row b, over its R masked positions (the reasoning tokens):
        s = log1p(max(I, 0)); n = min-max normalised s; q = quantile(n, tau) (linear);
        w = max(n / q, floor) below q (suppression), 1 + beta (n - q) / (1 - q) at or above
        (boosting); then, if sum_to_len, w *= R / sum(w), so the row's mean weight is 1.

    Args:
        scores: [B, T] importance scores I_t, any float dtype; must be finite where mask is True.
        mask: [B, T] bool, True at the positions to reshape (reasoning tokens).
        tau: quantile level in [0, 1] separating suppressed from boosted tokens.
        beta: boost strength, >= 0.
        floor: smallest weight a suppressed token gets before rescaling, in [0, 1].
        sum_to_len: rescale each row to sum to its number of masked positions.
        backend: "auto" (Triton on CUDA; on CPU the C kernel of oar_kernels/native when a C
            compiler is present and scores are not float64, else torch), "triton", "torch",
            or "native" (the C kernel, CPU tensors only; an error when it cannot be built).

    Returns:
        weights [B, T] float32, exactly 1.0 wherever mask is False (rows with R = 0 are all 1).
    """
    check_tensor("scores", scores, ndim=2, dtypes=FLOAT_DTYPES)
    check_mask("mask", mask, scores, "scores")
    check_number("tau", tau, lo=0.0, hi=1.0)
    check_number("beta", beta, lo=0.0)
    check_number("floor", floor, lo=0.0, hi=1.0)
    if not isinstance(sum_to_len, bool):
        raise ValueError(f"sum_to_len: expected a bool, got {sum_to_len!r}")
    if backend == "native" or (backend == "auto" and _native_ok(scores)):
        from ..native.bilevel import available, bilevel_reshape_native

        if scores.device.type != "cpu":
            raise ValueError(f"backend: 'native' runs on CPU tensors, got scores on {scores.device}")
        if not available():
            raise ValueError("backend: 'native' is unavailable here (the install built no C kernel: no compiler "
                             "then, or a failed build; or OAR_KERNELS_NATIVE=0); use 'auto' or 'torch'")
        # the kernel checks that masked scores are finite as it reads them (ValueError)
        return bilevel_reshape_native(scores, mask, tau, beta, floor, sum_to_len)
    # Cheap common case first: a finite sum proves every element finite (NaN and Inf
    # propagate through a sum; an overflow only sends us to the exact check). Padding may hold
    # NaN/Inf legitimately, so only then look at the masked positions.
    if not torch.isfinite(scores.sum()) and not torch.isfinite(scores[mask]).all():
        raise ValueError("scores: contains NaN or Inf at masked positions")
    if resolve_backend(backend, scores) == "triton":
        from ..kernels.bilevel import bilevel_reshape_triton

        return bilevel_reshape_triton(scores, mask, tau, beta, floor, sum_to_len)
    return bilevel_reshape_torch(scores, mask, tau, beta, floor, sum_to_len)
