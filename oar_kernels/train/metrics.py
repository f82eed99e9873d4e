"""A step's metrics over all processes (one metrics.jsonl row), and the responses the weights
page shows."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List

import torch

from ..answers import extract_answer
from .generation import Rollout

if TYPE_CHECKING:
    from .loop import Run


def step_metrics(run: "Run", batch: Rollout, upd: Dict[str, float], step: int, time_step: float) -> Dict[str, Any]:
    """metrics.jsonl row of optimizer step `step` (1-based) on `batch`. Rewards, lengths and
    weights describe the generation batch (the same for each of its num_iterations steps); loss,
    clip ratio, gradient norm and learning rate this step's update."""
    dist = run.dist
    wv = batch.weights[batch.reasoning]  # weights of scored reasoning tokens
    sums = dist.sum(torch.tensor([
        float(batch.rewards.sum()), float(batch.correct.sum()), float(len(batch.rows)),
        sum(len(r.response_ids) for r in batch.rows), sum(extract_answer(r.text) is None for r in batch.rows),
        sum(r.truncated for r in batch.rows), float(wv.sum()), float((wv ** 2).sum()), float(wv.numel()),
        float((wv > 1).sum()), float((wv < 1).sum()), float(batch.oar_responses),
    ], dtype=torch.float64)).tolist()
    reward, correct, n, length, no_answer, truncated, w_sum, w_sq, nw, boosted, suppressed, scored = sums
    wmin = dist.reduce(torch.tensor([float(wv.min()) if wv.numel() else math.inf], dtype=torch.float64), "MIN").item()
    wmax = dist.reduce(torch.tensor([float(wv.max()) if wv.numel() else -math.inf], dtype=torch.float64), "MAX").item()
    w_mean = w_sum / nw if nw else 1.0
    first = (step - 1) % run.cfg.num_iterations == 0  # the generation and weighting happened in this step
    return {
        "kind": "train", "step": step, "generation": batch.index, "iteration": (step - 1) % run.cfg.num_iterations,
        "reward": reward / n, "accuracy": correct / n, "loss": upd["loss"], "clip_ratio": upd["clip_ratio"],
        "completion_length": length / n, "no_answer_frac": no_answer / n, "truncated_frac": truncated / n,
        "oar_responses": int(scored), "weight_mean": w_mean,
        "weight_std": math.sqrt(max(w_sq / nw - w_mean ** 2, 0.0)) if nw else 0.0,
        "weight_min": wmin if nw else 1.0, "weight_max": wmax if nw else 1.0,
        "boosted_frac": boosted / max(nw, 1.0), "suppressed_frac": suppressed / max(nw, 1.0),
        "lr": upd["lr"], "grad_norm": upd["grad_norm"], "data_position": (batch.index + 1) * run.cfg.prompts_per_step,
        "time_rollout": batch.time_rollout if first else 0.0,
        "time_importance": batch.time_importance if first else 0.0, "time_step": time_step,
    }


def weighted_samples(batch: Rollout, tokenizer, limit: int) -> List[Dict[str, Any]]:
    """Up to `limit` scored responses of the batch, token by token with their weights (weights.html,
    weights.png)."""
    out = []
    for i in [i for i in range(len(batch.rows)) if batch.reasoning[i].any()][:limit]:
        resp = batch.rows[i].response_ids
        out.append({
            "prompt": batch.prompts[i], "reward": float(batch.rewards[i]), "advantage": float(batch.advantages[i]),
            "tokens": [tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                       for t in resp],
            "weights": batch.weights[i, : len(resp)].tolist(), "reasoning": batch.reasoning[i, : len(resp)].tolist(),
        })
    return out
