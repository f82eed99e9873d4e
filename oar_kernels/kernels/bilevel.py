"""Bi-Level reshaping (docs/algorithm.md section 5) as a Triton kernel: one program per row.

Same math as oar_kernels/reference/bilevel.py, in float32 (float64 scores are reduced to
float32 after log1p). The quantile is exact without sorting: its two order statistics are
found by a bitwise bisection on the float bits of s = log1p(max(I, 0)). s >= 0, so its bit
pattern read as an int32 orders like the float; 31 counting passes pin down each bit from
the top. n = (s - min) / span is monotone in s, so the k-th smallest n is the n of the k-th
smallest s.

Rows up to MAX_SINGLE_BLOCK long are held in registers (one load); longer rows are walked in
blocks, with s cached in the output buffer between passes so log1p runs once per element.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_SINGLE_BLOCK = 4096  # longest row kept entirely in registers
LOOP_BLOCK = 2048  # block width when a longer row is walked in pieces

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    # The interpreter has no libdevice. Goldberg's form of log1p is accurate to a few ulp
    # given an accurate log (numpy's, here).
    @triton.jit
    def _log1p(x):
        u = 1.0 + x
        d = u - 1.0
        safe = tl.where(d == 0.0, 1.0, d)
        return tl.where(d == 0.0, x, tl.log(u) * (x / safe))

else:
    from triton.language.extra import libdevice

    @triton.jit
    def _log1p(x):
        return libdevice.log1p(x)


@triton.jit
def _scores_to_s(x_raw, IS_F64: tl.constexpr):
    """s = log1p(max(I, 0)) in float32 (float64 inputs go through log1p in float64)."""
    if IS_F64:
        x = x_raw.to(tl.float64)
        return _log1p(tl.maximum(x, 0.0)).to(tl.float32)
    else:
        x = x_raw.to(tl.float32)
        return _log1p(tl.maximum(x, 0.0))


@triton.jit
def _span_and_quantile(smin, smax, pa, pb, t):
    """From the two selected bit patterns, the row's span and quantile q of n."""
    span = smax - smin
    span = tl.where(span > 0.0, span, 1.0)  # range taken as 1 when max == min
    a = (pa.to(tl.float32, bitcast=True) - smin) / span
    b = (pb.to(tl.float32, bitcast=True) - smin) / span
    diff = b - a
    # numpy's lerp: switches form at t >= 0.5
    q = tl.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
    return span, q


@triton.jit
def _weights(s, m, smin, span, q, beta, floor):
    n = (s - smin) / span
    suppress = tl.maximum(n / (q + 1e-8), floor)
    boost = 1.0 + beta * (n - q) / (1.0 - q + 1e-8)
    w = tl.where(n < q, suppress, boost)
    return tl.where(m, w, 0.0)


@triton.jit
def _bilevel_row_kernel(
    S, M, W,
    T, stride_s, stride_m, stride_w,
    tau: tl.float64, beta, floor,
    SUM_TO_LEN: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_row = S + row * stride_s
    m_row = M + row * stride_m
    w_row = W + row * stride_w
    offs = tl.arange(0, BLOCK)

    if SINGLE:
        inb = offs < T
        m = tl.load(m_row + offs, mask=inb, other=0) != 0
        s = _scores_to_s(tl.load(s_row + offs, mask=m, other=0.0), IS_F64)
        cnt = tl.sum(m.to(tl.int32), axis=0)
        smin = tl.min(tl.where(m, s, float("inf")), axis=0)
        smax = tl.max(tl.where(m, s, float("-inf")), axis=0)
        key = s.to(tl.int32, bitcast=True) & 0x7FFFFFFF  # -0.0 -> +0.0
    else:
        cnt = tl.sum(tl.zeros([BLOCK], dtype=tl.int32), axis=0)
        smin = tl.min(tl.full([BLOCK], float("inf"), tl.float32), axis=0)
        smax = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)
        for start in range(0, T, BLOCK):
            idx = start + offs
            inb = idx < T
            m = tl.load(m_row + idx, mask=inb, other=0) != 0
            s = _scores_to_s(tl.load(s_row + idx, mask=m, other=0.0), IS_F64)
            cnt += tl.sum(m.to(tl.int32), axis=0)
            smin = tl.minimum(smin, tl.min(tl.where(m, s, float("inf")), axis=0))
            smax = tl.maximum(smax, tl.max(tl.where(m, s, float("-inf")), axis=0))
            tl.store(w_row + idx, s, mask=inb)  # cache s in the output row
        tl.debug_barrier()

    # Order statistics lo = floor(tau (R - 1)) and hi = min(lo + 1, R - 1), as numpy does;
    # the virtual index is computed in float64 like numpy's.
    last = tl.maximum(cnt - 1, 0)
    virtual = tau * last.to(tl.float64)
    k_lo = virtual.to(tl.int32)  # floor: virtual >= 0
    t = (virtual - k_lo.to(tl.float64)).to(tl.float32)
    k_hi = tl.minimum(k_lo + 1, last)

    # Bisection on bits: the k-th smallest key is the largest p with #(key < p) <= k.
    pa = k_lo * 0
    pb = k_lo * 0
    for i in range(31):
        bit = 1 << (30 - i)
        ta = pa | bit
        tb = pb | bit
        if SINGLE:
            ca = tl.sum((m & (key < ta)).to(tl.int32), axis=0)
            cb = tl.sum((m & (key < tb)).to(tl.int32), axis=0)
        else:
            ca = k_lo * 0
            cb = k_lo * 0
            for start in range(0, T, BLOCK):
                idx = start + offs
                inb = idx < T
                mb = tl.load(m_row + idx, mask=inb, other=0) != 0
                kb = tl.load(w_row + idx, mask=mb, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF
                ca += tl.sum((mb & (kb < ta)).to(tl.int32), axis=0)
                cb += tl.sum((mb & (kb < tb)).to(tl.int32), axis=0)
        pa = tl.where(ca <= k_lo, ta, pa)
        pb = tl.where(cb <= k_hi, tb, pb)

    span, q = _span_and_quantile(smin, smax, pa, pb, t)

    if SINGLE:
        w = _weights(s, m, smin, span, q, beta, floor)
        if SUM_TO_LEN:
            total = tl.sum(w, axis=0)
            scaled = w * cnt.to(tl.float32) / (total + 1e-8)
            w = tl.where(total > 0.0, scaled, 1.0)
        tl.store(w_row + offs, tl.where(m, w, 1.0), mask=inb)
    else:
        total = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), axis=0)
        if SUM_TO_LEN:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, T, BLOCK):
                idx = start + offs
                inb = idx < T
                mb = tl.load(m_row + idx, mask=inb, other=0) != 0
                sb = tl.load(w_row + idx, mask=mb, other=0.0)
                acc += _weights(sb, mb, smin, span, q, beta, floor)
            total = tl.sum(acc, axis=0)
        for start in range(0, T, BLOCK):
            idx = start + offs
            inb = idx < T
            mb = tl.load(m_row + idx, mask=inb, other=0) != 0
            sb = tl.load(w_row + idx, mask=mb, other=0.0)
            w = _weights(sb, mb, smin, span, q, beta, floor)
            if SUM_TO_LEN:
                scaled = w * cnt.to(tl.float32) / (total + 1e-8)
                w = tl.where(total > 0.0, scaled, 1.0)
            tl.store(w_row + idx, tl.where(mb, w, 1.0), mask=inb)


def bilevel_reshape_triton(
    scores: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.25,
    beta: float = 1.0,
    floor: float = 0.1,
    sum_to_len: bool = True,
    *,
    out: torch.Tensor | None = None,
    max_single_block: int = MAX_SINGLE_BLOCK,
) -> torch.Tensor:
    """Launches the row kernel. scores [B, T] float, mask [B, T] bool -> weights [B, T] float32.

    No input checks (oar.bilevel_reshape does them). `out`, if given, is a contiguous [B, T]
    float32 buffer that receives the weights; `max_single_block` (a power of two) is the
    longest row handled in registers, lower it to exercise the blocked path on short rows.
    """
    B, T = scores.shape
    if scores.stride(1) != 1:
        scores = scores.contiguous()
    if mask.stride(1) != 1:
        mask = mask.contiguous()
    mask_u8 = mask.view(torch.uint8)
    if out is None:
        out = torch.empty((B, T), dtype=torch.float32, device=scores.device)
    if B == 0 or T == 0:
        return out
    single = T <= max_single_block
    block = max(16, triton.next_power_of_2(T)) if single else min(LOOP_BLOCK, max_single_block)
    num_warps = 4 if block <= 1024 else 8
    _bilevel_row_kernel[(B,)](
        scores, mask_u8, out,
        T, scores.stride(0), mask_u8.stride(0), out.stride(0),
        float(tau), float(beta), float(floor),
        SUM_TO_LEN=bool(sum_to_len),
        IS_F64=scores.dtype == torch.float64,
        BLOCK=block,
        SINGLE=single,
        num_warps=num_warps,
    )
    return out
