"""oar.grpo_loss: clipped GRPO surrogate with per-token advantages, on given log-probs."""
from __future__ import annotations

from typing import Optional

import torch

from .._checks import FLOAT_DTYPES, check_choice, check_mask, check_number, check_tensor
from ._grpo_torch import LOSS_TYPES, aggregate_loss, loss_metrics, per_token_grpo_loss


def token_advantages(
    advantages: torch.Tensor, weights: Optional[torch.Tensor], like: torch.Tensor
) -> torch.Tensor:
    """A_{i,t} = w_{i,t} * A_i as a [B, T] tensor (advantages may already be [B, T])."""
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    adv = adv.to(like.dtype)
    if weights is not None:
        adv = adv * weights.to(like.dtype)
    return adv.expand_as(like)


def check_loss_args(
    logp, old_logp, advantages, mask, weights, ref_logp, epsilon, epsilon_high, beta,
    loss_type, max_completion_length, num_sequences, num_items_in_batch, logp_name="logp",
):
    """Shared validation of the GRPO loss arguments; returns epsilon_high resolved."""
    B, T = logp.shape
    dev = logp.device
    if old_logp is not None:
        check_tensor("old_logp", old_logp, shape=(B, T), dtypes=FLOAT_DTYPES, device=dev)
    check_tensor("advantages", advantages, ndim=(1, 2), dtypes=FLOAT_DTYPES, device=dev, finite=True)
    if advantages.shape not in ((B,), (B, T)):
        raise ValueError(f"advantages: expected shape [{B}] or [{B}, {T}], got {list(advantages.shape)}")
    check_mask("mask", mask, logp, logp_name)
    if weights is not None:
        check_tensor("weights", weights, shape=(B, T), dtypes=FLOAT_DTYPES, device=dev, finite=True)
    check_number("epsilon", epsilon, lo=0.0)
    if epsilon_high is None:
        epsilon_high = epsilon
    check_number("epsilon_high", epsilon_high, lo=0.0)
    check_number("beta", beta, lo=0.0)
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("ref_logp: required when beta > 0 (the KL penalty needs reference log-probs)")
    if ref_logp is not None:
        check_tensor("ref_logp", ref_logp, shape=(B, T), dtypes=FLOAT_DTYPES, device=dev)
    check_choice("loss_type", loss_type, LOSS_TYPES)
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("max_completion_length: required for loss_type='dr_grpo'")
    if max_completion_length is not None:
        check_number("max_completion_length", max_completion_length, lo=1, integer=True)
    if num_sequences is not None:
        check_number("num_sequences", num_sequences, lo=1, integer=True)
    if num_items_in_batch is not None and not isinstance(num_items_in_batch, torch.Tensor):
        check_number("num_items_in_batch", num_items_in_batch, lo=0)
    return epsilon_high


def grpo_loss(
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
    """GRPO policy loss with per-token advantages A_{i,t} = weights_{i,t} * advantages_i.

    loss_t = -min(rho A_t, clip(rho, 1 - epsilon, 1 + epsilon_high) A_t) + beta k3(logp, ref_logp),
    rho = exp(logp - old_logp), aggregated over mask by `loss_type`:
      "grpo": per-sequence token mean, then mean over sequences (the OAR authors' choice);
      "bnpo" / "dapo": token mean over the batch;
      "dr_grpo": token sum / (sequences * max_completion_length).

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logp: [B, T] log-probs under the sampling policy, or None (on-policy: logp.detach()).
        advantages: [B] sequence advantages, or [B, T] per-token ones.
        mask: [B, T] bool, True at completion tokens that count.
        weights: optional [B, T] OAR weights (from oar.bilevel_reshape); multiplies advantages.
        ref_logp: [B, T] reference-policy log-probs, required when beta > 0.
        epsilon, epsilon_high: clip range (epsilon_high defaults to epsilon).
        beta: KL penalty coefficient.
        max_completion_length: the constant length of "dr_grpo" (required there).
        num_sequences, num_items_in_batch: the whole accumulated batch's sequence and token
            counts, for exact gradient accumulation over micro-batches (default: this batch's).

    Returns:
        (loss, metrics): a 0-dim tensor in logp's dtype (float32 for half inputs), and a dict of
        detached 0-dim tensors: clip_ratio (+ _low/_high), adv_abs_mean (mean |A_t|),
        ratio_mean, and kl when beta > 0; all token means over mask.
    """
    check_tensor("logp", logp, ndim=2, dtypes=FLOAT_DTYPES)
    epsilon_high = check_loss_args(
        logp, old_logp, advantages, mask, weights, ref_logp, epsilon, epsilon_high, beta,
        loss_type, max_completion_length, num_sequences, num_items_in_batch,
    )
    dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
    lp = logp.to(dtype)
    old = lp.detach() if old_logp is None else old_logp.to(dtype)
    ref = None if ref_logp is None else ref_logp.to(dtype)
    adv_t = token_advantages(advantages, weights, lp)
    loss_t, ratio, kl = per_token_grpo_loss(lp, old, adv_t, epsilon, epsilon_high, ref, beta)
    loss = aggregate_loss(loss_t, mask, loss_type, num_sequences, num_items_in_batch, max_completion_length)
    return loss, loss_metrics(ratio, adv_t, mask, epsilon, epsilon_high, kl)
