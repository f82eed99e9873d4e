"""OAR weights of a generation batch: which responses are scored, their token importance
(OAR-G or OAR-P on the current policy) and the Bi-Level reshaping into per-token weights.

Responses with a zero advantage, no extractable answer or no reasoning keep weight 1 at every
position. The batched estimators of oar_kernels.importance equal the naive oracles
(tests/test_importance_fast.py).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Dict, List, Tuple

import torch

from .. import bilevel_reshape
from ..importance.scoring import score_segments
from ..segments import Segments, build_scored_segments
from .config import TrainConfig
from .distributed import Dist, full_parameters
from .generation import Rollout, SampledRow, derive_seed, prompts_per_call

if TYPE_CHECKING:
    from .loop import Run


def scored_segments(rows: List[SampledRow], adv, tokenizer, cfg, answers=None) -> Tuple[List[int], List[Segments]]:
    """(indices, Segments) of the rows OAR scores, by the rule the TRL adapter and the verl plugin
    use (segments.build_scored_segments): nonzero advantage, an extractable answer (with
    cfg.answer_source 'reference': the data's answer `answers[i]` instead, every row) and some
    reasoning. Every other row keeps weight 1 at every position."""
    rows = [SampledRow(*r) for r in rows]  # also plain (prompt ids, response ids, text, truncated) tuples
    reference = getattr(cfg, "answer_source", "response") == "reference"
    if reference and answers is None:
        raise ValueError("answer_source 'reference': scored_segments needs the data's answers")
    picked, segs, _ = build_scored_segments(
        [r.prompt_ids for r in rows], [r.response_ids for r in rows], tokenizer,
        conclude_text=cfg.resolved_conclude_text(), references=list(answers) if reference else None,
        advantages=[float(a) for a in adv], response_texts=[r.text for r in rows])
    return picked, segs


def row_segments(rows: List[SampledRow], adv, tokenizer, cfg, answers) -> Tuple[List[int], List[Segments]]:
    """(scored indices, one Segments per row): the scored rows' segments, empty ones (weight 1)
    for the others, as importance.OARGStep takes them."""
    picked, segs = scored_segments(rows, adv, tokenizer, cfg, answers)
    empty = torch.zeros(0, dtype=torch.long)
    out = [Segments(torch.as_tensor(r[0], dtype=torch.long), empty, empty, empty) for r in rows]
    for i, seg in zip(picked, segs):
        out[i] = seg
    return picked, out


def use_oarg_step(cfg: TrainConfig, dist: Dist) -> bool:
    """OAR-G through importance.OARGStep (the update's own forward yields the saliency)?"""
    if cfg.algo != "oar-g" or cfg.oarg_step == "separate":
        return False
    if dist.enabled:
        if cfg.oarg_step == "one-forward":
            raise ValueError("oarg_step: 'one-forward' runs in a single process (its forward bypasses the "
                             "DDP / FSDP wrapper); use 'auto' or 'separate' under torchrun")
        return False
    return True


def oar_weights(model, tokenizer, rows: List[SampledRow], adv, cfg, seed, stats, answers=None):
    """[len(rows), C] weights on response positions: Bi-Level weights on each response's
    reasoning prefix, 1 elsewhere and for responses with no answer or zero advantage."""
    C = max(max(len(r[1]) for r in rows), 1)  # r.response_ids of a SampledRow or plain tuple
    weights = torch.ones((len(rows), C), dtype=torch.float32)
    reasoning = torch.zeros((len(rows), C), dtype=torch.bool)
    if cfg.algo == "grpo":
        return weights, reasoning
    picked, segs = scored_segments(rows, adv, tokenizer, cfg, answers)
    stats["oar_responses"] = float(len(picked))
    if not segs:
        return weights, reasoning
    scores, smask = score_segments(
        model, segs, cfg.algo, cfg.resolved_pfinal_mode(), noise_std=cfg.noise_std, score=cfg.saliency,
        generator=torch.Generator().manual_seed(seed), perturb_token=cfg.perturb_token,
        # the trainer's max_batch_tokens is OAR-P's option (its help); OAR-G keeps its own budget
        max_batch_tokens=cfg.max_batch_tokens if cfg.algo == "oar-p" else None)
    w = bilevel_reshape(scores.float().cpu(), smask.cpu(), tau=cfg.tau, beta=cfg.oar_beta, floor=cfg.floor,
                        sum_to_len=cfg.sum_to_len)
    for j, i in enumerate(picked):
        R = segs[j].num_reasoning
        weights[i, :R] = w[j, :R]
        reasoning[i, :R] = True
    return weights, reasoning


def noise_seed(cfg: TrainConfig, dist: Dist, generation: int, call: int) -> int:
    """OAR-G noise seed of one generate call's responses (the separate and the one-forward path
    draw the same noise)."""
    P_local = cfg.prompts_per_step // dist.world
    return derive_seed(cfg.seed, generation, "noise", (dist.rank * P_local) // prompts_per_call(cfg, dist) + call)


def weigh_rollout(run: "Run", batch: Rollout) -> None:
    """Sets batch.weights / batch.reasoning: per generate call, importance on the current policy
    and Bi-Level weights. The one-forward OAR-G path leaves the scored rows to the update."""
    cfg, dist = run.cfg, run.dist
    t0 = time.time()
    batch.weights = torch.ones((len(batch.rows), batch.width))
    batch.reasoning = torch.zeros((len(batch.rows), batch.width), dtype=torch.bool)
    if cfg.algo == "grpo" or use_oarg_step(cfg, dist):
        if cfg.algo == "oar-g":  # the update's forward scores these rows
            picked, batch.segments = row_segments(batch.rows, batch.advantages, run.tokenizer, cfg, batch.answers)
            batch.oar_responses = len(picked)
        batch.time_importance = time.time() - t0
        return
    per_call = prompts_per_call(cfg, dist) * cfg.num_generations
    with full_parameters(run.model, cfg, dist):
        for c, r0 in enumerate(range(0, len(batch.rows), per_call)):
            stats: Dict[str, float] = {}
            part = slice(r0, r0 + per_call)
            w, rm = oar_weights(run.model, run.tokenizer, batch.rows[part], batch.advantages[part], cfg,
                                noise_seed(cfg, dist, batch.index, c), stats, batch.answers[part])
            batch.oar_responses += int(stats.get("oar_responses", 0))
            batch.weights[part, : w.shape[1]] = w
            batch.reasoning[part, : rm.shape[1]] = rm
    batch.time_importance = time.time() - t0
