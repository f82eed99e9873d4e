"""Rollout backends: transformers `generate` (any device) and vLLM (optional extra, GPU).

Both return a Rollout: left-padded prompt ids, right-padded completion ids, masks that end at
the first EOS (included) and a truncated flag per row.
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .base import Rollout, completion_mask_from_ids, left_pad, right_pad
from .hf import generate_hf

__all__ = ["Rollout", "generate_hf", "completion_mask_from_ids", "left_pad", "right_pad", "VLLMRollout"]


def __getattr__(name):
    if name == "VLLMRollout":
        from .vllm import VLLMRollout

        return VLLMRollout
    raise AttributeError(name)
