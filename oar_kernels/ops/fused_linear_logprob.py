"""oar.fused_linear_logprob: LM-head log-probs of given tokens without [N, V] logits.

logp[n] = log softmax((hidden @ weight.T + bias) / temperature)[n, targets[n]]

Backends (see ops/_dispatch.py): CUDA tensors run the Triton kernels of
oar_kernels/kernels/linear_logprob.py; CPU tensors run a chunked torch path that holds one
[chunk, V] block at a time. The row-chunk loop (`lm_head_pass`) is shared with
oar.fused_linear_grpo_loss, which turns each logits chunk into gradients in its forward.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._checks import FLOAT_DTYPES, check_number, check_tensor
from ._dispatch import resolve_backend

INDEX_DTYPES = (torch.int64, torch.int32)

# Bytes of one fp32 [chunk, V] logits block, per device type. Small on CPU so the block
# stays in cache; larger on GPU so the chunk GEMMs run at full rate. Tests lower these to
# force many chunks.
CHUNK_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}

# How the Triton backend forms the forward log-probs: "fused" (one kernel, tl.dot + online
# log-sum-exp, no logits in memory) or "chunked" (cuBLAS logits per row chunk + a row-stats
# kernel: one [chunk, V] buffer, GEMM at cuBLAS speed). benchmarks/gpu_check.py times both.
TRITON_FORWARD = "fused"


def chunk_rows(n_rows: int, vocab: int, device: torch.device) -> int:
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"])
    rows = max(1, budget // max(1, 4 * vocab))
    if rows >= 64:
        rows = rows // 32 * 32
    return max(1, min(n_rows, rows))


# ----------------------------------------------------------------------------- validation


def check_lm_head_args(hidden, weight, targets, bias, temperature, backend, hidden_name="hidden"):
    """Validates the LM-head arguments at the op boundary; returns the resolved backend.

    hidden [N, D] (any leading shape already flattened by the caller), weight [V, D], targets
    [N] integer ids in [0, V), bias [V] or None, temperature > 0."""
    check_tensor(hidden_name, hidden, ndim=2, dtypes=FLOAT_DTYPES)
    dev = hidden.device
    D = hidden.shape[1]
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES, device=dev)
    if weight.shape[1] != D:
        raise ValueError(f"weight: expected shape [V, {D}] (hidden size of {hidden_name}), got {list(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight: expected dtype {hidden.dtype} like {hidden_name}, got {weight.dtype}")
    V = weight.shape[0]
    if V == 0 or D == 0:
        raise ValueError(f"weight: expected a non-empty [V, D] matrix, got {list(weight.shape)}")
    if bias is not None:
        check_tensor("bias", bias, shape=(V,), dtypes=(hidden.dtype,), device=dev)
    for name, t in ((hidden_name, hidden), ("weight", weight)):
        if t.numel() and t.stride(-1) != 1:
            raise ValueError(f"{name}: expected rows contiguous in memory (stride 1 on the last dim); call .contiguous()")
    check_tensor("targets", targets, dtypes=INDEX_DTYPES, device=dev)
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(
            f"targets: expected token ids in [0, {V}) (V = weight.shape[0]), got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    check_number("temperature", temperature, lo=0.0, lo_open=True)
    use = resolve_backend(backend, hidden)
    if use == "triton" and hidden.dtype == torch.float64:
        raise ValueError(f"{hidden_name}: float64 is supported by backend='torch' only")
    return use


# ----------------------------------------------------------------------------- GEMM helpers

_F32_MM: dict = {}


def _f32_gemm_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch.mm / torch.addmm take out_dtype=float32 for 16-bit operands here and give
    the right numbers (checked once per device and dtype on a small product)."""
    key = (str(device), dtype)
    if key not in _F32_MM:
        ok = False
        try:
            g = torch.Generator(device="cpu").manual_seed(0)
            a32 = torch.randn(64, 48, generator=g).to(device)
            b32 = torch.randn(48, 80, generator=g).to(device)
            a, b = a32.to(dtype), b32.to(dtype)
            want = a.float() @ b.float()
            acc = torch.ones(64, 80, device=device)
            got = torch.mm(a, b, out_dtype=torch.float32)
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            ok = bool(
                got.dtype == torch.float32
                and torch.allclose(got, want, atol=1e-3, rtol=1e-3)
                and torch.allclose(acc, want + 1, atol=1e-3, rtol=1e-3)
            )
        except Exception:  # older torch, or no fp32-output GEMM for this backend
            ok = False
        _F32_MM[key] = ok
    return _F32_MM[key]


def _mm_f32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (fp32) = a @ b. For 16-bit a, b (CUDA) cuBLAS writes fp32 directly when torch can
    (logits not rounded to bf16); otherwise the 16-bit product is upcast."""
    if a.dtype == out.dtype:
        return torch.mm(a, b, out=out)
    if _f32_gemm_ok(a.device, a.dtype):
        return out.copy_(torch.mm(a, b, out_dtype=out.dtype))
    return out.copy_(torch.mm(a, b))


def _addmm_acc_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc in fp32/fp64 whatever the operands' dtype (no [V, D] temporary
    when cuBLAS can accumulate into the fp32 buffer itself)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif _f32_gemm_ok(a.device, a.dtype):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc.add_(torch.mm(a, b))


# ----------------------------------------------------------------------------- torch chunk math


def _torch_stats(z: torch.Tensor, t: torch.Tensor, entropy: bool, scratch: Optional[torch.Tensor]):
    """(target logit, lse, entropy) of scaled logits z [n, V]; destroys z."""
    zt = z.gather(1, t.unsqueeze(1)).squeeze(1)
    mx = z.amax(dim=1, keepdim=True)
    z.sub_(mx)
    if not entropy:
        s = z.exp_().sum(dim=1)
        return zt, mx.squeeze(1) + s.log(), None
    e = torch.exp(z, out=scratch) if scratch is not None else torch.exp(z)
    s = e.sum(dim=1)
    ey = z.mul_(e).sum(dim=1)
    logs = s.log()
    return zt, mx.squeeze(1) + logs, logs - ey / s


def _torch_stats_keep(z: torch.Tensor, t: torch.Tensor, entropy: bool, scratch: torch.Tensor):
    """Like _torch_stats but leaves z intact (uses scratch [n, V]), so the same logits chunk
    can be turned into gradients without a second GEMM."""
    zt = z.gather(1, t.unsqueeze(1)).squeeze(1)
    mx = z.amax(dim=1, keepdim=True)
    y = torch.sub(z, mx, out=scratch)
    if not entropy:
        s = y.exp_().sum(dim=1)
        return zt, mx.squeeze(1) + s.log(), None
    e = torch.exp(y)
    s = e.sum(dim=1)
    logs = s.log()
    # H = log s - sum e (z - mx) / s: no cancellation between lse and E[z]
    return zt, mx.squeeze(1) + logs, logs - e.mul_(y).sum(dim=1) / s


def _torch_dlogits(z, t, lse, g, inv_t, g_ent, ent, scratch):
    """d loss / d raw logits from scaled logits z [n, V]; returns the buffer holding it."""
    z.sub_(lse.unsqueeze(1))  # log p
    if g_ent is None:
        dz = z.exp_().mul_(-g.unsqueeze(1))
    else:
        p = torch.exp(z, out=scratch) if scratch is not None else torch.exp(z)
        # dz = -p * (g + g_H * (log p + H))
        coef = z.add_(ent.unsqueeze(1)).mul_(g_ent.unsqueeze(1)).add_(g.unsqueeze(1))
        dz = p.mul_(coef).neg_()
    dz.scatter_add_(1, t.unsqueeze(1), g.unsqueeze(1).to(dz.dtype))
    if inv_t != 1.0:
        dz.mul_(inv_t)
    return dz


# ----------------------------------------------------------------------------- the row-chunk pass


def lm_head_pass(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    targets: torch.Tensor,
    temperature: float,
    use_triton: bool,
    grad_fn: Callable,
    *,
    lse: Optional[torch.Tensor] = None,
    entropy: bool = False,
    need_dh: bool = True,
    need_dw: bool = True,
    need_db: bool = False,
):
    """One pass over row chunks: logits chunk -> (stats) -> d logits -> dh, dW, db.

    If `lse` is None the chunk's statistics are computed here and grad_fn(sl, logp, ent)
    gives (g_logp, g_ent or None) for rows sl; otherwise (backward) lse is given and
    grad_fn(sl, None, None) returns (g_logp, g_ent or None, ent or None).
    Returns (dh, dW, db, logp, ent, lse): grads in the compute dtype (fp32, fp64 for fp64
    inputs; dh in hidden's dtype), logp/ent/lse the forward statistics when computed here.
    """
    N, D = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    cd = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    native_gemm = use_triton and hidden.is_cuda  # 16-bit operands straight into cuBLAS
    if native_gemm:
        w_mm, h_src = weight, hidden
    else:
        w_mm, h_src = weight.to(cd), hidden
    inv_t = 1.0 / temperature
    bias_c = None if bias is None else bias.to(cd)
    compute_stats = lse is None
    rows = chunk_rows(N, V, dev)

    dh = torch.empty((N, D), device=dev, dtype=hidden.dtype) if need_dh else None
    dW = torch.zeros((V, D), device=dev, dtype=cd) if need_dw else None
    db = torch.zeros((V,), device=dev, dtype=cd) if need_db else None
    logp_all = torch.empty((N,), device=dev, dtype=cd) if compute_stats else None
    ent_all = torch.empty((N,), device=dev, dtype=cd) if (compute_stats and entropy) else None
    lse_all = torch.empty((N,), device=dev, dtype=cd) if compute_stats else None

    zbuf = torch.empty((rows, V), device=dev, dtype=cd)
    need_scratch = not use_triton and (entropy or compute_stats)
    scratch = torch.empty((rows, V), device=dev, dtype=cd) if need_scratch else None
    any_grad = need_dh or need_dw or need_db
    dzbuf = torch.empty((rows, V), device=dev, dtype=hidden.dtype) if (any_grad and native_gemm and hidden.dtype != cd) else None

    for start in range(0, N, rows):
        sl = slice(start, min(N, start + rows))
        n = sl.stop - sl.start
        h_c = h_src[sl]
        t_c = targets[sl]
        z = zbuf[:n]
        if native_gemm:
            _mm_f32(h_c, w_mm.t(), z)
        else:
            torch.mm(h_c.to(cd), w_mm.t(), out=z)
        if bias_c is not None:
            z.add_(bias_c)
        scaled = False
        if compute_stats:
            if use_triton:
                from ..kernels.linear_logprob import chunk_stats

                zt, lse_c, ent_c = chunk_stats(z, t_c, temperature, entropy)
            else:
                if inv_t != 1.0:
                    z.mul_(inv_t)
                scaled = True
                zt, lse_c, ent_c = _torch_stats_keep(z, t_c, entropy, scratch[:n])
            logp_c = zt.to(cd) - lse_c.to(cd)
            logp_all[sl] = logp_c
            lse_all[sl] = lse_c
            if ent_all is not None:
                ent_all[sl] = ent_c
            g, g_ent = grad_fn(sl, logp_c, ent_c)
            if g is None:
                continue
        else:
            lse_c = lse[sl]
            g, g_ent, ent_c = grad_fn(sl, None, None)
        g = g.to(torch.float32 if use_triton else cd).contiguous()
        if g_ent is not None:
            g_ent = g_ent.to(g.dtype).contiguous()
            ent_c = ent_c.to(g.dtype).contiguous()
        if use_triton:
            from ..kernels.linear_logprob import chunk_dlogits

            out = z if dzbuf is None else dzbuf[:n]
            dz = chunk_dlogits(z, out, t_c, lse_c.to(torch.float32).contiguous(), g, temperature, g_ent, ent_c)
        else:
            if inv_t != 1.0 and not scaled:
                z.mul_(inv_t)
            dz = _torch_dlogits(z, t_c, lse_c.to(cd), g, inv_t, g_ent, ent_c,
                                None if scratch is None else scratch[:n])
        if need_dh:
            if dz.dtype == hidden.dtype:
                torch.mm(dz, w_mm, out=dh[sl])
            else:
                dh[sl] = torch.mm(dz, w_mm)
        if need_dw:
            _addmm_acc_(dW, dz.t(), h_c if dz.dtype == h_c.dtype else h_c.to(dz.dtype))
        if need_db:
            db.add_(dz.sum(dim=0, dtype=cd))
    return dh, dW, db, logp_all, ent_all, lse_all


class _FusedLinearLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, return_entropy, use_triton):
        if use_triton and TRITON_FORWARD == "fused":
            from ..kernels.linear_logprob import fused_forward

            zt, lse, ent = fused_forward(hidden, weight, targets, bias, temperature, return_entropy)
            logp = zt - lse
        elif use_triton:
            _, _, _, logp, ent, lse = lm_head_pass(
                hidden, weight, bias, targets, temperature, True, lambda sl, lp, e: (None, None),
                entropy=return_entropy, need_dh=False, need_dw=False,
            )
        else:
            logp, ent, lse = _torch_forward(hidden, weight, bias, targets, temperature, return_entropy)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent)
        ctx.temperature = temperature
        ctx.use_triton = use_triton
        ctx.return_entropy = return_entropy
        ctx.set_materialize_grads(False)
        if return_entropy:
            return logp, ent
        return logp

    @staticmethod
    def backward(ctx, g_logp, g_ent=None):
        hidden, weight, bias, targets, lse, ent = ctx.saved_tensors
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        if g_logp is None and g_ent is None:
            return None, None, None, None, None, None, None
        N = hidden.shape[0]
        cd = lse.dtype
        if g_logp is None:
            g_logp = torch.zeros(N, device=hidden.device, dtype=cd)

        def grads(sl, _lp, _ent):
            if g_ent is None:
                return g_logp[sl], None, None
            return g_logp[sl], g_ent[sl], ent[sl]

        dh, dW, db, _, _, _ = lm_head_pass(
            hidden, weight, bias, targets, ctx.temperature, ctx.use_triton, grads, lse=lse,
            entropy=g_ent is not None, need_dh=need_dh, need_dw=need_dw, need_db=need_db and bias is not None,
        )
        return (
            dh,
            None if dW is None else dW.to(weight.dtype),
            None if db is None else db.to(bias.dtype),
            None, None, None, None,
        )


def _torch_forward(hidden, weight, bias, targets, temperature, entropy):
    """Chunked torch forward: returns (logp, entropy or None, lse)."""
    N = hidden.shape[0]
    cd = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    lse_all = torch.empty(N, device=hidden.device, dtype=cd)
    V = weight.shape[0]
    rows = chunk_rows(N, V, hidden.device)
    w = weight.to(cd)
    b = None if bias is None else bias.to(cd)
    inv_t = 1.0 / temperature
    logp = torch.empty(N, device=hidden.device, dtype=cd)
    ent = torch.empty(N, device=hidden.device, dtype=cd) if entropy else None
    zbuf = torch.empty((rows, V), device=hidden.device, dtype=cd)
    scratch = torch.empty((rows, V), device=hidden.device, dtype=cd) if entropy else None
    for start in range(0, N, rows):
        sl = slice(start, min(N, start + rows))
        n = sl.stop - sl.start
        z = zbuf[:n]
        torch.mm(hidden[sl].to(cd), w.t(), out=z)
        if b is not None:
            z.add_(b)
        if inv_t != 1.0:
            z.mul_(inv_t)
        zt, lse_c, ent_c = _torch_stats(z, targets[sl], entropy, None if scratch is None else scratch[:n])
        lse_all[sl] = lse_c
        logp[sl] = zt - lse_c
        if entropy:
            ent[sl] = ent_c
    return logp, ent, lse_all


def fused_linear_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    backend: str = "auto",
):
    """Log-probs of `targets` under softmax((hidden @ weight.T + bias) / temperature).

    The [N, V] logits are never materialized: the Triton forward streams the vocabulary in
    blocks with an online log-sum-exp; the backward recomputes the logits one row chunk at a
    time. Accumulation is fp32 whatever the input dtype.

    Args:
        hidden: [N, D] float32 / float16 / bfloat16 (float64 on backend="torch"), rows contiguous.
        weight: [V, D] same dtype and device as hidden (the LM head).
        targets: [N] int64/int32 token ids in [0, V).
        bias: optional [V] in hidden's dtype.
        temperature: > 0; logits are divided by it.
        return_entropy: also return the entropy of each row's softmax. It is differentiable:
            its gradient flows to hidden, weight and bias like logp's.
        backend: "auto" (Triton for CUDA tensors, chunked torch otherwise), "triton", "torch".

    Returns:
        logp [N] float32 (float64 for float64 inputs); with return_entropy, (logp, entropy [N]).
    """
    use = check_lm_head_args(hidden, weight, targets, bias, temperature, backend)
    if not isinstance(return_entropy, bool):
        raise ValueError(f"return_entropy: expected a bool, got {return_entropy!r}")
    targets = targets.contiguous()
    return _FusedLinearLogprob.apply(
        hidden, weight, bias, targets, float(temperature), return_entropy, use == "triton"
    )
