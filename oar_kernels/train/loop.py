"""The training loop: rollout -> rewards -> advantages -> (OAR) importance -> Bi-Level weights
-> weighted GRPO loss -> backward -> optimizer step. Read `train()` top to bottom.

Data parallel runs (torchrun) split each step's prompts over the processes; advantages are
computed on the gathered rewards and losses normalised by the whole step's counts, so N
processes follow the same curve as one with the same global batch and seed.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
import os
import random
import shutil
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .. import bilevel_reshape, build_segments, grpo_loss, group_advantages
from ..segments import Segments
from ..data import format_prompt, load_task
from ..rewards import DEFAULT_REWARD, accuracy_reward, load_reward_fn
from ..rollout import left_pad, right_pad
from . import checkpoint as ckpt
from .config import TrainConfig, dump_config, validate
from .importance import importance_fns
from .report import append_jsonl, plot_curves, plot_weights, read_jsonl, truncate_metrics, write_weights_html


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


# -- processes -----------------------------------------------------------------------------

class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False

    def init(self, device: torch.device):
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
        return t

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t)
        return torch.cat(out)

    def close(self):
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def set_cpu_threads(cfg: TrainConfig, dist: Dist) -> int:
    """torch CPU threads: cfg.num_threads, or the cores left free by other work (at least 1)."""
    n = cfg.num_threads
    if n == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(torch.get_num_threads(), int(cores - round(busy))) // dist.world)
    torch.set_num_threads(n)
    return n


def resolve_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
        return torch.device("cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {cfg.device!r} requested but CUDA is not available")
    if cfg.device == "cuda" and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(cfg.device)


# -- model and optimiser -------------------------------------------------------------------

def load_policy(cfg: TrainConfig, dist: Dist, log: Callable):
    """(model, tokenizer, path) on CPU; the default policy ships in the package (built by rank 0 only for
    a changed recipe)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, cfg.dtype)
    if cfg.model == "default":
        from ..models import ensure_default_policy, load_default_policy

        if dist.main:  # the shipped policy: nothing to do; a changed recipe is warm-started once
            ensure_default_policy(cfg.cache_dir or None, progress=cfg.progress, log=log)
        dist.barrier()
        model, tok, path = load_default_policy(cfg.cache_dir or None, progress=False, log=log)
        return model.to(dtype), tok, path
    tok = AutoTokenizer.from_pretrained(cfg.model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    return model, tok, cfg.model


def make_scheduler(opt, cfg: TrainConfig):
    def factor(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - frac)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def wrap_parallel(model, cfg: TrainConfig, dist: Dist, device: torch.device):
    """The module the loss runs through: DDP, FSDP2 (cfg.fsdp) or the model itself."""
    if not dist.enabled:
        return model
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        layers = getattr(getattr(model, "model", None), "layers", None) or []
        for layer in layers:
            fully_shard(layer, reshard_after_forward=True)
        fully_shard(model, reshard_after_forward=False)  # the root's states are needed first in backward
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def model_state(model, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optim_state(model, opt, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optim_state(model, opt, optim_state_dict, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, opt, optim_state_dict, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(optim_state_dict)


# -- rollout, log-probs, evaluation ----------------------------------------------------------

def sample(model, tokenizer, prompts: List[str], cfg: TrainConfig, seeds: List[int], greedy=False, vllm=None):
    """Per-row (prompt token list, response token list with EOS, text, truncated) for each
    prompt repeated num_generations times; one generate call per chunk with its own seed."""
    from ..rollout import generate_hf

    synced = cfg.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1
    G = 1 if greedy else cfg.num_generations
    size = len(prompts) if greedy else (cfg.generation_batch_size or len(prompts))
    rows = []
    for c, c0 in enumerate(range(0, len(prompts), size)):
        chunk = prompts[c0 : c0 + size]
        if vllm is not None and not greedy:
            r = vllm.generate(chunk, G, cfg.max_completion_length, cfg.temperature, cfg.top_p, seeds[c])
        else:
            r = generate_hf(model, tokenizer, chunk, G, cfg.max_completion_length, cfg.temperature, cfg.top_p,
                            greedy=greedy, seed=None if greedy else seeds[c], synced_gpus=synced)
        for i in range(len(r.completions)):
            rows.append((r.prompt_tokens(i), r.response_ids(i), r.completions[i], bool(r.truncated[i])))
    return rows


def completion_logp(model, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0, lm_head=None):
    """log-probs [B, C] of the completion tokens (columns prompt_len..) under `model`, with the
    logits divided by the sampling temperature (the policy that produced the samples, as TRL).

    lm_head: the model's output Linear to take the log-probs with oar.fused_linear_logprob from
    the final hidden states, never building the [B, C, V] logits (the model is asked for one
    position of logits only); None: from the model's logits.
    """
    pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    if lm_head is not None:
        from ..ops.fused_linear_logprob import fused_linear_logprob

        out = model(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=pos,
                    logits_to_keep=1, output_hidden_states=True)
        h = out.hidden_states[-1][:, prompt_len - 1 : -1]  # after the final norm: the LM head's input
        B, C, D = h.shape
        targets = input_ids[:, prompt_len:].reshape(-1)
        logp = fused_linear_logprob(h.reshape(B * C, D), lm_head.weight, targets, bias=lm_head.bias,
                                    temperature=temperature)
        return logp.view(B, C)
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=pos).logits
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    targets = input_ids[:, prompt_len:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


FUSED_MIN_VOCAB = 32768  # fused_lm_head="auto": from here on the [tokens, V] logits dominate memory
FUSED_CPU_MIN_BYTES = 1 << 30  # on CPU the streamed head is slower: auto uses it only past this size


def fused_lm_head(model, cfg: TrainConfig, num_tokens: int = 0):
    """The output Linear when the update takes log-probs with the fused op (cfg.fused_lm_head),
    else None. auto: vocabularies >= FUSED_MIN_VOCAB, for models whose logits are a plain linear
    map of the last hidden state (no final logit soft-capping) and accept `logits_to_keep`; on
    CPU only when the [num_tokens, V] float32 logits would reach FUSED_CPU_MIN_BYTES."""
    if cfg.fused_lm_head == "off":
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    plain = (isinstance(head, torch.nn.Linear) and not getattr(config, "final_logit_softcapping", None)
             and "logits_to_keep" in inspect.signature(model.forward).parameters)
    if cfg.fused_lm_head == "on":
        if not plain:
            raise ValueError("fused_lm_head: 'on' needs a model whose logits are a plain nn.Linear of the last "
                             "hidden state (no final_logit_softcapping) and whose forward accepts logits_to_keep")
        return head
    if not plain or head.out_features < FUSED_MIN_VOCAB:
        return None
    if head.weight.device.type == "cpu" and num_tokens * head.out_features * 4 < FUSED_CPU_MIN_BYTES:
        return None
    return head


@torch.no_grad()
def evaluate(model, tokenizer, task, cfg: TrainConfig, dist: Dist) -> float:
    """Greedy held-out accuracy (the default accuracy reward), sharded over processes."""
    examples = task.eval_examples(cfg.eval_size)
    mine = examples[dist.rank :: dist.world] if dist.enabled else examples
    correct = 0.0
    n_chunks = math.ceil(math.ceil(len(examples) / dist.world) / 64)  # the same on every process
    for c0 in range(0, n_chunks * 64, 64):
        chunk = mine[c0 : c0 + 64]
        # every process makes as many generate calls as the others (FSDP forwards are collective)
        rows = sample(model, tokenizer, [format_prompt(e.question, cfg.prompt_template) for e in chunk or examples[:1]],
                      cfg, [0], greedy=True)
        if chunk:
            correct += sum(accuracy_reward([], [r[2] for r in rows], [e.answer for e in chunk]))
    t = dist.sum(torch.tensor([correct, float(len(mine))], dtype=torch.float64))
    return float(t[0] / max(t[1], 1.0))


# -- one step ---------------------------------------------------------------------------------

@contextlib.contextmanager
def full_parameters(model, cfg: TrainConfig, dist: Dist):
    """FSDP2: every shard unit's full parameters held for the block, with no collective inside it.

    The importance functions call the embeddings, the decoder body and the LM head directly
    (not through the root's forward, whose hooks gather the root's parameters), and run a
    data-dependent number of forwards per process (batches are cut by token budgets), so
    per-layer all-gathers inside them would not match across processes. One unshard of every
    unit before (the same collectives on every process), no resharding inside, reshard after.
    Memory: the whole model on each process during importance scoring.
    """
    if not (dist.enabled and cfg.fsdp):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for u in units:
        u.unshard()
        u.set_reshard_after_forward(False, recurse=False)
        u.set_reshard_after_backward(False, recurse=False)
    try:
        yield
    finally:
        for u in units:
            # wrap_parallel's choice: layers reshard after forward, the root does not
            u.set_reshard_after_forward(u is not model, recurse=False)
            u.set_reshard_after_backward(True, recurse=False)
            u.reshard()


def scored_segments(rows, adv, tokenizer, cfg, answers=None):
    """(indices, Segments) of the rows OAR scores: nonzero advantage, an extractable answer (with
    cfg.answer_source 'reference': the data's answer `answers[i]` instead, every row) and some
    reasoning. Every other row keeps weight 1 at every position."""
    picked, segs = [], []
    reference = getattr(cfg, "answer_source", "response") == "reference"
    if reference and answers is None:
        raise ValueError("answer_source 'reference': scored_segments needs the data's answers")
    for i, (p, resp, text, _) in enumerate(rows):
        if float(adv[i]) == 0.0:
            continue
        seg = build_segments(p, resp, tokenizer, conclude_text=cfg.resolved_conclude_text(), response_text=text,
                             reference_answer=answers[i] if reference else None)
        if (seg.answer_text is None and not reference) or seg.num_reasoning == 0:
            continue  # no extractable answer: every position keeps weight 1
        picked.append(i)
        segs.append(seg)
    return picked, segs


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


def oar_weights(model, tokenizer, rows, adv, cfg, seed, stats, answers=None):
    """[len(rows), C] weights on response positions: Bi-Level weights on each response's
    reasoning prefix, 1 elsewhere and for responses with no answer or zero advantage."""
    C = max(max(len(r[1]) for r in rows), 1)
    weights = torch.ones((len(rows), C), dtype=torch.float32)
    reasoning = torch.zeros((len(rows), C), dtype=torch.bool)
    if cfg.algo == "grpo":
        return weights, reasoning
    picked, segs = scored_segments(rows, adv, tokenizer, cfg, answers)
    stats["oar_responses"] = float(len(picked))
    if not segs:
        return weights, reasoning
    grad_fn, pert_fn = importance_fns()
    mode = cfg.resolved_pfinal_mode()
    model_was_training = model.training
    model.eval()
    if cfg.algo == "oar-g":
        gen = torch.Generator().manual_seed(seed)
        scores, smask = grad_fn(model, segs, mode=mode, noise_std=cfg.noise_std, score=cfg.saliency, generator=gen)
    else:
        scores, smask = pert_fn(model, segs, mode=mode, perturb_token=cfg.perturb_token,
                                max_batch_tokens=cfg.max_batch_tokens)
    model.train(model_was_training)
    w = bilevel_reshape(scores.float().cpu(), smask.cpu(), tau=cfg.tau, beta=cfg.oar_beta, floor=cfg.floor,
                        sum_to_len=cfg.sum_to_len)
    for j, i in enumerate(picked):
        R = segs[j].num_reasoning
        weights[i, :R] = w[j, :R]
        reasoning[i, :R] = True
    return weights, reasoning


def train_step(step, model, wrapped, ref_model, opt, sched, tokenizer, task, reward_fn, cfg, dist, device,
               vllm=None, samples=None):
    t0 = time.time()
    G, P = cfg.num_generations, cfg.prompts_per_step
    P_local = P // dist.world
    first = step * P + dist.rank * P_local  # data position: global index of this process's first prompt
    examples = [task.train_example(cfg.seed, first + j) for j in range(P_local)]
    prompts = [format_prompt(e.question, cfg.prompt_template) for e in examples]
    gbs = cfg.generation_batch_size or P_local
    seeds = [derive_seed(cfg.seed, step, "sample", (dist.rank * P_local + c0) // gbs) for c0 in range(0, P_local, gbs)]

    # 1. rollout
    model.eval()
    rows = sample(model, tokenizer, prompts, cfg, seeds, vllm=vllm)
    t_rollout = time.time() - t0

    # 2. rewards and advantages (on the whole step's rewards, gathered over processes)
    texts = [r[2] for r in rows]
    answers = [e.answer for e in examples for _ in range(G)]
    prompts_rep = [p for p in prompts for _ in range(G)]
    rewards = torch.tensor(reward_fn(prompts_rep, texts, answers), dtype=torch.float32)
    if rewards.shape != (len(rows),) or not torch.isfinite(rewards).all():
        raise ValueError(f"reward_fn: expected {len(rows)} finite floats, got {rewards.tolist()}")
    all_rewards = dist.gather_cat(rewards)
    adv = group_advantages(all_rewards, G, scale=cfg.scale_rewards)
    adv = adv[dist.rank * len(rows) : (dist.rank + 1) * len(rows)]
    correct = rewards if cfg.reward_fn == DEFAULT_REWARD else torch.tensor(accuracy_reward(prompts_rep, texts, answers))

    # 3. OAR weights (importance on the current policy, no parameter gradients)
    t1 = time.time()
    stats: Dict[str, float] = {"oar_responses": 0.0}
    weights_parts, reasoning_parts = [], []
    per_chunk = gbs * G
    one_forward = use_oarg_step(cfg, dist)
    if one_forward:  # the saliency comes with the update's forward (section 4); segments only here
        picked, segs = scored_segments(rows, adv, tokenizer, cfg, answers)
        stats["oar_responses"] = float(len(picked))
        empty = torch.zeros(0, dtype=torch.long)
        row_segs = [Segments(torch.as_tensor(r[0], dtype=torch.long), empty, empty, empty) for r in rows]
        for i, seg in zip(picked, segs):
            row_segs[i] = seg
    with full_parameters(model, cfg, dist) if cfg.algo != "grpo" and not one_forward else _null():
        for c, r0 in enumerate(range(0, len(rows), per_chunk) if not one_forward else ()):
            stats_c: Dict[str, float] = {}
            noise_seed = derive_seed(cfg.seed, step, "noise", (dist.rank * P_local) // gbs + c)
            w, rm = oar_weights(model, tokenizer, rows[r0 : r0 + per_chunk], adv[r0 : r0 + per_chunk], cfg,
                                noise_seed, stats_c, answers[r0 : r0 + per_chunk])
            stats["oar_responses"] += stats_c.get("oar_responses", 0.0)
            weights_parts.append(w)
            reasoning_parts.append(rm)
    t_importance = time.time() - t1

    # 4. loss over micro-batches, normalised by the whole step's counts
    p_ids, p_mask = left_pad([r[0] for r in rows], tokenizer.pad_token_id)
    c_ids, c_mask = right_pad([r[1] for r in rows], tokenizer.pad_token_id)
    C = c_ids.shape[1]
    weights = torch.ones((len(rows), C))
    reasoning = torch.zeros((len(rows), C), dtype=torch.bool)
    for (w, rm), r0 in zip(zip(weights_parts, reasoning_parts), range(0, len(rows), per_chunk)):  # separate path
        weights[r0 : r0 + w.shape[0], : w.shape[1]] = w[:, :C]
        reasoning[r0 : r0 + w.shape[0], : w.shape[1]] = rm[:, :C]
    truncated = torch.tensor([r[3] for r in rows])
    loss_mask = c_mask & ~truncated.unsqueeze(1) if cfg.mask_truncated_completions else c_mask
    n_items = dist.sum(loss_mask.sum().double()).item()
    n_seq = P * G
    ids = torch.cat([p_ids, c_ids], dim=1)
    att = torch.cat([p_mask, c_mask], dim=1)
    Lp = p_ids.shape[1]
    model.train()
    opt.zero_grad(set_to_none=True)
    fused_head = fused_lm_head(model, cfg, ids.numel())
    oarg = None
    if one_forward:
        from ..importance import OARGStep

        oarg = OARGStep(model, mode=cfg.resolved_pfinal_mode(), noise_std=cfg.noise_std, score=cfg.saliency,
                        tau=cfg.tau, beta=cfg.oar_beta, floor=cfg.floor, sum_to_len=cfg.sum_to_len,
                        fused_head=fused_head is not None, temperature=cfg.temperature)
    loss_sum, clip_sum = 0.0, 0.0
    parts = [p for p in np.array_split(np.arange(len(rows)), cfg.gradient_accumulation_steps)]
    for k, idx in enumerate(parts):
        idx = torch.as_tensor(idx, dtype=torch.long)
        sync = k == len(parts) - 1
        ctx = wrapped.no_sync() if (dist.enabled and not cfg.fsdp and not sync) else _null()
        with ctx:
            if len(idx) == 0:
                loss = sum(p.sum() * 0.0 for p in wrapped.parameters())  # keep collectives in step
                loss.backward()
                continue
            mb_ids, mb_att = ids[idx].to(device), att[idx].to(device)
            if oarg is not None:
                # one forward: log-probs of the update and OAR-G saliency -> weights (same noise
                # convention as the separate path: one generator per chunk, scored rows in order)
                gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, "noise", (dist.rank * P_local) // gbs + k))
                out = oarg([row_segs[i] for i in idx.tolist()],
                           [torch.as_tensor(rows[i][1], dtype=torch.long) for i in idx.tolist()], generator=gen)
                logp, N = out.logp, out.logp.shape[1]
                weights[idx, :N] = out.weights.detach().float().cpu()
                for j, i in enumerate(idx.tolist()):
                    reasoning[i, : row_segs[i].num_reasoning] = True
                mb_weights, mb_mask = weights[idx, :N], loss_mask[idx, :N]
            else:
                logp = completion_logp(wrapped, mb_ids, mb_att, Lp, cfg.temperature, lm_head=fused_head)
                mb_weights, mb_mask = weights[idx], loss_mask[idx]
            ref = None
            if cfg.beta > 0:
                with torch.no_grad():
                    ref = completion_logp(ref_model, mb_ids, mb_att, Lp, cfg.temperature,
                                          lm_head=fused_lm_head(ref_model, cfg, ids.numel()))[:, : logp.shape[1]]
            loss, m = grpo_loss(logp, None, adv[idx].to(device), mb_mask.to(device),
                                weights=mb_weights.to(device), ref_logp=ref, epsilon=cfg.epsilon,
                                epsilon_high=cfg.epsilon_high, beta=cfg.beta, loss_type=cfg.loss_type,
                                max_completion_length=cfg.max_completion_length, num_sequences=n_seq,
                                num_items_in_batch=n_items)
            (loss * dist.world).backward()  # DDP / FSDP average gradients over processes
        loss_sum += float(loss.detach())
        clip_sum += float(m["clip_ratio"]) * float(mb_mask.sum())
    if cfg.max_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.max_grad_norm))
    else:
        grad_norm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in wrapped.parameters() if p.grad is not None)))
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if vllm is not None:
        vllm.sync_weights(model)

    # 5. metrics over all processes
    wv = weights[reasoning]
    sums = torch.tensor([
        float(rewards.sum()), float(correct.sum()), float(len(rows)), loss_sum, clip_sum,
        float(c_mask.sum()), float(sum(1 for t in texts if _no_answer(t))), float(truncated.sum()),
        float(wv.sum()), float((wv ** 2).sum()), float(wv.numel()), float((wv > 1).sum()), float((wv < 1).sum()),
        stats["oar_responses"],
    ], dtype=torch.float64)
    sums = dist.sum(sums)
    wmin = dist.reduce(torch.tensor([float(wv.min()) if wv.numel() else math.inf], dtype=torch.float64), "MIN")
    wmax = dist.reduce(torch.tensor([float(wv.max()) if wv.numel() else -math.inf], dtype=torch.float64), "MAX")
    n = sums[2].item()
    nw = max(sums[10].item(), 1.0)
    w_mean = sums[8].item() / nw
    out = {
        "kind": "train", "step": step + 1, "reward": sums[0].item() / n, "accuracy": sums[1].item() / n,
        "loss": sums[3].item(), "clip_ratio": sums[4].item() / max(n_items, 1.0),
        "completion_length": sums[5].item() / n, "no_answer_frac": sums[6].item() / n,
        "truncated_frac": sums[7].item() / n, "oar_responses": int(sums[13].item()),
        "weight_mean": w_mean if sums[10] else 1.0,
        "weight_std": math.sqrt(max(sums[9].item() / nw - w_mean ** 2, 0.0)) if sums[10] else 0.0,
        "weight_min": wmin.item() if sums[10] else 1.0, "weight_max": wmax.item() if sums[10] else 1.0,
        "boosted_frac": sums[11].item() / nw, "suppressed_frac": sums[12].item() / nw,
        "lr": lr, "grad_norm": grad_norm, "data_position": (step + 1) * P,
        "time_rollout": t_rollout, "time_importance": t_importance, "time_step": time.time() - t0,
    }
    if samples is not None and dist.main:
        samples.clear()
        for i in [i for i in range(len(rows)) if reasoning[i].any()][: cfg.html_samples]:
            resp = rows[i][1]
            samples.append({
                "prompt": prompts_rep[i], "reward": float(rewards[i]), "advantage": float(adv[i]),
                "tokens": [tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                           for t in resp],
                "weights": weights[i, : len(resp)].tolist(), "reasoning": reasoning[i, : len(resp)].tolist(),
            })
    return out


def _no_answer(text: str) -> bool:
    from ..answers import extract_answer

    return extract_answer(text) is None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# -- the run ------------------------------------------------------------------------------------

class _StopFlag:
    """First Ctrl-C: finish the current step, checkpoint, exit. Second: stop at once."""

    def __init__(self, log):
        self.requested = False
        self._log = log
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log("\n[oar] interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *a):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train(cfg: TrainConfig, log: Callable[[str], None] = print, step_hook: Optional[Callable] = None) -> Dict[str, Any]:
    """Runs the configured training; returns a summary (accuracies before/after, times, paths).

    step_hook(step) is called after each completed step (tests use it to interrupt a run).
    """
    validate(cfg)
    t_start = time.time()
    dist = Dist()
    if dist.enabled and cfg.prompts_per_step % dist.world:
        raise ValueError(f"prompts_per_step: {cfg.prompts_per_step} must be a multiple of the "
                         f"{dist.world} processes")
    gbs = cfg.generation_batch_size
    if gbs and (cfg.prompts_per_step // dist.world) % gbs:
        raise ValueError(f"generation_batch_size: {gbs} must divide the prompts per process "
                         f"({cfg.prompts_per_step // dist.world})")
    device = resolve_device(cfg, dist)
    threads = set_cpu_threads(cfg, dist) if device.type == "cpu" else torch.get_num_threads()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init(device)
    log = log if dist.main else (lambda *a, **k: None)
    out = cfg.resolved_output_dir()
    ckpt_dir = os.path.join(out, "checkpoints")
    metrics_path = os.path.join(out, "metrics.jsonl")
    try:
        if dist.main:
            os.makedirs(out, exist_ok=True)
        dist.barrier()
        random.seed(cfg.seed), np.random.seed(cfg.seed % 2**32), torch.manual_seed(cfg.seed)
        task = load_task(cfg.dataset, cfg.eval_dataset or None, cfg.eval_size, cfg.seed)
        reward_fn = load_reward_fn(cfg.reward_fn)
        log(f"[oar] {cfg.algo} on {device}" + (f" ({threads} CPU threads)" if device.type == "cpu" else "")
            + (f", {dist.world} processes" if dist.enabled else ""))
        model, tokenizer, model_path = load_policy(cfg, dist, log)
        model.to(device)
        ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
        start, resumed_from, state = 0, None, None
        if cfg.resume:
            resumed_from = ckpt.latest_checkpoint(ckpt_dir)
            if resumed_from is None:
                raise ValueError(f"resume: no checkpoint in {ckpt_dir}")
            state = ckpt.load_checkpoint(resumed_from)
            model.load_state_dict(state["model"])
            if ref_model is not None and state.get("ref_model") is not None:
                ref_model.load_state_dict(state["ref_model"])
        vllm = None
        if cfg.rollout == "vllm":
            from ..rollout.vllm import VLLMRollout

            # the engine samples from the policy being trained: same dtype (vLLM's "auto" would
            # run a float32 policy in bfloat16)
            vllm = VLLMRollout(model_path, tokenizer, seed=cfg.seed, dtype=cfg.dtype)
            vllm.sync_weights(model)
        wrapped = wrap_parallel(model, cfg, dist, device)
        # after wrapping: FSDP2 swaps in sharded parameters, which the optimizer must hold
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        sched = make_scheduler(opt, cfg)
        if state is not None:
            load_optim_state(model, opt, state["optimizer"], cfg, dist)
            sched.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            start = state["step"]
            if dist.main:
                truncate_metrics(metrics_path, start, drop_final_eval=start >= cfg.max_steps)
            log(f"[oar] resumed from {resumed_from} (step {start}, data position {state['data_position']})")
        elif dist.main:
            if os.path.exists(metrics_path):
                os.remove(metrics_path)
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        if dist.main:
            dump_config(cfg, os.path.join(out, "config.yaml"))
        dist.barrier()

        def save(step):
            state = {"model": model_state(model, cfg, dist), "optimizer": optim_state(model, opt, cfg, dist),
                     "scheduler": sched.state_dict(), "rng": ckpt.rng_state(), "data_position": step * cfg.prompts_per_step,
                     "config": cfg.to_dict(), "ref_model": None if ref_model is None else ref_model.state_dict()}
            if dist.main:
                ckpt.save_checkpoint(ckpt_dir, step, state, keep=cfg.keep_checkpoints)
            dist.barrier()

        history = read_jsonl(metrics_path) if dist.main else []
        before = next((r["eval_accuracy"] for r in history if r.get("kind") == "eval" and r["step"] == 0), None)
        if before is None:
            t = time.time()
            before = evaluate(model, tokenizer, task, cfg, dist)
            log(f"[oar] held-out accuracy before training: {before:.3f} ({cfg.eval_size} problems, greedy, "
                f"{time.time() - t:.1f}s)")
            if dist.main:
                append_jsonl(metrics_path, {"kind": "eval", "step": 0, "eval_accuracy": before})

        from tqdm.auto import tqdm

        samples: List[Dict[str, Any]] = []
        first_samples = last_samples = None
        step = start
        interrupted = False
        bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.algo, disable=not (cfg.progress and dist.main),
                   dynamic_ncols=True)
        with _StopFlag(log) as stop:
            while step < cfg.max_steps:
                row = train_step(step, model, wrapped, ref_model, opt, sched, tokenizer, task, reward_fn, cfg,
                                 dist, device, vllm=vllm, samples=samples)
                step += 1
                if samples:  # the weights page shows the first and the last weighted step
                    first_samples = first_samples or (step, list(samples))
                    last_samples = (step, list(samples))
                if dist.main:
                    append_jsonl(metrics_path, row)
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward']:.2f}", acc=f"{row['accuracy']:.2f}",
                                w=f"{row['weight_min']:.2f}-{row['weight_max']:.2f}",
                                boost=f"{row['boosted_frac']:.2f}", s_step=f"{row['time_step']:.1f}")
                if step_hook is not None:
                    step_hook(step)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
                    acc = evaluate(model, tokenizer, task, cfg, dist)
                    if dist.main:
                        append_jsonl(metrics_path, {"kind": "eval", "step": step, "eval_accuracy": acc})
                    bar.write(f"[oar] step {step}: held-out accuracy {acc:.3f}")
                stop_now = torch.tensor([1.0 if stop.requested else 0.0])
                if dist.reduce(stop_now, "MAX").item() > 0:
                    interrupted = True
                    save(step)
                    log(f"[oar] interrupted: checkpoint saved at step {step}; continue with --resume")
                    break
                if cfg.save_every and step % cfg.save_every == 0 and step < cfg.max_steps:
                    save(step)
        bar.close()

        summary = {"algo": cfg.algo, "steps": step, "accuracy_before": before, "interrupted": interrupted,
                   "resumed_from": resumed_from, "output_dir": out}
        if not interrupted:
            save(step)
            t = time.time()
            after = evaluate(model, tokenizer, task, cfg, dist)
            summary["accuracy_after"] = after
            if dist.main:
                append_jsonl(metrics_path, {"kind": "eval", "step": step, "eval_accuracy": after})
                final = os.path.join(out, "final")
                tmp = final + ".tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                model_to_save = model
                if dist.enabled and cfg.fsdp:
                    model_to_save = None  # the full state dict lives in the checkpoint
                if model_to_save is not None:
                    model_to_save.save_pretrained(tmp)
                    tokenizer.save_pretrained(tmp)
                    shutil.rmtree(final, ignore_errors=True)
                    os.replace(tmp, final)
            log(f"[oar] held-out accuracy: before {before:.3f} -> after {after:.3f} ({time.time() - t:.1f}s)")
        if dist.main:
            rows = read_jsonl(metrics_path)
            summary["plots"] = plot_curves(rows, out, title=cfg.algo)
            shown = dict(x for x in (first_samples, last_samples) if x is not None)
            write_weights_html(shown, os.path.join(out, "weights.html"), title=f"OAR weights ({cfg.algo})")
            if last_samples is not None and last_samples[1]:
                plot_weights(last_samples[1], os.path.join(out, "weights.png"),
                             title=f"OAR weights ({cfg.algo}, step {last_samples[0]})")
                summary["plots"].append(os.path.join(out, "weights.png"))
            summary["wall_time"] = time.time() - t_start
            import json

            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
            log(f"[oar] run directory: {out} (metrics.jsonl, config.yaml, checkpoints/, reward.png, accuracy.png, "
                f"weights.html); wall time {summary['wall_time']:.0f}s")
        return summary
    finally:
        dist.close()
