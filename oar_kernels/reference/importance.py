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

import numbers
from typing import List, Optional, Sequence, Tuple

import torch

from .._checks import check_choice, check_number
from ..segments import Segments

# "last_after_answer": the next-token distribution after the appended answer (what the authors'
# OAR-G reads for its `last`; "last" reads after the conclude text, the paper's description).
MODES = ("last", "answer_mean", "answer_joint", "last_after_answer")
SCORES = ("grad_x_input", "grad_norm")
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
# Shared plumbing: validation, train-flag handling, output assembly.
# --------------------------------------------------------------------------------------


def check_segments(segments) -> List[Segments]:
    """The list of Segments, or ValueError naming the bad element."""
    if not isinstance(segments, (list, tuple)):
        raise ValueError(f"segments: expected a list of Segments, got {type(segments).__name__}")
    for b, seg in enumerate(segments):
        if not isinstance(seg, Segments):
            raise ValueError(f"segments[{b}]: expected Segments, got {type(seg).__name__}")
    return list(segments)


def _embedding(model) -> torch.nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None or not hasattr(emb, "weight"):
        # TypeError, like the fast estimators: the model is of the wrong kind, not a bad value.
        raise TypeError("model: expected a transformers causal LM with get_input_embeddings()")
    return emb


def check_lengths(model, segments: Sequence[Segments], with_answer: bool, vocab: int) -> None:
    """ValueError naming the response when a scoring sequence exceeds the context or vocab."""
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    for b, seg in enumerate(segments):
        seq = seg.sequence(with_answer)
        if max_len is not None and seq.numel() > max_len:
            raise ValueError(
                f"segments[{b}]: scoring sequence of response {b} has {seq.numel()} tokens, more "
                f"than the model's context (max_position_embeddings={max_len})"
            )
        if seq.numel() and int(seq.max()) >= vocab:
            raise ValueError(
                f"segments[{b}]: token id {int(seq.max())} of response {b} is outside the "
                f"model's vocabulary of {vocab}"
            )


def is_scored(seg: Segments, mode: str) -> bool:
    """Rows with no reasoning, or no answer in the modes that read it (all but "last"), are not
    scored (weights 1)."""
    if seg.num_reasoning == 0:
        return False
    return mode == "last" or seg.answer_ids.numel() > 0


class EvalMode:
    """Puts every submodule in eval mode (dropout off); restores each one's flag on exit."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _empty_output(segments: Sequence[Segments], device) -> Tuple[torch.Tensor, torch.Tensor]:
    r_max = max((s.num_reasoning for s in segments), default=0)
    scores = torch.zeros(len(segments), r_max, dtype=torch.float32, device=device)
    mask = torch.zeros(len(segments), r_max, dtype=torch.bool, device=device)
    return scores, mask


# --------------------------------------------------------------------------------------
# OAR-P
# --------------------------------------------------------------------------------------


def default_perturb_token(model) -> int:
    """config.pad_token_id, else config.eos_token_id (the first if a list)."""
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if len(eos) else None
    if eos is not None:
        return int(eos)
    raise ValueError(
        "perturb_token: the model's config has neither pad_token_id nor eos_token_id; pass perturb_token"
    )


def resolve_perturb_token(model, perturb_token, vocab: int) -> int:
    """The perturbation token id: the given one (int or 1-element integer tensor) or the
    model's default, checked to lie in [0, vocab)."""
    if perturb_token is None:
        perturb_token = default_perturb_token(model)
    if isinstance(perturb_token, torch.Tensor) and perturb_token.numel() == 1 and not perturb_token.is_floating_point():
        perturb_token = perturb_token.item()
    if (
        isinstance(perturb_token, bool)
        or not isinstance(perturb_token, numbers.Integral)
        or not 0 <= int(perturb_token) < vocab
    ):
        raise ValueError(f"perturb_token: expected a token id in [0, {vocab}), got {perturb_token!r}")
    return int(perturb_token)


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")


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
    """One row's standard-normal noise [num, dim] float32, by the module's draw convention."""
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
