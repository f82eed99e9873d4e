"""Naive, obviously-correct OAR-P and OAR-G token importance (docs/algorithm.md sections 2-4).

These are the test oracles for oar_kernels.importance: every perturbed or noisy sequence gets
its own full forward of the whole scoring sequence, with no prefix reuse and no padding.
They work on any transformers causal LM (``model(input_ids=...)`` /
``model(inputs_embeds=...)`` returning ``.logits``; embeddings from
``model.get_input_embeddings()``).

Both entry points take a list of B Segments and return

    scores [B, R_max] float32   I_t of reasoning token t of response b at column t, 0 elsewhere
    mask   [B, R_max] bool      True at the first R_b columns of row b, where R_b scored

on the device of the model's input embeddings; R_max = max_b R_b over all rows (0 for an
empty batch). A row is not scored (all-False mask, zero scores) when its reasoning is empty,
or, in the answer_* modes, when its answer is empty (no answer was extracted): such tokens
keep weight 1. Computation runs in the model's dtype; scores are cast to float32 at the end.

Every row's scoring sequence is checked against ``config.max_position_embeddings`` before
any computation, scored or not.

Noise-draw convention of OAR-G (what a batched implementation must reproduce exactly):
for each scored row b, in increasing b (unscored rows draw nothing),

    noise_b = torch.randn((R_b, D), generator=generator,
                          device=generator.device if generator is not None else "cpu",
                          dtype=torch.float32)
    e_noisy[reasoning positions of b] = e_clean + noise_std * noise_b.to(embedding dtype, device)

D is the embedding width; with generator=None the draw uses torch's global CPU RNG, so
``torch.manual_seed(s)`` reproduces it on any model device.

Perturbation-token default of OAR-P: ``model.config.pad_token_id``, else
``model.config.eos_token_id`` (the first one if it is a list); ValueError naming
perturb_token when neither is set.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .._checks import check_choice, check_number
from ..importance._common import (  # the library's argument checks, modes and train-flag handling
    MODES,
    SCORES,
    EvalMode,
    check_generator,
    check_lengths,
    check_segments,
    default_perturb_token,
    is_scored,
    resolve_perturb_token,
)
from ..segments import Segments

_LOG_EPS = 1e-12  # OAR-G's KL uses log(p + 1e-12), as in the spec


# --------------------------------------------------------------------------------------
# P_final of one scoring sequence, from its logits [..., L, V] (leading dims: a batch of
# copies of the same sequence). Positions are those of `seg.sequence(with_answer)`.
# --------------------------------------------------------------------------------------


def last_logits(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Logits [..., V] at the last position of prompt + reasoning + conclude."""
    return logits[..., seg.answer_start - 1, :]


def after_answer_logits(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Logits [..., V] at the last answer token of prompt + reasoning + conclude + answer."""
    return logits[..., seg.answer_start + int(seg.answer_ids.numel()) - 1, :]


def answer_logits(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Logits [..., A, V] at the A positions that predict the answer tokens.

    Answer token j sits at position answer_start + j and is predicted at answer_start + j - 1.
    """
    a0, n = seg.answer_start, int(seg.answer_ids.numel())
    return logits[..., a0 - 1 : a0 - 1 + n, :]


def p_final_last(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """mode "last": log P_final [..., V], the next-token distribution after the conclude."""
    return torch.log_softmax(last_logits(logits, seg), dim=-1)


def p_final_answer_mean(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """mode "answer_mean": log softmax of the MEAN of the answer-predicting logits, [..., V]."""
    return torch.log_softmax(answer_logits(logits, seg).mean(dim=-2), dim=-1)


def phi_answer_joint(logits: torch.Tensor, seg: Segments) -> torch.Tensor:
    """mode "answer_joint": phi [...], mean log-prob of the answer tokens given their prefix."""
    logp = torch.log_softmax(answer_logits(logits, seg), dim=-1)  # [..., A, V]
    ids = seg.answer_ids.to(logits.device)
    picked = logp.gather(-1, ids.expand(*logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)  # [..., A]
    return picked.mean(dim=-1)


def p_final(logits: torch.Tensor, seg: Segments, mode: str) -> torch.Tensor:
    """log P_final [..., V] for the KL modes, phi [...] for answer_joint."""
    if mode == "last":
        return p_final_last(logits, seg)
    if mode == "last_after_answer":
        return torch.log_softmax(after_answer_logits(logits, seg), dim=-1)
    if mode == "answer_mean":
        return p_final_answer_mean(logits, seg)
    return phi_answer_joint(logits, seg)


def kl_from_log_probs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_v p (log p - log q) over the last dim, from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(dim=-1)


# --------------------------------------------------------------------------------------
# Model access and output assembly (argument checks, MODES and EvalMode are the library's:
# oar_kernels/importance/_common.py, so the oracles and the estimators reject the same inputs).
# --------------------------------------------------------------------------------------


def _embedding(model) -> torch.nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None or not hasattr(emb, "weight"):
        # TypeError, like the fast estimators: the model is of the wrong kind, not a bad value.
        raise TypeError("model: expected a transformers causal LM with get_input_embeddings()")
    return emb


def _empty_output(segments: Sequence[Segments], device) -> Tuple[torch.Tensor, torch.Tensor]:
    r_max = max((s.num_reasoning for s in segments), default=0)
    scores = torch.zeros(len(segments), r_max, dtype=torch.float32, device=device)
    mask = torch.zeros(len(segments), r_max, dtype=torch.bool, device=device)
    return scores, mask


# --------------------------------------------------------------------------------------
# OAR-P
# --------------------------------------------------------------------------------------


@torch.no_grad()
def perturbation_importance_naive(
    model,
    segments: Sequence[Segments],
    mode: str = "last",
    perturb_token: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """OAR-P: I_t from replacing reasoning token t by `perturb_token` (docs/algorithm.md section 3).

    KL modes: I_t = KL(P_final || P_final^(t)); answer_joint: I_t = phi - phi^(t).
    One batch-1 forward of the whole scoring sequence per reasoning token, the same shape as
    the clean forward, so a perturbation that leaves the sequence unchanged scores exactly 0.

    Returns (scores [B, R_max] float32, mask [B, R_max] bool); see the module docstring.
    """
    segments = check_segments(segments)
    check_choice("mode", mode, MODES)
    emb = _embedding(model)
    vocab = int(emb.weight.shape[0])
    perturb_token = resolve_perturb_token(model, perturb_token, vocab)
    with_answer = mode != "last"
    check_lengths(model, segments, with_answer, vocab)
    device = emb.weight.device
    scores, mask = _empty_output(segments, device)

    def forward(ids: torch.Tensor, seg: Segments) -> torch.Tensor:
        """[L] token ids -> log P_final [V] (KL modes) or phi [] (answer_joint)."""
        logits = model(input_ids=ids.to(device).unsqueeze(0)).logits[0]  # [L, V]
        return p_final(logits, seg, mode)

    with EvalMode(model):
        for b, seg in enumerate(segments):
            if not is_scored(seg, mode):
                continue
            seq = seg.sequence(with_answer)
            clean = forward(seq, seg)
            for t in range(seg.num_reasoning):
                perturbed = seq.clone()
                perturbed[seg.reasoning_start + t] = perturb_token
                pert = forward(perturbed, seg)
                if mode == "answer_joint":
                    value = clean - pert
                else:
                    value = kl_from_log_probs(clean, pert)
                scores[b, t] = value.float()
            mask[b, : seg.num_reasoning] = True
    return scores, mask


# --------------------------------------------------------------------------------------
# OAR-G
# --------------------------------------------------------------------------------------


def draw_noise(num: int, dim: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One row's standard-normal noise [num, dim] float32, by the module's draw convention
    (written here from it; the fast estimators have their own copy, which the tests compare)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn((num, dim), generator=generator, device=device, dtype=torch.float32)


def _objective(clean: torch.Tensor, noisy: torch.Tensor, mode: str) -> torch.Tensor:
    """J: KL(P_clean || P_noisy) with log(p + 1e-12) (KL modes), phi_clean - phi_noisy."""
    if mode == "answer_joint":
        return clean - noisy
    p, q = clean.exp(), noisy.exp()
    return (p * (torch.log(p + _LOG_EPS) - torch.log(q + _LOG_EPS))).sum(dim=-1)


def gradient_importance_naive(
    model,
    segments: Sequence[Segments],
    mode: str = "answer_mean",
    noise_std: float = 1e-3,
    score: str = "grad_x_input",
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """OAR-G: input-gradient saliency of the reasoning tokens (docs/algorithm.md section 4).

    Per scored response, three passes over its scoring sequence: a clean forward without
    gradient (teacher P_clean or phi_clean); a forward on the input embeddings with noise
    (noise_std * standard normal, module docstring's convention) added at the reasoning
    positions only; the gradient of J with respect to those embeddings alone
    (torch.autograd.grad, so no parameter gradient is computed or touched).
    score "grad_x_input": I_t = |<dJ/de_t, e_t>| with the clean e_t; "grad_norm": ||dJ/de_t||_2.

    Returns (scores [B, R_max] float32, mask [B, R_max] bool); see the module docstring.
    """
    segments = check_segments(segments)
    check_choice("mode", mode, MODES)
    check_choice("score", score, SCORES)
    check_number("noise_std", noise_std, lo=0.0)
    check_generator(generator)
    emb = _embedding(model)
    vocab, dim = int(emb.weight.shape[0]), int(emb.weight.shape[1])
    with_answer = mode != "last"
    check_lengths(model, segments, with_answer, vocab)
    device, dtype = emb.weight.device, emb.weight.dtype

    # inference_mode(False): a caller's inference_mode would otherwise make autograd impossible.
    with EvalMode(model), torch.inference_mode(False):
        scores, mask = _empty_output(segments, device)
        for b, seg in enumerate(segments):
            if not is_scored(seg, mode):
                continue
            r0, n = seg.reasoning_start, seg.num_reasoning
            ids = seg.sequence(with_answer).to(device).unsqueeze(0)  # [1, L]
            with torch.no_grad():
                e_clean = emb(ids)  # [1, L, D]
                clean = p_final(model(inputs_embeds=e_clean).logits[0], seg, mode)

            noise = draw_noise(n, dim, generator).to(device=device, dtype=dtype) * noise_std
            e_noisy = e_clean.clone()
            e_noisy[0, r0 : r0 + n] += noise
            e_noisy.requires_grad_(True)  # a fresh leaf: the only thing we differentiate
            with torch.enable_grad():
                noisy = p_final(model(inputs_embeds=e_noisy).logits[0], seg, mode)
                objective = _objective(clean, noisy, mode)
                (grad,) = torch.autograd.grad(objective, e_noisy)  # [1, L, D]

            g = grad[0, r0 : r0 + n]  # [R, D]
            if score == "grad_x_input":
                value = (g * e_clean[0, r0 : r0 + n]).sum(dim=-1).abs()
            else:
                value = g.norm(dim=-1)
            scores[b, :n] = value.detach().float()
            mask[b, :n] = True
    return scores, mask


__all__ = [
    "MODES",
    "after_answer_logits",
    "SCORES",
    "answer_logits",
    "default_perturb_token",
    "draw_noise",
    "gradient_importance_naive",
    "kl_from_log_probs",
    "last_logits",
    "p_final",
    "p_final_answer_mean",
    "p_final_last",
    "perturbation_importance_naive",
    "phi_answer_joint",
]
