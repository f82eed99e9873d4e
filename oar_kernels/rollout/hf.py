"""Rollouts with transformers' `generate`, on whatever device the model sits."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import Rollout, completion_mask_from_ids, left_pad


@torch.no_grad()
def generate_hf(
    model,
    tokenizer,
    prompts: Sequence[str],
    num_generations: int = 1,
    max_completion_length: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    seed: Optional[int] = None,
    synced_gpus: bool = False,
) -> Rollout:
    """Samples num_generations completions per prompt (consecutive rows per prompt).

    Prompts are tokenized without special tokens and left-padded. `seed`, when given, seeds
    torch's generator just before sampling, so a chunk's samples depend on the seed alone
    (this is what makes resumed and data-parallel runs reproduce single-process ones).
    synced_gpus: keep decoding until every process is done (needed when the model is sharded
    with FSDP, whose forwards are collective).
    """
    if num_generations < 1:
        raise ValueError(f"num_generations: expected >= 1, got {num_generations}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    enc = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    p_ids, p_mask = left_pad(enc, pad_id)
    p_ids = p_ids.repeat_interleave(num_generations, dim=0)
    p_mask = p_mask.repeat_interleave(num_generations, dim=0)
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    kwargs = dict(max_new_tokens=max_completion_length, pad_token_id=pad_id, eos_token_id=eos_id)
    if synced_gpus:
        kwargs["synced_gpus"] = True
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k or None)
    out = model.generate(input_ids=p_ids.to(device), attention_mask=p_mask.long().to(device), **kwargs)
    if was_training:
        model.train()
    c_ids = out[:, p_ids.shape[1]:].cpu()
    if c_ids.shape[1] == 0:
        c_ids = torch.full((p_ids.shape[0], 1), pad_id, dtype=torch.long)
    c_mask, truncated = completion_mask_from_ids(c_ids, eos_id)
    c_ids = c_ids.masked_fill(~c_mask, pad_id)
    texts = tokenizer.batch_decode(c_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return Rollout(p_ids, p_mask, c_ids, c_mask, truncated, texts)
