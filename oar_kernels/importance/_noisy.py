"""The KL modes' noisy forward of OAR-G over reasoning + conclude (+ answer), on the prompt
keys/values of an earlier forward, with ragged chunks packed (used by OARGStep and
gradient_importance)."""
from __future__ import annotations

import torch

from . import _cache
from ._common import decoder_and_head, hidden_of, input_embeddings, pack_first_fit
from ._saliency import Saliency


def noisy_chunk_logits(model, rows, order, layout, noises, noise_std: float, layers, device, with_grad=False):
    """Noisy forward of reasoning + conclude (+ answer) only: the prompt's keys and values
    are an earlier forward's (`layers`: its cache layers, batch row b holding response b's
    sequence from position 0), exact because noise never touches the prompt and causal
    attention makes prompt states independent of what follows.

    Only the scored rows go through it, their chunks packed into as few batch rows of the
    longest chunk's length as they fit (first fit, longest first): a row of the batch holds
    one or more chunks, each attending to its own prompt's keys (gathered into that row's
    prefix) and, causally, to itself. Ragged rollouts would otherwise spend much of this
    pass on padding. Returns P_final's logits [K, V] (flat, rows in `order`); with
    with_grad, also the Saliency probe on the clean embeddings of the packed batch and
    where = {b: (batch row, offset)} of each response's chunk (its reasoning comes first).
    """
    emb = input_embeddings(model)
    body, head = decoder_and_head(model)
    dtype = emb.weight.dtype
    n = {b: rows[b].length - rows[b].start for b in order}
    q = max(n.values())
    bins = pack_first_fit(n, q)  # bins[k]: the responses packed into batch row k
    K = len(bins)
    S = max(sum(rows[b].start for b in members) for members in bins)  # longest packed prefix
    ids = torch.zeros((K, q), dtype=torch.long)
    pos = torch.zeros((K, q), dtype=torch.long)
    owner = torch.full((K, q), -1, dtype=torch.long)  # member index of each chunk token
    key_row = torch.zeros((K, S), dtype=torch.long)  # policy-cache (row, position) of each prefix key
    key_pos = torch.zeros((K, S), dtype=torch.long)
    key_owner = torch.full((K, S), -2, dtype=torch.long)
    where = {}
    for k, members in enumerate(bins):
        o = p0 = 0
        for m, b in enumerate(members):
            r = rows[b]
            ids[k, o : o + n[b]] = r.ids[r.start :]
            pos[k, o : o + n[b]] = r.start + torch.arange(n[b])
            owner[k, o : o + n[b]] = m
            key_row[k, p0 : p0 + r.start] = b
            key_pos[k, p0 : p0 + r.start] = torch.arange(r.start)
            key_owner[k, p0 : p0 + r.start] = m
            where[b] = (k, o)
            o += n[b]
            p0 += r.start
    with torch.no_grad():
        x = emb(ids.to(device))
        noise = torch.zeros_like(x)
        for b in order:
            k, o = where[b]
            noise[k, o : o + rows[b].num] = noises[b].to(device=device, dtype=dtype) * noise_std
    sal = None
    if with_grad:
        x = x.detach().requires_grad_(True)
        sal = Saliency(x)
        x = sal.output
    scratch = _cache.Cache(layers=[])
    kr, kp = key_row.to(layers[0].keys.device), key_pos.to(layers[0].keys.device)
    for layer in layers:  # [B, H, T, d] -> the packed prefixes [K, H, S, d]
        k_, v_ = layer.keys.detach(), layer.values.detach()
        new = _cache.PrefixScratchLayer(extra=q)
        new.lazy_initialization(k_[kr, :, kp].permute(0, 2, 1, 3), v_[kr, :, kp].permute(0, 2, 1, 3))
        scratch.layers.append(new)
    see_prompt = key_owner[:, None, :] == owner[:, :, None]
    qi = torch.arange(q)
    see_own = (owner[:, None, :] == owner[:, :, None]) & (qi[None, None, :] <= qi[None, :, None])
    see_own = see_own | torch.eye(q, dtype=torch.bool)[None]  # padding sees itself
    allowed = torch.cat([see_prompt, see_own], dim=-1)
    mask4 = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    bi = [where[b][0] for b in order for _ in range(rows[b].need.numel())]
    pi = torch.cat([rows[b].need - rows[b].start + where[b][1] for b in order])
    with torch.set_grad_enabled(with_grad):
        h = hidden_of(body(inputs_embeds=x + noise, attention_mask=mask4[:, None].to(device),
                           position_ids=pos.to(device), use_cache=True, **_cache.cache_kwargs(body, scratch)))
        out = layout.logits(model, head, h, bi, pi)
    return (out, sal, where) if with_grad else out
