"""GRPO advantages and loss (docs/algorithm.md sections 1 and 6), token by token: the test oracles.

Plain loops over groups, sequences and tokens, in float64, written from the spec rather than
from the public ops' vectorized code (oar_kernels/ops/_grpo_torch.py). No input checks: the
public ops validate. Differentiable in logp (autograd through the per-token terms); meant for
test-sized inputs only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def _mean(xs):
    return sum(xs) / len(xs)


def _unbiased_std(xs):
    """sqrt(sum (x - mean)^2 / (n - 1)); 0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def group_advantages_reference(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """A_i = (r_i - mean of its group) / (std + eps), group by group in Python floats.

    scale "group": the unbiased std of the group; "batch": of all rewards; "none": no division.
    Returns [B] float64 on the rewards' device.
    """
    r = [float(x) for x in rewards.reshape(-1).tolist()]
    batch_std = _unbiased_std(r)
    out = []
    for start in range(0, len(r), group_size):
        group = r[start : start + group_size]
        m, group_std = _mean(group), _unbiased_std(group)
        for x in group:
            if scale == "group":
                out.append((x - m) / (group_std + eps))
            elif scale == "batch":
                out.append((x - m) / (batch_std + eps))
            else:
                out.append(x - m)
    return torch.tensor(out, dtype=torch.float64, device=rewards.device)


def grpo_loss_reference(
    logp: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    advantages: torch.Tensor,
    mask: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    ref_logp: Optional[torch.Tensor] = None,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_completion_length: Optional[int] = None,
    num_sequences: Optional[int] = None,
    num_items_in_batch=None,
):
    """oar.grpo_loss's (loss, metrics), one token at a time. Arguments as there.

    Per counted token (mask True) of sequence i:
        a    = weights[i, t] * A_i          (A_i, or advantages[i, t] when they are [B, T])
        rho  = exp(logp - old_logp)         (old_logp None: logp detached, so rho = 1)
        loss = -min(rho a, clip(rho, 1 - epsilon, 1 + epsilon_high) a) + beta k3
        k3   = exp(ref - logp) - (ref - logp) - 1
    aggregated as
        grpo:        sum over sequences of (mean of its token losses; 0 with no tokens) / num_sequences
        bnpo, dapo:  sum of all token losses / num_items_in_batch (default: the number of tokens)
        dr_grpo:     sum of all token losses / (num_sequences * max_completion_length)
    num_sequences defaults to B. Metrics are token means over the counted tokens: clip_ratio_low
    (rho < 1 - epsilon and a < 0), clip_ratio_high (rho > 1 + epsilon_high and a > 0), their sum
    clip_ratio, adv_abs_mean (|a|), ratio_mean (rho) and, when beta > 0, kl (k3).

    Returns (loss, metrics): a 0-dim float64 tensor (with grad through logp) and a dict of floats.
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    B, T = logp.shape
    n_seq = B if num_sequences is None else num_sequences
    seq_sums, seq_counts = [], []
    low = high = 0
    abs_adv = ratio_sum = kl_sum = 0.0
    for i in range(B):
        total, count = torch.zeros((), dtype=torch.float64, device=logp.device), 0
        for t in range(T):
            if not bool(mask[i, t]):
                continue
            a = float(advantages[i, t] if advantages.dim() == 2 else advantages[i])
            if weights is not None:
                a *= float(weights[i, t])
            lp = logp[i, t].double()
            old = lp.detach() if old_logp is None else old_logp[i, t].double()
            rho = torch.exp(lp - old)
            token_loss = -torch.minimum(rho * a, torch.clamp(rho, 1 - epsilon, 1 + eps_high) * a)
            if beta != 0.0:
                d = ref_logp[i, t].double() - lp
                k3 = torch.exp(d) - d - 1
                token_loss = token_loss + beta * k3
                kl_sum += float(k3.detach())
            total = total + token_loss
            count += 1
            r = float(rho.detach())
            low += r < 1 - epsilon and a < 0
            high += r > 1 + eps_high and a > 0
            abs_adv += abs(a)
            ratio_sum += r
        seq_sums.append(total)
        seq_counts.append(count)

    n_tokens = sum(seq_counts)
    if loss_type == "grpo":
        loss = sum(s / max(c, 1) for s, c in zip(seq_sums, seq_counts)) / max(n_seq, 1)
    elif loss_type in ("bnpo", "dapo"):
        denom = n_tokens if num_items_in_batch is None else float(num_items_in_batch)
        loss = sum(seq_sums) / max(denom, 1.0)
    elif loss_type == "dr_grpo":
        loss = sum(seq_sums) / (max(n_seq, 1) * max_completion_length)
    else:
        raise ValueError(f"loss_type: unknown {loss_type!r}")

    n = max(n_tokens, 1)
    metrics = {
        "clip_ratio_low": low / n,
        "clip_ratio_high": high / n,
        "clip_ratio": (low + high) / n,
        "adv_abs_mean": abs_adv / n,
        "ratio_mean": ratio_sum / n,
    }
    if beta != 0.0:
        metrics["kl"] = kl_sum / n
    return loss, metrics
