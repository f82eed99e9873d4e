"""Generation: a generation batch (prompts -> sampled responses -> rewards -> advantages), and
the greedy held-out evaluation.

Every generate call is seeded from (seed, generation index, call), so a run, a resumed run and
a run over N processes with the same `generation_batch_size` sample the same responses.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional

import torch

from .. import group_advantages
from ..data import format_prompt
from ..rewards import DEFAULT_REWARD, accuracy_reward
from .config import TrainConfig
from .distributed import Dist

if TYPE_CHECKING:
    from .loop import Run


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class SampledRow(NamedTuple):
    """One sampled response and the prompt it answers."""
    prompt_ids: List[int]
    response_ids: List[int]  # EOS included when the response ended
    text: str
    truncated: bool  # stopped at max_completion_length


@dataclass
class Rollout:
    """One generation batch of this process: what every update on it needs.

    rows: the sampled responses, in prompt-major order (num_generations per prompt).
    weights / reasoning: [rows, C] OAR weights (1 outside the reasoning) and the reasoning mask,
    set once per batch (by the first update on the one-forward OAR-G path). old_logp: [rows, C]
    log-probs of the sampling policy, kept from the first update for the later ones
    (num_iterations > 1).
    """
    index: int
    prompts: List[str]
    answers: List[str]
    rows: List[SampledRow]
    rewards: torch.Tensor
    correct: torch.Tensor
    advantages: torch.Tensor
    time_rollout: float = 0.0
    time_importance: float = 0.0
    oar_responses: int = 0
    weights: Optional[torch.Tensor] = None
    reasoning: Optional[torch.Tensor] = None
    old_logp: Optional[torch.Tensor] = None
    segments: Optional[list] = None  # one-forward OAR-G: per-row Segments, used by the first update only

    @property
    def width(self) -> int:
        return max(max(len(r.response_ids) for r in self.rows), 1)

    def to_state(self) -> Dict[str, Any]:
        """What a checkpoint taken between two updates on this batch keeps (rows as plain tuples:
        a checkpoint does not depend on this module's classes)."""
        return {**vars(self), "rows": [tuple(r) for r in self.rows], "segments": None}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Rollout":
        return cls(**{**state, "rows": [SampledRow(*r) for r in state["rows"]]})


def sample(model, tokenizer, prompts: List[str], cfg: TrainConfig, seeds: List[int], greedy=False,
           vllm=None) -> List[SampledRow]:
    """A SampledRow for each prompt repeated num_generations times (once when greedy); one
    generate call per chunk of generation_batch_size completions, seeded with seeds[chunk]."""
    from ..rollout import generate_hf

    synced = cfg.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1
    G = 1 if greedy else cfg.num_generations
    size = len(prompts) if greedy else (cfg.generation_batch_size // G or len(prompts))
    rows = []
    for c, c0 in enumerate(range(0, len(prompts), size)):
        chunk = prompts[c0 : c0 + size]
        if vllm is not None and not greedy:
            r = vllm.generate(chunk, G, cfg.max_completion_length, cfg.temperature, cfg.top_p, seeds[c])
        else:
            r = generate_hf(model, tokenizer, chunk, G, cfg.max_completion_length, cfg.temperature, cfg.top_p,
                            greedy=greedy, seed=None if greedy else seeds[c], synced_gpus=synced)
        for i in range(len(r.completions)):
            rows.append(SampledRow(r.prompt_tokens(i), r.response_ids(i), r.completions[i], bool(r.truncated[i])))
    return rows


def prompts_per_call(cfg: TrainConfig, dist: Dist) -> int:
    """Prompts per generate call of one process (the OAR weights are computed per call too)."""
    return cfg.generation_batch_size // cfg.num_generations or cfg.prompts_per_step // dist.world


def generate(run: "Run", index: int) -> "Rollout":
    """Generation batch `index` of this process: its prompts (data position index * prompts_per_step
    + this process's share), sampled responses, rewards and group advantages over all processes."""
    cfg, dist = run.cfg, run.dist
    t0 = time.time()
    G, P_local = cfg.num_generations, cfg.prompts_per_step // dist.world
    first = index * cfg.prompts_per_step + dist.rank * P_local
    examples = [run.task.train_example(cfg.seed, first + j) for j in range(P_local)]
    prompts = [format_prompt(e.question, cfg.prompt_template) for e in examples]
    per_call = prompts_per_call(cfg, dist)
    seeds = [derive_seed(cfg.seed, index, "sample", (dist.rank * P_local + c0) // per_call)
             for c0 in range(0, P_local, per_call)]
    run.model.eval()
    rows = sample(run.model, run.tokenizer, prompts, cfg, seeds, vllm=run.vllm)

    texts = [r.text for r in rows]
    answers = [e.answer for e in examples for _ in range(G)]
    prompts_rep = [p for p in prompts for _ in range(G)]
    rewards = torch.tensor(run.reward_fn(prompts_rep, texts, answers), dtype=torch.float32)
    if rewards.shape != (len(rows),) or not torch.isfinite(rewards).all():
        raise ValueError(f"reward_fn: expected {len(rows)} finite floats, got {rewards.tolist()}")
    adv = group_advantages(dist.gather_cat(rewards), G, scale=cfg.scale_rewards)  # whole batch's groups
    adv = adv[dist.rank * len(rows) : (dist.rank + 1) * len(rows)]
    correct = (rewards if cfg.reward_fn == DEFAULT_REWARD
               else torch.tensor(accuracy_reward(prompts_rep, texts, answers), dtype=torch.float32))
    return Rollout(index=index, prompts=prompts_rep, answers=answers, rows=rows, rewards=rewards, correct=correct,
                   advantages=adv, time_rollout=time.time() - t0)


@torch.no_grad()
def evaluate(model, tokenizer, examples, cfg: TrainConfig, dist: Dist, chunk: int = 64) -> float:
    """Greedy accuracy (the default accuracy reward) on `examples`, sharded over processes."""
    mine = examples[dist.rank :: dist.world] if dist.enabled else examples
    correct = 0.0
    n_chunks = math.ceil(math.ceil(len(examples) / dist.world) / chunk)  # the same on every process
    for c0 in range(0, n_chunks * chunk, chunk):
        part = mine[c0 : c0 + chunk]
        # every process makes as many generate calls as the others (FSDP forwards are collective)
        rows = sample(model, tokenizer, [format_prompt(e.question, cfg.prompt_template) for e in part or examples[:1]],
                      cfg, [0], greedy=True)
        if part:
            correct += sum(accuracy_reward([], [r.text for r in rows], [e.answer for e in part]))
    t = dist.sum(torch.tensor([correct, float(len(mine))], dtype=torch.float64))
    return float(t[0] / max(t[1], 1.0))
