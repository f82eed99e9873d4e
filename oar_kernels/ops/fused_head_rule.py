"""When callers that choose automatically (the trainer's update, importance.OARGStep) take the
policy's log-probs with oar.fused_linear_logprob instead of building the [tokens, vocab] logits.

One rule, read by the code and by the help texts that describe it (train/config.py), so the two
cannot disagree.
"""
from __future__ import annotations

from typing import Optional

import torch

FUSED_MIN_VOCAB = 32768  # from here on the [tokens, vocab] logits dominate the memory of a step
# On CPU the streamed head is slower than one [tokens, vocab] matmul (SmolLM2-135M, 2 x 257
# response tokens: +0.3 s of an 8.4 s OAR-G step) and memory is rarely short: there it is only
# used once the float32 logits would reach this size.
FUSED_CPU_MIN_BYTES = 1 << 30

AUTO_RULE = (f"plain linear heads of vocabularies >= {FUSED_MIN_VOCAB}; on CPU only once the [tokens, vocab] "
             f"float32 logits would reach {FUSED_CPU_MIN_BYTES / 2 ** 30:g} GiB")


def plain_linear_head(model, head=None) -> Optional[torch.nn.Linear]:
    """The model's output Linear when its logits are a plain linear map of the last hidden state
    (an nn.Linear head, no final logit soft-capping), else None. head: the head, when the caller
    already found it."""
    if head is None and hasattr(model, "get_output_embeddings"):
        head = model.get_output_embeddings()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return head if isinstance(head, torch.nn.Linear) and not cap else None


def fused_pays_off(head: torch.nn.Linear, num_tokens: int) -> bool:
    """AUTO_RULE for a plain linear head and `num_tokens` rows of log-probs."""
    if head.out_features < FUSED_MIN_VOCAB:
        return False
    if head.weight.device.type == "cpu":
        return num_tokens * head.out_features * 4 >= FUSED_CPU_MIN_BYTES
    return True
