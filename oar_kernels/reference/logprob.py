"""LM-head log-probs in plain PyTorch: materialize the logits, log_softmax, gather.

The oracle for oar.fused_linear_logprob and oar.fused_linear_grpo_loss. Computes in float32
(float64 when any input is float64) after upcasting, whatever the input dtype.
"""
from __future__ import annotations

from typing import Optional

import torch


def linear_logprob_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
):
    """log softmax((hidden @ weight.T + bias) / temperature)[n, targets[n]].

    Args:
        hidden: [N, D]; weight: [V, D]; targets: [N] integer ids in [0, V); bias: [V] or None.
    Returns:
        logp [N] (float32, or float64 for float64 inputs); with return_entropy also the
        entropy [N] of each row's softmax. Differentiable in hidden, weight and bias.
    """
    dtype = torch.float64 if torch.float64 in (hidden.dtype, weight.dtype) else torch.float32
    logits = hidden.to(dtype) @ weight.to(dtype).t()
    if bias is not None:
        logits = logits + bias.to(dtype)
    logits = logits / temperature
    logsm = torch.log_softmax(logits, dim=-1)
    logp = logsm.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if not return_entropy:
        return logp
    entropy = -(logsm.exp() * logsm).sum(-1)
    return logp, entropy
