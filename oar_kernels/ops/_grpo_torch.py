"""GRPO math in vectorized PyTorch (docs/algorithm.md sections 1 and 6): what oar.group_advantages,
oar.grpo_loss and oar.fused_linear_grpo_loss compute with (any device; no input checks, the public
ops validate first). The test oracles are separate, loop-based versions in
oar_kernels/reference/grpo.py.

Split into per-token loss and aggregation so fused paths reuse the same normalizers.
"""
from __future__ import annotations

from typing import Optional

import torch

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def group_advantages_torch(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """(r - group mean) / (std + eps); std is the unbiased one over the group or the batch."""
    r = rewards.to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    groups = r.view(-1, group_size)
    centred = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "group":
        std = groups.std(dim=1, keepdim=True).expand_as(groups).reshape(-1)
    elif scale == "batch":
        std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
    else:
        return centred.to(torch.float32)
    return (centred / (std + eps)).to(torch.float32)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 with d = ref - logp (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def per_token_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    token_advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ref_logp: Optional[torch.Tensor] = None,
    beta: float = 0.0,
):
    """Clipped surrogate (+ beta k3 KL) per token. Returns (loss_t, ratio, kl_t or None)."""
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.minimum(ratio * token_advantages, clipped * token_advantages)
    kl = None
    if beta != 0.0:
        kl = k3_kl(logp, ref_logp)
        loss = loss + beta * kl
    return loss, ratio, kl


def aggregate_loss(
    loss_t: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    num_sequences: Optional[int] = None,
    num_items_in_batch=None,
    max_completion_length: Optional[int] = None,
) -> torch.Tensor:
    """Reduces per-token losses [B, T] to a scalar.

    grpo: mean over each sequence's tokens, summed, / num_sequences (default B).
    bnpo, dapo: sum over all tokens / num_items_in_batch (default: this batch's token count).
    dr_grpo: sum over all tokens / (num_sequences * max_completion_length).
    Passing the whole accumulated batch's num_sequences / num_items_in_batch to every
    micro-batch makes the summed micro-batch losses equal the one-batch loss, gradients too.
    """
    m = mask.to(loss_t.dtype)
    n_seq = loss_t.shape[0] if num_sequences is None else num_sequences
    if loss_type == "grpo":
        per_seq = (loss_t * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return per_seq.sum() / max(n_seq, 1)
    if loss_type in ("bnpo", "dapo"):
        if num_items_in_batch is None:
            denom = m.sum().clamp_min(1.0)
        else:
            denom = torch.as_tensor(num_items_in_batch, dtype=loss_t.dtype, device=loss_t.device).clamp_min(1.0)
        return (loss_t * m).sum() / denom
    if loss_type == "dr_grpo":
        return (loss_t * m).sum() / (max(n_seq, 1) * max_completion_length)
    raise ValueError(f"loss_type: expected one of {list(LOSS_TYPES)}, got {loss_type!r}")


@torch.no_grad()
def loss_metrics(
    ratio: torch.Tensor,
    token_advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    kl: Optional[torch.Tensor] = None,
) -> dict:
    """Token-mean metrics over masked positions, as detached 0-dim float32 tensors."""
    m = mask.to(torch.float32)
    n = m.sum().clamp_min(1.0)
    low = (ratio < 1 - epsilon_low) & (token_advantages < 0)
    high = (ratio > 1 + epsilon_high) & (token_advantages > 0)
    out = {
        "clip_ratio_low": (low.float() * m).sum() / n,
        "clip_ratio_high": (high.float() * m).sum() / n,
        "adv_abs_mean": (token_advantages.abs().float() * m).sum() / n,
        "ratio_mean": (ratio.float() * m).sum() / n,
    }
    out["clip_ratio"] = out["clip_ratio_low"] + out["clip_ratio_high"]
    if kl is not None:
        out["kl"] = (kl.float() * m).sum() / n
    return out
