"""The run: set up once, then `train_step` per optimizer step, then the final evaluation and
outputs. Read `train()` top to bottom; one step is

    generate -> reward -> advantages -> OAR weights -> update -> metrics

over the small `Run` state below (generation.py, weights.py, update.py, metrics.py).
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import torch

from ..data import load_task
from ..data.base import Example, Task, describe_task
from ..rewards import RewardFn, load_reward_fn
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig, dump_config, validate
from .distributed import (Dist, load_optim_state, model_state, optim_state, resolve_device, set_cpu_threads,
                          wrap_parallel)
from .generation import Rollout, evaluate, generate
from .metrics import step_metrics, weighted_samples
from .policy import check_model_source, load_policy
from .preflight import check_before_work, check_context
from .report import append_jsonl, plot_curves, plot_weights, read_jsonl, truncate_metrics, write_weights_html
from .run_folder import check_new_run_folder, clear_outputs, restore_config
from .update import make_optimizer, update
from .weights import weigh_rollout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..rollout.vllm import VLLMRollout


@dataclass
class Run:
    """What every step reads: the configuration, processes, policy, optimizer, data, and the
    current generation batch."""
    cfg: TrainConfig
    dist: Dist
    device: torch.device
    model: torch.nn.Module  # a transformers causal LM
    wrapped: torch.nn.Module  # the module the loss runs through (DDP / FSDP2 / the model)
    tokenizer: "PreTrainedTokenizerBase"
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    task: Task
    eval_examples: List[Example]
    reward_fn: RewardFn
    ref_model: Optional[torch.nn.Module] = None  # the initial policy, for the KL term (beta > 0)
    vllm: Optional["VLLMRollout"] = None
    batch: Optional[Rollout] = None
    shown: Dict[int, list] = field(default_factory=dict)  # step -> responses for weights.html

    @property
    def out(self) -> str:
        return self.cfg.resolved_output_dir()

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.out, "metrics.jsonl")


def train_step(run: Run, step: int) -> Dict[str, Any]:
    """Optimizer step `step` (0-based); returns its metrics row."""
    t0 = time.time()
    generation, iteration = divmod(step, run.cfg.num_iterations)
    if iteration == 0:
        run.batch = generate(run, generation)  # rollout, rewards, advantages over all processes
        weigh_rollout(run, run.batch)  # OAR importance on the current policy -> Bi-Level weights
    elif run.batch is None or run.batch.index != generation:
        raise RuntimeError(f"step {step}: generation batch {generation} is missing (num_iterations > 1)")
    upd = update(run, run.batch, iteration)  # weighted GRPO loss, backward, optimizer step
    return step_metrics(run, run.batch, upd, step + 1, time.time() - t0)


# -- before any work: configuration, run folder, model source, data -------------------------

def open_run(cfg: TrainConfig, dist: Dist, given: Optional[Set[str]], log) -> Tuple[TrainConfig, Optional[dict]]:
    """(the configuration to run, the checkpoint state to resume from or None). Every check that
    can fail on bad input runs here, before a model is loaded."""
    validate(cfg)
    state = None
    if cfg.resume_from_checkpoint:
        cfg, path, state = restore_config(cfg, given, log)
        log(f"[oar] resuming {path} (step {state['step']})")
    elif dist.main:
        check_new_run_folder(cfg)
    if dist.enabled and cfg.prompts_per_step % dist.world:
        raise ConfigError(f"prompts_per_step: {cfg.prompts_per_step} must be a multiple of the {dist.world} processes")
    per_process = cfg.prompts_per_step // dist.world * cfg.num_generations
    if cfg.generation_batch_size and per_process % cfg.generation_batch_size:
        raise ConfigError(f"generation_batch_size: {cfg.generation_batch_size} must divide the completions per "
                          f"process ({per_process})")
    check_model_source(cfg.model)
    return cfg, state


def seed_all(seed: int) -> None:
    random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)


def load_data(cfg: TrainConfig, log) -> Tuple[Task, List[Example]]:
    """(task, held-out examples); logs the data (skipped rows with line numbers and reasons, the
    real held-out count)."""
    task = load_task(cfg.dataset, cfg.eval_dataset or None, cfg.eval_size, cfg.seed)
    log(f"[oar] data: {describe_task(task, cfg.eval_size)}")
    examples = task.eval_examples(cfg.eval_size)  # the real held-out list, possibly empty
    if not examples:
        log(f"[oar] no held-out problems ({cfg.dataset!r}, eval_size {cfg.eval_size}): held-out accuracy is not "
            "evaluated")
    return task, examples


# -- set-up ---------------------------------------------------------------------------------

def build_run(cfg: TrainConfig, dist: Dist, log, data: Optional[Tuple[Task, List[Example]]] = None) -> Run:
    """Device and threads, data (unless given: (task, held-out examples) loaded by the checks before
    any work), policy (and reference model), parallel wrapper, optimizer."""
    device = resolve_device(cfg, dist)
    threads = set_cpu_threads(cfg, dist) if device.type == "cpu" else torch.get_num_threads()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init(device)
    if data is None:
        seed_all(cfg.seed)
        data = load_data(cfg, log)
    task, examples = data
    check_context(cfg, task, examples)  # prompt + completion within the model's context, before it loads
    log(f"[oar] {cfg.algo} on {device}" + (f" ({threads} CPU threads)" if device.type == "cpu" else "")
        + (f", {dist.world} processes" if dist.enabled else ""))
    model, tokenizer, model_path = load_policy(cfg, dist, log)
    model.to(device)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
    vllm = None
    if cfg.rollout == "vllm":
        from ..rollout.vllm import VLLMRollout

        # the engine samples from the policy being trained: same dtype (vLLM's "auto" would run a
        # float32 policy in bfloat16)
        vllm = VLLMRollout(model_path, tokenizer, seed=cfg.seed, dtype=cfg.dtype, log=log)
    wrapped = wrap_parallel(model, cfg, dist, device)
    opt, sched = make_optimizer(model, cfg)  # after wrapping: FSDP2 swaps in sharded parameters
    return Run(cfg=cfg, dist=dist, device=device, model=model, wrapped=wrapped, tokenizer=tokenizer, opt=opt,
               sched=sched, task=task, eval_examples=examples, reward_fn=load_reward_fn(cfg.reward_fn),
               ref_model=ref_model, vllm=vllm)


def restore(run: Run, state: dict) -> int:
    """Loads a checkpoint into the run; returns its step. metrics.jsonl is cut back to it."""
    run.model.load_state_dict(state["model"])
    if run.ref_model is not None and state.get("ref_model") is not None:
        run.ref_model.load_state_dict(state["ref_model"])
    load_optim_state(run.model, run.opt, state["optimizer"], run.cfg, run.dist)
    run.sched.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])
    rollouts = state.get("rollouts")
    if rollouts:  # saved between two updates on one generation batch
        run.batch = Rollout.from_state(rollouts[run.dist.rank])
    step = state["step"]
    if run.dist.main:
        ckpt.remove_partial_writes(os.path.join(run.out, "checkpoints"))
        truncate_metrics(run.metrics_path, step, drop_final_eval=step >= run.cfg.max_steps)
    return step


def save(run: Run, step: int) -> None:
    """Checkpoint of step `step` (every process takes part: FSDP state dicts, rollouts)."""
    cfg, dist = run.cfg, run.dist
    mid_batch = step % cfg.num_iterations != 0 and run.batch is not None
    rollouts = dist.gather_objects(run.batch.to_state()) if mid_batch else None
    state = {"model": model_state(run.model, cfg, dist), "optimizer": optim_state(run.model, run.opt, cfg, dist),
             "scheduler": run.sched.state_dict(), "rng": ckpt.rng_state(), "config": cfg.to_dict(),
             "data_position": (step + cfg.num_iterations - 1) // cfg.num_iterations * cfg.prompts_per_step,
             "rollouts": rollouts, "ref_model": None if run.ref_model is None else run.ref_model.state_dict()}
    if dist.main:
        ckpt.save_checkpoint(os.path.join(run.out, "checkpoints"), step, state, keep=cfg.save_total_limit)
    dist.barrier()


def evaluate_and_log(run: Run, step: int, log) -> Optional[float]:
    """Greedy held-out accuracy at `step` (None without held-out problems), logged and recorded."""
    if not run.eval_examples:
        return None
    t = time.time()
    acc = evaluate(run.model, run.tokenizer, run.eval_examples, run.cfg, run.dist)
    n = len(run.eval_examples)
    log(f"[oar] step {step}: held-out accuracy {acc:.3f} ({n} problems, greedy, {time.time() - t:.1f}s)")
    if run.dist.main:
        append_jsonl(run.metrics_path, {"kind": "eval", "step": step, "eval_accuracy": acc, "eval_size": n})
    return acc


# -- the loop ---------------------------------------------------------------------------------

class StopFlag:
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


def remember_samples(run: Run, step: int, row: Dict[str, Any]) -> None:
    """weights.html shows the first and the last weighted generation batch."""
    if not run.cfg.html_samples or row["iteration"] != 0 or not row["oar_responses"]:
        return
    samples = weighted_samples(run.batch, run.tokenizer, run.cfg.html_samples)
    if samples:
        first = {k: run.shown[k] for k in sorted(run.shown)[:1]}
        run.shown = {**first, step: samples}


def run_steps(run: Run, start: int, log, step_hook=None) -> Tuple[int, bool]:
    """Steps start .. max_steps - 1, with periodic evaluation and checkpoints; (steps done,
    interrupted by Ctrl-C)."""
    from tqdm.auto import tqdm

    cfg, dist = run.cfg, run.dist
    bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.algo, disable=not (cfg.progress and dist.main),
               dynamic_ncols=True)
    step = start
    with StopFlag(log) as stop:
        while step < cfg.max_steps:
            row = train_step(run, step)
            step += 1
            if dist.main:
                append_jsonl(run.metrics_path, row)
                remember_samples(run, step, row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.2f}", w=f"{row['weight_min']:.2f}-{row['weight_max']:.2f}",
                            clip=f"{row['clip_ratio']:.2f}", s_step=f"{row['time_step']:.1f}")
            if step_hook is not None:
                step_hook(step)
            if cfg.eval_steps and step % cfg.eval_steps == 0 and step < cfg.max_steps:
                evaluate_and_log(run, step, bar.write)
            if dist.reduce(torch.tensor([float(stop.requested)]), "MAX").item() > 0:
                save(run, step)
                log(f"[oar] interrupted: checkpoint saved at step {step}; continue with --resume_from_checkpoint last")
                bar.close()
                return step, True
            if cfg.save_steps and step % cfg.save_steps == 0 and step < cfg.max_steps:
                save(run, step)
    bar.close()
    return step, False


# -- the end ------------------------------------------------------------------------------------

def save_final_model(run: Run) -> None:
    """output_dir/final: a save_pretrained folder (atomic; FSDP runs keep the checkpoint only)."""
    if run.dist.enabled and run.cfg.fsdp:
        return  # the full state dict lives in the checkpoint
    final = os.path.join(run.out, "final")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(tmp)
    run.tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def write_report(run: Run, summary: Dict[str, Any], log) -> None:
    """Plots, weights page and summary.json (rank 0)."""
    out, cfg = run.out, run.cfg
    summary["plots"] = plot_curves(read_jsonl(run.metrics_path), out, title=cfg.algo, temperature=cfg.temperature)
    write_weights_html(run.shown, os.path.join(out, "weights.html"), title=f"OAR weights ({cfg.algo})")
    if run.shown:
        last = max(run.shown)
        plot_weights(run.shown[last], os.path.join(out, "weights.png"), title=f"OAR weights ({cfg.algo}, step {last})")
        summary["plots"].append(os.path.join(out, "weights.png"))
    tmp = os.path.join(out, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(out, "summary.json"))
    plots = ", ".join(os.path.basename(p) for p in summary["plots"])
    log(f"[oar] run folder: {out} (metrics.jsonl, config.yaml, checkpoints/, final/, {plots}, weights.html); "
        f"wall time {summary['wall_time']:.0f}s")


def train(cfg: TrainConfig, log: Callable[[str], None] = print, step_hook: Optional[Callable] = None,
          given: Optional[Set[str]] = None) -> Dict[str, Any]:
    """Runs the configured training; returns a summary (held-out accuracy before/after, paths).

    given: the keys the user set (the CLI passes them; a resumed run checks them against its
    saved configuration). step_hook(step) is called after each completed step (tests use it).
    """
    t_start = time.time()
    dist = Dist()
    log = log if dist.main else (lambda *a, **k: None)
    cfg, state = open_run(cfg, dist, given, log)
    seed_all(cfg.seed)
    data = check_before_work(cfg, log)  # packages, data source, prompt length vs the model's context
    try:
        run = build_run(cfg, dist, log, data)
        if dist.main:
            os.makedirs(run.out, exist_ok=True)
            if state is None:
                clear_outputs(run.out)
            dump_config(cfg, os.path.join(run.out, "config.yaml"))
        start = restore(run, state) if state is not None else 0
        if run.vllm is not None:
            run.vllm.sync_weights(run.model)
        dist.barrier()
        history = read_jsonl(run.metrics_path) if dist.main else []
        before = next((r["eval_accuracy"] for r in history if r.get("kind") == "eval" and r["step"] == 0), None)
        if before is None and state is None:
            before = evaluate_and_log(run, 0, log)
        step, interrupted = run_steps(run, start, log, step_hook)
        summary = {"algo": cfg.algo, "steps": step, "accuracy_before": before, "interrupted": interrupted,
                   "resumed_from": cfg.resume_from_checkpoint, "output_dir": run.out,
                   "eval_size": len(run.eval_examples)}
        if not interrupted:
            save(run, step)
            summary["accuracy_after"] = evaluate_and_log(run, step, log)
            if dist.main:
                save_final_model(run)
            if before is not None:
                log(f"[oar] held-out accuracy: before {before:.3f} -> after {summary['accuracy_after']:.3f}")
        if dist.main:
            summary["wall_time"] = time.time() - t_start
            write_report(run, summary, log)
        return summary
    finally:
        dist.close()
