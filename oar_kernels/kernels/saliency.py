"""Saliency reduction for the backward of oar.saliency_probe, as a Triton kernel.

For every token row (b, t) of g = dJ/dy and x, both [B, T, D]:
    grad_x_input[b, t] = |sum_d g[b, t, d] * x[b, t, d]|      grad_norm[b, t] = ||g[b, t, :]||_2
One read of g and x, fp32 accumulation (fp64 for fp64 inputs), nothing written but the two
[B, T] results: the gradient itself passes through untouched (the op returns g).

Each program owns BLOCK_M rows and walks D in BLOCK_D columns. Any strides are accepted
(autograd hands over expanded gradients with stride 0, e.g. from J = y.sum()); Triton
specializes unit strides, so the common contiguous case still vectorizes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _saliency_kernel(
    G, X, OUT_GXI, OUT_GN,
    n_rows, T, D,
    sg_b, sg_t, sg_d, sx_b, sx_t, sx_d,
    so1_b, so1_t, so2_b, so2_t,
    ACCUMULATE: tl.constexpr,
    ACC_F64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n_rows
    b = rows // T
    t = rows % T
    g_base = b * sg_b + t * sg_t
    x_base = b * sx_b + t * sx_t
    if ACC_F64:
        dot = tl.zeros([BLOCK_M], dtype=tl.float64)
    else:
        dot = tl.zeros([BLOCK_M], dtype=tl.float32)
    sq = tl.zeros_like(dot)
    cols0 = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        cols = (d0 + cols0).to(tl.int64)
        m2 = rmask[:, None] & (cols < D)[None, :]
        # upcast right after loading: no 16-bit arithmetic anywhere
        g = tl.load(G + g_base[:, None] + cols[None, :] * sg_d, mask=m2, other=0.0).to(dot.dtype)
        x = tl.load(X + x_base[:, None] + cols[None, :] * sx_d, mask=m2, other=0.0).to(dot.dtype)
        dot += tl.sum(g * x, axis=1)
        sq += tl.sum(g * g, axis=1)
    gxi = tl.abs(dot).to(tl.float32)
    if ACC_F64:
        gn = tl.sqrt(sq).to(tl.float32)  # fp64 sqrt is correctly rounded
    else:
        gn = tl.sqrt_rn(sq)  # tl.sqrt on fp32 is the approximate instruction on GPUs
    p1 = OUT_GXI + b * so1_b + t * so1_t
    p2 = OUT_GN + b * so2_b + t * so2_t
    if ACCUMULATE:
        gxi += tl.load(p1, mask=rmask, other=0.0)
        gn += tl.load(p2, mask=rmask, other=0.0)
    tl.store(p1, gxi, mask=rmask)
    tl.store(p2, gn, mask=rmask)


def saliency_reduce_triton(
    g: torch.Tensor,
    x: torch.Tensor,
    grad_x_input_out: torch.Tensor,
    grad_norm_out: torch.Tensor,
    accumulate: bool = False,
) -> None:
    """Writes |<g_t, x_t>| and ||g_t|| ([B, T] float32) for g, x [B, T, D]. No input checks."""
    B, T, D = x.shape
    n_rows = B * T
    if n_rows == 0:
        return
    acc_f64 = x.dtype == torch.float64 or g.dtype == torch.float64
    block_d = min(triton.next_power_of_2(max(D, 1)), 1024 if acc_f64 else 2048)
    block_m = max(1, min(64, 4096 // block_d))
    num_warps = 4 if block_m * block_d <= 2048 else 8
    grid = (triton.cdiv(n_rows, block_m),)
    _saliency_kernel[grid](
        g, x, grad_x_input_out, grad_norm_out,
        n_rows, T, D,
        g.stride(0), g.stride(1), g.stride(2), x.stride(0), x.stride(1), x.stride(2),
        grad_x_input_out.stride(0), grad_x_input_out.stride(1),
        grad_norm_out.stride(0), grad_norm_out.stride(1),
        ACCUMULATE=bool(accumulate),
        ACC_F64=acc_f64,
        BLOCK_M=block_m,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
