"""The torch arithmetic of the LM-head chunk loops (ops/_lm_head_chunks.py): row statistics of
a block of logits and d loss / d logits of a block. The Triton backend does the same with the
kernels of kernels/linear_logprob.py.

Blocks are fp32 (fp64 for fp64 inputs) and already divided by the temperature; both functions
work in place, so a block costs one [n, v] buffer, two where the entropy needs a scratch one.
"""
from __future__ import annotations

from typing import Optional

import torch


def block_stats(z: torch.Tensor, t: torch.Tensor, entropy: bool, scratch: Optional[torch.Tensor], keep: bool):
    """(target logit, lse, entropy or None) of the scaled logits z [n, V] (whole rows).

    keep=False destroys z; keep=True leaves z intact (the GRPO pass turns the same block into
    gradients next) and needs scratch [n, V]."""
    zt = z.gather(1, t.unsqueeze(1)).squeeze(1)
    mx = z.amax(dim=1, keepdim=True)
    y = torch.sub(z, mx, out=scratch) if keep else z.sub_(mx)
    if not entropy:
        s = y.exp_().sum(dim=1)
        return zt, mx.squeeze(1) + s.log(), None
    if keep or scratch is None:
        e = torch.exp(y)
    else:
        e = torch.exp(y, out=scratch)
    s = e.sum(dim=1)
    logs = s.log()
    # H = log s - sum e (z - mx) / s: no cancellation between lse and E[z]
    return zt, mx.squeeze(1) + logs, logs - e.mul_(y).sum(dim=1) / s


def add_target_grad(dz: torch.Tensor, t: torch.Tensor, g: torch.Tensor, col0: Optional[int]) -> None:
    """dz[n, t[n] - col0] += g[n] for the rows whose target falls in this block's columns
    (col0 None: the block holds whole rows)."""
    if col0 is None:
        dz.scatter_add_(1, t.unsqueeze(1), g.unsqueeze(1).to(dz.dtype))
        return
    idx = t - col0
    rows = ((idx >= 0) & (idx < dz.shape[1])).nonzero().squeeze(1)
    if rows.numel():
        dz.index_put_((rows, idx[rows]), g[rows].to(dz.dtype), accumulate=True)


def block_dlogits(z, t, lse, g, inv_t, g_ent, ent, scratch, col0: Optional[int] = None):
    """d loss / d raw logits of the scaled logits block z [n, v]: columns col0 .. col0 + v of
    rows whose log-sum-exp is lse (col0 None: whole rows): g (onehot - p) - g_H p (log p + H), / temperature.
    Overwrites z; returns the buffer holding the result (z, or scratch with the entropy)."""
    z.sub_(lse.unsqueeze(1))  # log p
    if g_ent is None:
        dz = z.exp_().mul_(-g.unsqueeze(1))
    else:
        p = torch.exp(z, out=scratch) if scratch is not None else torch.exp(z)
        coef = z.add_(ent.unsqueeze(1)).mul_(g_ent.unsqueeze(1)).add_(g.unsqueeze(1))
        dz = p.mul_(coef).neg_()
    add_target_grad(dz, t, g, col0)
    if inv_t != 1.0:
        dz.mul_(inv_t)
    return dz
