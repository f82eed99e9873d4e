"""Token importance for the trainer: one small switch between implementations.

`importance_fns()` returns (gradient_importance, perturbation_importance): the fast ones from
oar_kernels.importance when present, else the naive oracles from oar_kernels.reference, else
the plain fallbacks below (same signatures and semantics as OAR_SPEC.md sections 3-4).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..segments import Segments


def importance_fns():
    try:
        from ..importance import gradient_importance, perturbation_importance

        return gradient_importance, perturbation_importance
    except ImportError:
        pass
    try:
        from ..reference.importance import gradient_importance_naive, perturbation_importance_naive

        return gradient_importance_naive, perturbation_importance_naive
    except ImportError:
        return gradient_importance_fallback, perturbation_importance_fallback


# ---------------------------------------------------------------------------------------
# Plain fallbacks (used only while neither oar_kernels.importance nor the oracles exist).

MODES = ("last", "answer_mean", "answer_joint")


def _pad(seqs: Sequence[torch.Tensor], pad_id: int, device):
    L = max(int(s.numel()) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : s.numel()] = s
        att[i, : s.numel()] = 1
    return ids.to(device), att.to(device)


def _pfinal(logits: torch.Tensor, seg: Segments, mode: str, row_len: int) -> torch.Tensor:
    """log P_final (a [V] log-distribution) for last / answer_mean; phi (0-dim) for answer_joint."""
    logits = logits.float()
    if mode == "last":
        return torch.log_softmax(logits[row_len - 1], dim=-1)
    a0, A = seg.answer_start, int(seg.answer_ids.numel())
    pos = slice(a0 - 1, a0 - 1 + A)
    if mode == "answer_mean":
        return torch.log_softmax(logits[pos].mean(dim=0), dim=-1)
    lp = torch.log_softmax(logits[pos], dim=-1)
    return lp.gather(-1, seg.answer_ids.to(lp.device).unsqueeze(-1)).mean()


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    p = logp.exp()
    return (p * (torch.log(p + 1e-12) - torch.log(logq.exp() + 1e-12))).sum(-1)


def _pad_id(model, perturb_token: Optional[int]) -> int:
    if perturb_token is not None:
        return int(perturb_token)
    cfg = model.config
    pad = getattr(cfg, "pad_token_id", None)
    if pad is None:
        eos = getattr(cfg, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, (list, tuple)) else eos
    return int(pad if pad is not None else 0)


def _check_modes(segments, mode):
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    if mode != "last" and any(s.answer_ids.numel() == 0 and s.num_reasoning for s in segments):
        raise ValueError(f"segments: mode {mode!r} needs an answer for every response with reasoning")


def _out(segments, device):
    R = max([s.num_reasoning for s in segments] + [0])
    scores = torch.zeros((len(segments), R), dtype=torch.float32)
    mask = torch.zeros((len(segments), R), dtype=torch.bool)
    for b, s in enumerate(segments):
        mask[b, : s.num_reasoning] = True
    return scores, mask


def gradient_importance_fallback(model, segments: List[Segments], mode="answer_mean", noise_std=1e-3,
                                 score="grad_x_input", generator=None) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_modes(segments, mode)
    device = next(model.parameters()).device
    scores, mask = _out(segments, device)
    if not segments or scores.shape[1] == 0:
        return scores, mask
    with_answer = mode != "last"
    seqs = [s.sequence(with_answer) for s in segments]
    ids, att = _pad(seqs, _pad_id(model, None), device)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        e = emb(ids).detach()
        clean = model(inputs_embeds=e, attention_mask=att).logits
        teacher = [_pfinal(clean[b], s, mode, len(seqs[b])) for b, s in enumerate(segments)]
    noise_mask = torch.zeros(e.shape[:2], dtype=e.dtype)
    for b, s in enumerate(segments):
        noise_mask[b, s.reasoning_start : s.reasoning_start + s.num_reasoning] = 1
    noise = torch.randn(e.shape, generator=generator, dtype=e.dtype) if generator is not None else torch.randn(e.shape, dtype=e.dtype)
    x = (e + noise.to(device) * noise_std * noise_mask.to(device).unsqueeze(-1)).requires_grad_(True)
    logits = model(inputs_embeds=x, attention_mask=att).logits
    J = 0.0
    for b, s in enumerate(segments):
        if not s.num_reasoning:
            continue
        noisy = _pfinal(logits[b], s, mode, len(seqs[b]))
        J = J + (teacher[b] - noisy if mode == "answer_joint" else _kl(teacher[b], noisy))
    if not torch.is_tensor(J) or not J.requires_grad:
        return scores, mask
    (g,) = torch.autograd.grad(J, x)
    sal = (g * e).sum(-1).abs() if score == "grad_x_input" else g.norm(dim=-1)
    for b, s in enumerate(segments):
        r0 = s.reasoning_start
        scores[b, : s.num_reasoning] = sal[b, r0 : r0 + s.num_reasoning].float().cpu()
    return scores, mask


@torch.no_grad()
def perturbation_importance_fallback(model, segments: List[Segments], mode="last", perturb_token=None,
                                     max_batch_tokens=8192, prefix_reuse=True) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_modes(segments, mode)
    device = next(model.parameters()).device
    scores, mask = _out(segments, device)
    ptok = _pad_id(model, perturb_token)
    with_answer = mode != "last"
    for b, s in enumerate(segments):
        R = s.num_reasoning
        if not R:
            continue
        seq = s.sequence(with_answer)
        L = int(seq.numel())
        clean_logits = model(input_ids=seq.unsqueeze(0).to(device)).logits[0]
        ref = _pfinal(clean_logits, s, mode, L)
        chunk = max(1, max_batch_tokens // L)
        for t0 in range(0, R, chunk):
            ts = range(t0, min(R, t0 + chunk))
            batch = seq.unsqueeze(0).repeat(len(ts), 1)
            for j, t in enumerate(ts):
                batch[j, s.reasoning_start + t] = ptok
            logits = model(input_ids=batch.to(device)).logits
            for j, t in enumerate(ts):
                pert = _pfinal(logits[j], s, mode, L)
                val = ref - pert if mode == "answer_joint" else _kl(ref, pert)
                scores[b, t] = float(val)
    return scores, mask
