"""oar.group_advantages: GRPO's sequence advantages from grouped rewards."""
from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_choice, check_number, check_tensor
from ._grpo_torch import group_advantages_torch

SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Sequence advantages A_i = (r_i - mean of its group) / (std + eps).

    Args:
        rewards: [B] rewards, groups being consecutive blocks of `group_size` responses to the
            same prompt (B must be a multiple of group_size). Integer, bool or float dtypes.
        group_size: responses per prompt (TRL's num_generations), >= 2.
        scale: "group" divides by each group's std, "batch" by the std of the whole batch,
            "none" does not divide (Dr. GRPO). std is the unbiased estimator, as in TRL.
        eps: added to the std; > 0.

    Returns:
        advantages [B] float32. A group whose rewards are all equal gets zeros.
    """
    check_tensor("rewards", rewards, ndim=1)
    if rewards.dtype == torch.bool or not rewards.is_floating_point():
        if rewards.is_complex():
            raise ValueError(f"rewards: expected a real dtype, got {rewards.dtype}")
        rewards = rewards.to(torch.float32)
    check_tensor("rewards", rewards, dtypes=FLOAT_DTYPES, finite=True)
    check_number("group_size", group_size, lo=2, integer=True)
    check_choice("scale", scale, SCALES)
    check_number("eps", eps, lo=0.0, lo_open=True)
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards: expected a non-empty length that is a multiple of group_size={group_size}, "
            f"got {rewards.numel()}"
        )
    return group_advantages_torch(rewards, group_size, scale, eps)
