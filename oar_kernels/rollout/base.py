"""What a rollout backend returns: padded prompt and completion ids with masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch


@dataclass
class Rollout:
    """B = num_prompts * num_generations rows; row i answers prompt i // num_generations.

    prompt_ids [B, P] left-padded, prompt_mask [B, P] bool;
    completion_ids [B, C] right-padded (pad after the first EOS), completion_mask [B, C] bool,
    True up to and including the first EOS; truncated [B] bool: no EOS within the budget.
    completions: decoded completion texts (special tokens skipped).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    truncated: torch.Tensor
    completions: List[str]

    def response_ids(self, i: int) -> List[int]:
        """Row i's completion tokens, EOS included."""
        return self.completion_ids[i][self.completion_mask[i]].tolist()

    def prompt_tokens(self, i: int) -> List[int]:
        return self.prompt_ids[i][self.prompt_mask[i]].tolist()


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_id: int):
    """(mask, truncated): True up to and including the first EOS of each row."""
    is_eos = completion_ids == eos_id
    B, C = completion_ids.shape
    has = is_eos.any(dim=1)
    first = torch.where(has, is_eos.int().argmax(dim=1), torch.full((B,), C, dtype=torch.long))
    pos = torch.arange(C).unsqueeze(0)
    return pos <= first.unsqueeze(1), ~has


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    L = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, L - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, L - len(s):] = True
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    L = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), max(L, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max(L, 1)), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = True
    return ids, mask
