"""oar.fused_linear_grpo_loss: LM head + GRPO loss without materializing [B, T, V] logits.

Same semantics as oar.grpo_loss(logp, ...) with logp = fused_linear_logprob(hidden, ...):
the per-token loss, the aggregation and the metrics are the functions of
oar_kernels/ops/_grpo_torch.py (those of oar.grpo_loss), reused as they are.

Because the loss is a scalar, d loss / d logp is known in the forward pass: each row chunk's
logits are formed once, turned into log-probs, then into d logits, d hidden and a d weight
contribution (3 GEMMs per chunk, no recompute); backward only scales the stored gradients by
grad_output. The aggregation is linear in the per-token losses, so its coefficients
c = d aggregate_loss / d loss_t are taken once by autograd on a [B, T] tensor, which keeps
every normalizer (grpo, bnpo, dapo, dr_grpo, num_sequences, num_items_in_batch) exactly
aggregate_loss's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .._checks import FLOAT_DTYPES, check_tensor
from ._grpo_torch import aggregate_loss, loss_metrics, per_token_grpo_loss
from ._lm_head_chunks import LMHead, loss_pass
from .fused_linear_logprob import check_lm_head_args
from .grpo_loss import check_loss_args, token_advantages


def aggregation_coefficients(mask, loss_type, num_sequences, num_items_in_batch, max_completion_length, dtype):
    """c [B, T] with aggregate_loss(x, mask, ...) == (c * x).sum() for every x."""
    with torch.enable_grad():
        x = torch.zeros(mask.shape, dtype=dtype, device=mask.device, requires_grad=True)
        agg = aggregate_loss(x, mask, loss_type, num_sequences, num_items_in_batch, max_completion_length)
        (c,) = torch.autograd.grad(agg, x)
    return c


@dataclass(frozen=True)
class GRPOTerms:
    """Everything the GRPO loss needs besides the LM head, validated, flat over B * T tokens
    in the compute dtype."""

    old: Optional[torch.Tensor]  # sampling log-probs, None: on-policy
    adv: torch.Tensor  # per-token advantages (OAR weights applied)
    ref: Optional[torch.Tensor]  # reference log-probs (beta > 0)
    coef: torch.Tensor  # d aggregate_loss / d loss_t
    epsilon: float
    epsilon_high: float
    beta: float
    mask: torch.Tensor  # [B, T] bool
    loss_type: str
    num_sequences: Optional[int]
    num_items_in_batch: object
    max_completion_length: Optional[int]
    temperature: float
    use_triton: bool
    grad_enabled: bool  # torch.is_grad_enabled() at the call (it is off inside Function.forward)

    def per_token(self, logp, sl=slice(None)):
        """(loss_t, ratio, kl or None) of the flat log-probs logp of tokens sl."""
        old = logp.detach() if self.old is None else self.old[sl]
        return per_token_grpo_loss(logp, old, self.adv[sl], self.epsilon, self.epsilon_high,
                                   None if self.ref is None else self.ref[sl], self.beta)

    def aggregate(self, loss_t):
        return aggregate_loss(loss_t, self.mask, self.loss_type, self.num_sequences, self.num_items_in_batch,
                              self.max_completion_length)


class _FusedLinearGRPOLoss(torch.autograd.Function):
    """(loss, ratio [B*T], kl [B*T] or empty) of the GRPO loss on the LM head's log-probs."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, terms: GRPOTerms):
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        any_grad = terms.grad_enabled and (need_dh or need_dw or (need_db and bias is not None))

        def loss_grad(sl, logp_c):
            if not any_grad:  # e.g. under torch.no_grad(): log-probs only, no d logits
                return None
            with torch.enable_grad():
                lp = logp_c.detach().requires_grad_(True)
                loss_t, _, _ = terms.per_token(lp, sl)
                (g,) = torch.autograd.grad((loss_t * terms.coef[sl]).sum(), lp)
            return g

        head = LMHead(hidden, weight, bias, targets, terms.temperature, terms.use_triton)
        logp, dh, dw, db = loss_pass(head, loss_grad, need_dh=need_dh, need_dw=need_dw, need_db=need_db)
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        shape = terms.mask.shape
        loss_t, ratio, kl = terms.per_token(logp)
        kl = torch.empty(0, dtype=logp.dtype, device=logp.device) if kl is None else kl.view(shape)
        ratio = ratio.view(shape)
        ctx.mark_non_differentiable(ratio, kl)
        # the value from aggregate_loss itself; its gradient is the coef-weighted one above
        return terms.aggregate(loss_t.view(shape)), ratio, kl

    @staticmethod
    def backward(ctx, grad_out, _g_ratio=None, _g_kl=None):
        dh, dw, db = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        unit = bool(grad_out == 1)

        def scale(x, dtype):
            if x is None:
                return None
            if unit:
                return x.to(dtype)
            acc = torch.float64 if x.dtype == torch.float64 else torch.float32
            return (x.to(acc) * grad_out.to(acc)).to(dtype)

        return scale(dh, None if dh is None else dh.dtype), scale(dw, w_dtype), scale(db, b_dtype), None, None


def fused_linear_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
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
    temperature: float = 1.0,
    bias: Optional[torch.Tensor] = None,
    num_sequences: Optional[int] = None,
    num_items_in_batch=None,
    backend: str = "auto",
):
    """GRPO loss straight from the LM head: oar.grpo_loss on fused_linear_logprob's log-probs,
    without the [B, T, V] logits.

    loss_t = -min(rho A_t, clip(rho, 1 - epsilon, 1 + epsilon_high) A_t) + beta k3(logp, ref_logp),
    rho = exp(logp - old_logp), A_t = weights_t * advantages, logp_t = log softmax((hidden_t @
    weight.T + bias) / temperature)[targets_t], aggregated over mask by loss_type exactly as
    oar.grpo_loss does ("grpo", "bnpo", "dapo", "dr_grpo").

    Args:
        hidden: [B, T, D] final hidden states at the positions that predict targets
            (float32 / float16 / bfloat16; float64 on backend="torch"); last dim contiguous.
        weight: [V, D] LM head, same dtype and device. bias: optional [V].
        targets: [B, T] int64/int32 sampled token ids in [0, V) where mask is True (any id,
            e.g. -100, where it is False).
        old_logp: [B, T] sampling-policy log-probs, or None (on-policy).
        advantages: [B] sequence advantages or [B, T] per-token ones.
        mask: [B, T] bool. weights: optional [B, T] OAR weights. ref_logp: [B, T], needed when beta > 0.
        epsilon, epsilon_high, beta, loss_type, max_completion_length, num_sequences,
            num_items_in_batch: as in oar.grpo_loss (the last two give exact gradient accumulation).
        temperature: > 0, divides the logits.
        backend: "auto" (Triton for CUDA tensors, chunked torch otherwise), "triton", "torch".

    Returns:
        (loss, metrics): loss a 0-dim float32 tensor (float64 for float64 inputs) with gradients
        for hidden, weight and bias; metrics the dict of oar.grpo_loss (clip_ratio, clip_ratio_low,
        clip_ratio_high, adv_abs_mean, ratio_mean, and kl when beta > 0), detached.
    """
    check_tensor("hidden", hidden, ndim=3, dtypes=FLOAT_DTYPES)
    B, T, D = hidden.shape
    check_tensor("targets", targets, shape=(B, T), device=hidden.device)
    epsilon_high = check_loss_args(
        targets, old_logp, advantages, mask, weights, ref_logp, epsilon, epsilon_high, beta,
        loss_type, max_completion_length, num_sequences, num_items_in_batch, logp_name="targets",
    )
    if hidden.numel() and hidden.stride(-1) != 1:
        raise ValueError("hidden: expected the last dim contiguous (stride 1); call .contiguous()")
    h2 = hidden.reshape(B * T, D)
    # ids at masked-out positions are never used: padding such as -100 is allowed there
    t1 = torch.where(mask, targets, torch.zeros_like(targets)).reshape(B * T)
    use = check_lm_head_args(h2, weight, t1, bias, temperature, backend, hidden_name="hidden")
    cd = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    like = torch.empty((B, T), dtype=cd, device=hidden.device)
    adv_t = token_advantages(advantages, weights, like)
    coef = aggregation_coefficients(mask, loss_type, num_sequences, num_items_in_batch, max_completion_length, cd)
    terms = GRPOTerms(
        old=None if old_logp is None else old_logp.detach().to(cd).reshape(-1).contiguous(),
        adv=adv_t.detach().reshape(-1).contiguous(),
        ref=None if ref_logp is None else ref_logp.detach().to(cd).reshape(-1).contiguous(),
        coef=coef.reshape(-1).contiguous(),
        epsilon=epsilon, epsilon_high=epsilon_high, beta=beta, mask=mask, loss_type=loss_type,
        num_sequences=num_sequences, num_items_in_batch=num_items_in_batch,
        max_completion_length=max_completion_length, temperature=float(temperature),
        use_triton=use == "triton", grad_enabled=torch.is_grad_enabled(),
    )
    loss, ratio, kl = _FusedLinearGRPOLoss.apply(h2, weight, bias, t1.contiguous(), terms)
    metrics = loss_metrics(ratio, adv_t, mask, epsilon, epsilon_high, kl if kl.numel() else None)
    return loss, metrics
