"""OAR-G, batched: oar.gradient_importance (OAR_SPEC.md section 4).

All scored responses of a group go through the model together as one right-padded batch
(causal attention: real tokens never see the padding after them, so no mask is needed), cut
after the last position P_final reads. Per group:

1. clean forward without gradient -> teacher P_clean (skipped for answer_joint, whose
   gradient does not depend on phi_clean);
2. the clean embeddings x go through the saliency probe, then get the noise (reasoning
   positions only, the oracle's draw convention) and feed the noisy forward;
3. J = sum over rows of KL(P_clean || P_noisy) (or phi_clean - phi_noisy) is differentiated
   with torch.autograd.grad(J, [x]) only: the probe's backward forms |<dJ/de_t, e_t>| (clean
   e_t) and ||dJ/de_t|| per token, no parameter gradient is computed or touched.

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
    body, head = decoder_and_head(model)
    vocab, dim = int(emb.weight.shape[0]), int(emb.weight.shape[1])
    check_lengths(model, segments, mode != "last", vocab)
    device, dtype = emb.weight.device, emb.weight.dtype
    scores, mask = empty_output(segments, device)
    rows = [make_row(b, s, mode) for b, s in enumerate(segments) if is_scored(s, mode)]
    # The oracle's convention: one draw per scored row, in row order, before anything else.
    noises = {r.index: draw_noise(r.num, dim, generator) for r in rows}

    with EvalMode(model), torch.inference_mode(False), torch.enable_grad():
        for group in group_rows(rows, max_batch_tokens):
            g, le_max = len(group), max(r.length for r in group)
            ids = torch.zeros((g, le_max), dtype=torch.long)
            for i, r in enumerate(group):
                ids[i, : r.length] = r.ids
            ids = ids.to(device)
            layout = PFinalLayout(group)
            at = ([i for i, r in enumerate(group) for _ in range(r.need.numel())], torch.cat([r.need for r in group]))
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
            # answer_joint: dJ/de does not depend on phi_clean, the teacher is any constant
            objective = layout.objective(noisy if clean is None else clean, noisy, mode)
            gxi, gn = sal.backward(objective)
            value = gxi if score == "grad_x_input" else gn
            for i, r in enumerate(group):
                scores[r.index, : r.num] = value[i, r.start : r.start + r.num].to(device)
                mask[r.index, : r.num] = True
            del sal, noisy, objective, x
    return scores, mask
