"""oar.fused_linear_logprob: LM-head log-probs of given tokens without [N, V] logits.

logp[n] = log softmax((hidden @ weight.T + bias) / temperature)[n, targets[n]]

This module holds the op's validation, its autograd Function and the op. The chunk loops are
ops/_lm_head_chunks.py (shared with oar.fused_linear_grpo_loss), their torch arithmetic
ops/_lm_head_torch.py, the Triton kernels kernels/linear_logprob.py.

Backends (see ops/_dispatch.py): CUDA tensors run the Triton kernels; CPU tensors run the
chunked torch path that holds one [chunk, V] block at a time.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._checks import FLOAT_DTYPES, check_number, check_tensor
from ._dispatch import resolve_backend
from ._lm_head_chunks import CHUNK_BYTES, LMHead, forward_stats, gradients  # noqa: F401 (CHUNK_BYTES: tests)

INDEX_DTYPES = (torch.int64, torch.int32)

# How the Triton backend forms the forward log-probs: "chunked" (cuBLAS writes one fp32 block
# of rows, a row-stats kernel reads it: the GEMM at cuBLAS speed, one [chunk, V] buffer) or
# "fused" (one kernel: tl.dot tiles with an online log-sum-exp, no logits in memory).
# Measured on an H200 (benchmarks/RESULTS.md, 2026-12-04), N=8192 D=4096 V=131072 bf16: chunked
# 14.7 ms forward (0.80x the GEMM rate), fused 38.2 ms (21.0 ms at its best tile); hence chunked.
FORWARD_MODES = ("fused", "chunked")
DEFAULT_FORWARD_MODE = "chunked"


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


class _FusedLinearLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, return_entropy, use_triton, forward_mode):
        head = LMHead(hidden, weight, bias, targets, temperature, use_triton)
        if use_triton and forward_mode == "fused":
            from ..kernels.linear_logprob import fused_forward

            zt, lse, ent = fused_forward(hidden, weight, targets, bias, temperature, return_entropy)
            logp = zt - lse
        else:
            logp, ent, lse = forward_stats(head, return_entropy)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent)
        ctx.temperature = temperature
        ctx.use_triton = use_triton
        ctx.set_materialize_grads(False)
        if return_entropy:
            return logp, ent
        return logp

    @staticmethod
    def backward(ctx, g_logp, g_ent=None):
        hidden, weight, bias, targets, lse, ent = ctx.saved_tensors
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        none = (None,) * 5
        if g_logp is None and g_ent is None:
            return (None, None, None) + none
        if g_logp is None:
            g_logp = torch.zeros_like(lse)
        head = LMHead(hidden, weight, bias, targets, ctx.temperature, ctx.use_triton)
        dh, dw, db = gradients(head, lse, g_logp, g_ent, None if g_ent is None else ent,
                               need_dh=need_dh, need_dw=need_dw, need_db=need_db)
        return (dh, dw, db) + none


def fused_linear_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    backend: str = "auto",
    forward_mode: Optional[str] = None,
):
    """Log-probs of `targets` under softmax((hidden @ weight.T + bias) / temperature).

    The [N, V] logits are never materialized: the Triton forward streams the vocabulary in
    blocks with an online log-sum-exp (or, forward_mode="chunked", forms one fp32 block of rows
    at a time with cuBLAS); the backward recomputes the logits one block at a time, over
    vocabulary blocks when N <= V (d weight written once) and over row chunks otherwise.
    Accumulation is fp32 whatever the input dtype.

    Args:
        hidden: [N, D] float32 / float16 / bfloat16 (float64 on backend="torch"), rows contiguous.
        weight: [V, D] same dtype and device as hidden (the LM head).
        targets: [N] int64/int32 token ids in [0, V).
        bias: optional [V] in hidden's dtype.
        temperature: > 0; logits are divided by it.
        return_entropy: also return the entropy of each row's softmax. It is differentiable:
            its gradient flows to hidden, weight and bias like logp's.
        backend: "auto" (Triton for CUDA tensors, chunked torch otherwise), "triton", "torch".
        forward_mode: the Triton backend's forward, "fused" or "chunked"; None: DEFAULT_FORWARD_MODE.
            The torch backend has one forward (chunked) and ignores it.

    Returns:
        logp [N] float32 (float64 for float64 inputs); with return_entropy, (logp, entropy [N]).
    """
    use = check_lm_head_args(hidden, weight, targets, bias, temperature, backend)
    if not isinstance(return_entropy, bool):
        raise ValueError(f"return_entropy: expected a bool, got {return_entropy!r}")
    if forward_mode is None:
        forward_mode = DEFAULT_FORWARD_MODE
    elif forward_mode not in FORWARD_MODES:
        raise ValueError(f"forward_mode: expected one of {list(FORWARD_MODES)} or None, got {forward_mode!r}")
    targets = targets.contiguous()
    return _FusedLinearLogprob.apply(
        hidden, weight, bias, targets, float(temperature), return_entropy, use == "triton", forward_mode
    )
