"""Triton kernels for LM-head log-probs: log softmax((h @ W.T + b) / temperature)[target].

Three kernels, no autograd (that lives in oar_kernels/ops/fused_linear_logprob.py):

* `_fused_fwd_kernel`: the fully fused forward. Each program owns BLOCK_N rows and one slice
  of the vocabulary; it forms logits tile by tile with tl.dot (fp32 accumulation), keeps an
  online max / sum-exp (and sum p*z for the entropy) and picks the target logit. Logits are
  never written. Partial statistics of the vocabulary slices are merged in torch ([S, N]).
* `_chunk_stats_kernel`: the same statistics from an already materialized fp32 logits chunk
  [n, V] (one program per row, looping over V). Used where the logits chunk must exist anyway
  (the chunked forward, and the GRPO pass, which turns the same chunk into gradients).
* `_chunk_dlogits_kernel`: d loss / d logits for a logits chunk (whole rows, or a block of
  vocabulary columns), given each row's log-sum-exp, d loss / d logp (and d loss / d entropy):
  g * (onehot - p) - g_H * p * (log p + H), / T.

Why the backward materializes a [chunk, V] block instead of being one Triton kernel: d hidden
needs a [BLOCK_N, D] accumulator (D = 2048 does not fit in registers) and d weight a sum over
all rows; tiling D would recompute the logits D / BLOCK_D times, and fp32 atomics on dW would
move N * V * D * 4 * (1/BLOCK_N + 1/BLOCK_V) bytes. A block of logits (a few hundred MB: all
rows x a vocabulary block, or a row chunk x all of V) lets cuBLAS do the two big GEMMs at full
rate, and the softmax-gradient pass here is one read and one write of the block.

Every program index lives on grid axis 0 (limit 2**31 - 1), so no vocabulary or sequence size
can overflow the 65535 limit of axes 1 and 2. All arithmetic is fp32: inputs are upcast right
after loading (Triton's interpreter computes bf16 arithmetic wrongly; on a GPU the 16-bit
tiles go straight into tl.dot, which accumulates in fp32).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _fused_fwd_kernel(
    H, W, BIAS, TGT,
    OUT_M, OUT_S, OUT_ST, OUT_TGT,
    N, V, D, stride_hn, stride_wv,
    n_row_blocks, v_per_split, inv_t,
    HAS_BIAS: tl.constexpr, ENTROPY: tl.constexpr, UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rb = pid % n_row_blocks
    split = pid // n_row_blocks
    rows = rb * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    tgt = tl.load(TGT + rows64, mask=rmask, other=0).to(tl.int64)

    v_lo = split * v_per_split
    v_hi = tl.minimum(v_lo + v_per_split, V)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    st = tl.zeros([BLOCK_N], tl.float32)
    zt = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < v_hi
        cols64 = cols.to(tl.int64)
        acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dk = d0 + tl.arange(0, BLOCK_D)
            dmask = dk < D
            h = tl.load(H + rows64[:, None] * stride_hn + dk[None, :],
                        mask=rmask[:, None] & dmask[None, :], other=0.0)
            w = tl.load(W + cols64[None, :] * stride_wv + dk[:, None],
                        mask=cmask[None, :] & dmask[:, None], other=0.0)
            if UPCAST:
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(h, w, acc, input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            b = tl.load(BIAS + cols64, mask=cmask, other=0.0).to(tl.float32)
            acc = acc + b[None, :]
        z = acc * inv_t
        z = tl.where(cmask[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(z - m_new[:, None])
        if ENTROPY:
            # st = sum p (z - m), kept relative to the running max: H = log s - st / s then
            # has no cancellation between two large numbers (lse - E[z] would)
            shift = s * tl.where(s > 0, m - m_new, 0.0)
            st = alpha * (st + shift) + tl.sum(p * tl.where(cmask[None, :], z - m_new[:, None], 0.0), axis=1)
        s = s * alpha + tl.sum(p, axis=1)
        hit = (cols64[None, :] == tgt[:, None]) & cmask[None, :]
        zt += tl.sum(tl.where(hit, z, 0.0), axis=1)
        m = m_new
    out = split * N + rows64
    tl.store(OUT_M + out, m, mask=rmask)
    tl.store(OUT_S + out, s, mask=rmask)
    tl.store(OUT_TGT + out, zt, mask=rmask)
    if ENTROPY:
        tl.store(OUT_ST + out, st, mask=rmask)


@triton.jit
def _chunk_stats_kernel(
    Z, TGT, OUT_LSE, OUT_ZT, OUT_ENT,
    V, stride_z, inv_t,
    ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    zrow = Z + row * stride_z
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane online stats, merged at the end
    s = tl.zeros([BLOCK_V], tl.float32)
    st = tl.zeros([BLOCK_V], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < V
        z = tl.load(zrow + cols, mask=cmask, other=float("-inf")).to(tl.float32) * inv_t
        m_new = tl.maximum(m, z)
        # lanes still at -inf (only in a first, partial block) must not form -inf - (-inf)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        p = tl.where(cmask, tl.exp(tl.where(cmask, z, 0.0) - m_safe), 0.0)
        if ENTROPY:
            shift = s * tl.where(s > 0, m - m_safe, 0.0)
            st = alpha * (st + shift) + p * tl.where(cmask, z - m_safe, 0.0)
        s = s * alpha + p
        m = m_new
    mx = tl.max(m, axis=0)
    live = m != float("-inf")
    scale = tl.where(live, tl.exp(m - mx), 0.0)
    s_tot = tl.sum(s * scale, axis=0)
    lse = mx + tl.log(s_tot)
    tgt = tl.load(TGT + row).to(tl.int64)
    zt = tl.load(zrow + tgt).to(tl.float32) * inv_t
    tl.store(OUT_LSE + row, lse)
    tl.store(OUT_ZT + row, zt)
    if ENTROPY:
        u = tl.sum(scale * (st + s * tl.where(live, m - mx, 0.0)), axis=0)
        tl.store(OUT_ENT + row, tl.log(s_tot) - u / s_tot)


@triton.jit
def _chunk_dlogits_kernel(
    Z, DZ, TGT, LSE, GLP, GENT, ENT,
    V, stride_z, stride_dz, inv_t, col0,
    ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    tgt = tl.load(TGT + row).to(tl.int64) - col0  # the block holds columns col0 .. col0 + V
    lse = tl.load(LSE + row).to(tl.float32)
    g = tl.load(GLP + row).to(tl.float32)
    if ENTROPY:
        gh = tl.load(GENT + row).to(tl.float32)
        ent = tl.load(ENT + row).to(tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < V
        z = tl.load(Z + row * stride_z + cols, mask=cmask, other=0.0).to(tl.float32) * inv_t
        logp = z - lse
        p = tl.exp(logp)
        dz = tl.where(cols.to(tl.int64) == tgt, g, 0.0) - g * p
        if ENTROPY:
            dz -= gh * p * (logp + ent)
        tl.store(DZ + row * stride_dz + cols, (dz * inv_t).to(DZ.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------- launchers


# GPU launch configuration of _fused_fwd_kernel: (BLOCK_N, BLOCK_V, BLOCK_D, num_warps,
# num_stages, maxnreg or None). Chosen so that ptxas spills on neither sm_80 nor sm_90 with
# Triton 3.6 and 3.9 (benchmarks/compile_check.py reports registers and spills; its test fails
# on a spill). At 4 warps the 16-bit kernel with entropy hits the 255-register cap and spills;
# the fp32 one at 8 warps and 3 stages is held to 80 registers by ptxas and spills, hence 2
# stages and an explicit 160-register budget (128 spills with Triton 3.6 at N = D = V = 1).
# Speed, H200 with Triton 3.6 at N=8192 D=4096 V=131072 bf16, forward only (benchmarks/
# RESULTS.md, 2026-12-04): 64x256x64 / 8 warps 21.0 ms, 128x128x64 / 8 warps 24.3 ms,
# 64x128x64 / 4 warps 27.5 ms, 64x128x64 / 8 warps (the previous default) 37.9 ms; cuBLAS's
# GEMM alone takes 11.8 ms, so the op's default forward is the chunked one, not this kernel.
FWD_CONFIG = {"fp32": (32, 64, 32, 8, 2, 160), "16bit": (64, 256, 64, 8, 3, None)}


def _empty(shape, device, dtype):
    """Output allocation (one place, so tests can poison every output buffer with NaN)."""
    return torch.empty(shape, device=device, dtype=dtype)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def fused_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias,
    temperature: float,
    entropy: bool,
    num_splits: int | None = None,
    config: tuple | None = None,
    input_precision: str | None = None,
):
    """Fully fused forward. Returns (target logit z_t, lse, entropy or None), each fp32 [N]
    (logits divided by temperature). targets in [0, V); any strides (a view whose rows are
    not unit-stride, a strided bias or targets, is copied to a contiguous tensor first).

    `config` (BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages, maxnreg) and `input_precision` ("ieee",
    "tf32", "tf32x3"; fp32 inputs only) override the defaults of FWD_CONFIG, for benchmarks."""
    N, D = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    if N == 0:
        empty = torch.empty(0, device=dev, dtype=torch.float32)
        return empty, empty.clone(), (empty.clone() if entropy else None)
    # the kernel reads rows with unit stride along D, and bias / targets with unit stride
    if hidden.stride(1) != 1:
        hidden = hidden.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    if targets.stride(0) != 1:
        targets = targets.contiguous()
    interp = _interpreting() or not hidden.is_cuda
    if interp:
        BLOCK_N, BLOCK_V, BLOCK_D, warps, stages, maxnreg = 16, 32, 16, 1, 1, None
    else:
        BLOCK_N, BLOCK_V, BLOCK_D, warps, stages, maxnreg = FWD_CONFIG["fp32" if hidden.dtype == torch.float32 else "16bit"]
    if config is not None:
        BLOCK_N, BLOCK_V, BLOCK_D, warps, stages, maxnreg = config
    extra = {} if (maxnreg is None or interp) else {"maxnreg": maxnreg}
    n_row_blocks = triton.cdiv(N, BLOCK_N)
    n_vblocks = triton.cdiv(V, BLOCK_V)
    if num_splits is None:
        # split the vocabulary when there are too few row blocks to fill the GPU
        num_splits = max(1, min(n_vblocks, triton.cdiv(2 * _num_sms(dev), n_row_blocks)))
    num_splits = max(1, min(int(num_splits), n_vblocks))
    v_per_split = triton.cdiv(n_vblocks, num_splits) * BLOCK_V
    num_splits = triton.cdiv(V, v_per_split)

    f32 = torch.float32
    part_m = _empty((num_splits, N), dev, f32)
    part_s = _empty((num_splits, N), dev, f32)
    part_t = _empty((num_splits, N), dev, f32)
    part_st = _empty((num_splits, N), dev, f32) if entropy else part_s
    # fp32 inputs get true fp32 products (no silent TF32); for 16-bit inputs the setting does
    # not apply (tensor-core MMA, fp32 accumulation). The interpreter sees upcast fp32 tiles.
    precision = "ieee" if (interp or hidden.dtype == torch.float32) else "tf32"
    if input_precision is not None and hidden.dtype == torch.float32:
        precision = input_precision
    grid = (n_row_blocks * num_splits,)
    _fused_fwd_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, targets,
        part_m, part_s, part_st, part_t,
        N, V, D, hidden.stride(0), weight.stride(0),
        n_row_blocks, v_per_split, float(1.0 / temperature),
        HAS_BIAS=bias is not None, ENTROPY=entropy, UPCAST=interp,
        INPUT_PRECISION=precision,
        BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_D=BLOCK_D,
        num_warps=warps, num_stages=stages, **extra,
    )
    mx = part_m.max(dim=0).values
    scale = torch.exp(part_m - mx)
    s_tot = (part_s * scale).sum(dim=0)
    lse = mx + torch.log(s_tot)
    zt = part_t.sum(dim=0)
    ent = None
    if entropy:  # partial sums of p (z - m_i) moved to the common max
        u = (scale * (part_st + part_s * (part_m - mx))).sum(dim=0)
        ent = torch.log(s_tot) - u / s_tot
    return zt, lse, ent


def _unit(t: torch.Tensor) -> torch.Tensor:
    """t with unit stride along its last dim (a copy only when it has not)."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _row_block(V: int) -> int:
    return min(triton.next_power_of_2(V), 4096 if not _interpreting() else 1024)


def chunk_stats(z: torch.Tensor, targets: torch.Tensor, temperature: float, entropy: bool):
    """Row statistics of a materialized raw-logits chunk z [n, V] (bias included, not yet
    divided by temperature). Returns (target logit, lse, entropy or None), fp32 [n].
    Any row stride of z; other strides are made unit first."""
    n, V = z.shape
    z, targets = _unit(z), _unit(targets)
    lse = _empty((n,), z.device, torch.float32)
    zt = _empty((n,), z.device, torch.float32)
    ent = _empty((n,), z.device, torch.float32) if entropy else lse
    if n:
        _chunk_stats_kernel[(n,)](
            z, targets, lse, zt, ent, V, z.stride(0), float(1.0 / temperature),
            ENTROPY=entropy, BLOCK_V=_row_block(V), num_warps=8 if z.is_cuda else 1,
        )
    return zt, lse, (ent if entropy else None)


def chunk_dlogits(
    z: torch.Tensor,
    out: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    g_logp: torch.Tensor,
    temperature: float,
    g_ent=None,
    ent=None,
    col0: int = 0,
):
    """Writes d loss / d raw logits of chunk z [n, V] into out [n, V] (out may be z itself).

    z holds columns col0 .. col0 + V of the full logits (a vocabulary block; lse is of the
    whole rows). g_logp [n] = d loss / d logp; g_ent, ent [n] (both or neither) add the
    entropy term.
    Any row strides of z and out; out's columns must be unit-stride (it is written in place),
    the other inputs are made so."""
    n, V = z.shape
    if V > 1 and out.stride(1) != 1:
        raise ValueError("out: expected unit stride along the vocabulary (it is written in place)")
    z, targets, lse, g_logp = _unit(z), _unit(targets), _unit(lse), _unit(g_logp)
    has_ent = g_ent is not None
    if has_ent:
        g_ent, ent = _unit(g_ent), _unit(ent)
    if n:
        _chunk_dlogits_kernel[(n,)](
            z, out, targets, lse, g_logp,
            g_ent if has_ent else g_logp, ent if has_ent else lse,
            V, z.stride(0), out.stride(0), float(1.0 / temperature), int(col0),
            ENTROPY=has_ent, BLOCK_V=_row_block(V), num_warps=8 if z.is_cuda else 1,
        )
    return out
