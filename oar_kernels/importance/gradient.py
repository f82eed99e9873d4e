"""OAR-G, batched: oar.gradient_importance (docs/algorithm.md section 4).

All scored responses of a group go through the model together as one right-padded batch
(causal attention: real tokens never see the padding after them, so no mask is needed), cut
after the last position P_final reads. Per group:

1. clean forward without gradient, keys/values kept -> teacher P_clean (answer_joint, whose
   gradient does not depend on phi_clean, runs only the prompts, for their keys/values);
2. the noisy forward covers reasoning + conclude (+ answer) only, on the prompts' cached
   keys/values (noise never touches the prompt), with ragged chunks packed
   (`_noisy.noisy_chunk_logits`): the clean chunk embeddings x go through the saliency probe,
   then get the noise (reasoning positions only, the oracle's draw convention);
3. J = sum over rows of KL(P_clean || P_noisy) (or phi_clean - phi_noisy) is differentiated
   with torch.autograd.grad(J, [x]) only: the probe's backward forms |<dJ/de_t, e_t>| (clean
   e_t) and ||dJ/de_t|| per token, no parameter gradient is computed or touched.

Without transformers' layered cache the noisy forward runs over the whole sequences instead.

The LM head is applied only at the positions P_final reads, in both forwards, all rows in one call.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .._checks import check_number
from ..segments import Segments
from ._common import (
    EvalMode,
    PFinalLayout,
    check_generator,
    check_lengths,
    check_max_batch_tokens,
    check_mode,
    check_score,
    check_segments,
    decoder_and_head,
    draw_noise,
    empty_output,
    group_rows,
    hidden_of,
    input_embeddings,
    is_scored,
    make_row,
)
from . import _cache
from ._noisy import noisy_chunk_logits
from ._saliency import Saliency


def gradient_importance(
    model,
    segments: Sequence[Segments],
    mode: str = "answer_mean",
    noise_std: float = 1e-3,
    score: str = "grad_x_input",
    generator: Optional[torch.Generator] = None,
    max_batch_tokens: int = 16384,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """OAR-G saliency of the reasoning tokens, batched over responses.

    J = KL(P_clean || P_noisy) (with log(p + 1e-12); modes "last", "answer_mean") or
    phi_clean - phi_noisy ("answer_joint"), the noisy input being the embeddings plus
    noise_std * N(0, 1) at the reasoning positions. score "grad_x_input": I_t =
    |<dJ/de_t, e_t>| (clean e_t); "grad_norm": ||dJ/de_t||_2. Equal to
    `oar_kernels.reference.gradient_importance_naive` under the same noise draw: per scored
    row in order, `draw_noise(R_b, D, generator)` (with generator None: torch's global CPU RNG).

    Args:
        model: a transformers causal LM; scored in eval mode, training flags restored.
        segments: list of B Segments.
        mode, noise_std (>= 0), score, generator: as above.
        max_batch_tokens: most tokens (padding included) per batched forward.

    Returns:
        scores [B, R_max] float32 and mask [B, R_max] bool, as perturbation_importance.
    """
    segments = check_segments(segments)
    check_mode(mode)
    check_score(score)
    check_number("noise_std", noise_std, lo=0.0)
    check_generator(generator)
    check_max_batch_tokens(max_batch_tokens)
    emb = input_embeddings(model)
    decoder_and_head(model)  # a clear TypeError for models without the parts we need
    vocab, dim = int(emb.weight.shape[0]), int(emb.weight.shape[1])
    check_lengths(model, segments, mode != "last", vocab)
    device = emb.weight.device
    scores, mask = empty_output(segments, device)
    rows = [make_row(b, s, mode) for b, s in enumerate(segments) if is_scored(s, mode)]
    # The oracle's convention: one draw per scored row, in row order, before anything else.
    noises = {r.index: draw_noise(r.num, dim, generator) for r in rows}

    with EvalMode(model), torch.inference_mode(False), torch.enable_grad():
        for group in group_rows(rows, max_batch_tokens):
            if _cache.available():
                value, where = _group_chunked(model, group, mode, noises, noise_std, device)
            else:  # pragma: no cover - transformers without the layered Cache
                value, where = _group_whole(model, group, mode, noises, noise_std, device)
            value = value[0] if score == "grad_x_input" else value[1]
            for i, r in enumerate(group):
                k, o = where[i]
                scores[r.index, : r.num] = value[k, o : o + r.num].to(device)
                mask[r.index, : r.num] = True
    return scores, mask


def _group_chunked(model, group, mode, noises, noise_std, device):
    """One group: clean forward (keys/values kept), then the packed noisy chunk pass on the
    prompts' keys/values. Returns ((gxi, gn), where) with where[i] = (row, offset) of
    group[i]'s reasoning in gxi / gn."""
    from transformers import DynamicCache

    body, head = decoder_and_head(model)
    # answer_joint needs no teacher: the prompts alone give the keys/values
    length = max(r.length for r in group) if mode != "answer_joint" else max(r.start for r in group)
    layout = PFinalLayout(group)
    cache = DynamicCache()
    with torch.no_grad():
        h = hidden_of(body(input_ids=_padded_ids(group, length).to(device), use_cache=True,
                         **_cache.cache_kwargs(body, cache)))
        clean = None if mode == "answer_joint" else layout.logits(model, head, h, *_need_index(group))
        del h
    rows = dict(enumerate(group))
    order = list(range(len(group)))
    noisy, sal, where = noisy_chunk_logits(model, rows, order, layout, {i: noises[r.index] for i, r in rows.items()},
                                           noise_std, cache.layers, device, with_grad=True)
    del cache
    # answer_joint: dJ/de does not depend on phi_clean, the teacher is any constant
    value = sal.backward(layout.objective(noisy if clean is None else clean, noisy, mode))
    return value, where


def _group_whole(model, group, mode, noises, noise_std, device):  # pragma: no cover - no layered cache
    """One group, noisy forward over the whole sequences (no prompt reuse, no packing)."""
    emb = input_embeddings(model)
    body, head = decoder_and_head(model)
    dtype = emb.weight.dtype
    ids = _padded_ids(group, max(r.length for r in group)).to(device)
    layout = PFinalLayout(group)
    at = _need_index(group)
    with torch.no_grad():
        e_clean = emb(ids)  # [g, L, D]
        clean = None
        if mode != "answer_joint":
            clean = layout.logits(model, head, hidden_of(body(inputs_embeds=e_clean)), *at)
        noise = torch.zeros_like(e_clean)
        for i, r in enumerate(group):
            noise[i, r.start : r.start + r.num] = noises[r.index].to(device=device, dtype=dtype) * noise_std
    x = e_clean.detach().requires_grad_(True)
    sal = Saliency(x)
    noisy = layout.logits(model, head, hidden_of(body(inputs_embeds=sal.output + noise)), *at)
    value = sal.backward(layout.objective(noisy if clean is None else clean, noisy, mode))
    return value, {i: (i, r.start) for i, r in enumerate(group)}


def _padded_ids(group, length: int) -> torch.Tensor:
    """[g, length] token ids of the group's scoring sequences, cut or right-padded to length."""
    ids = torch.zeros((len(group), length), dtype=torch.long)
    for i, r in enumerate(group):
        n = min(r.length, length)
        ids[i, :n] = r.ids[:n]
    return ids


def _need_index(group):
    """(batch index, position) of every position P_final reads, rows in group order (the
    layout's flat order)."""
    return [i for i, r in enumerate(group) for _ in range(r.need.numel())], torch.cat([r.need for r in group])
