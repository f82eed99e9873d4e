"""The full RL step, OAR vs plain GRPO, measured in one run on the same prompts and rollouts.

    python benchmarks/rl_step.py                       # the trainer's default policy (cached warm start)
    python benchmarks/rl_step.py --model PATH          # any local transformers folder (e.g. SmolLM2-135M)
    python benchmarks/rl_step.py --out rl_step.md      # also write the table (.md markdown, .csv CSV)
    python benchmarks/rl_step.py --synthetic qwen2-0.5b --max-completion-length 256   # realistic size (GPU)

What is measured (one process, the trainer's own functions from oar_kernels.train):

* rollout: train.generation.sample (transformers generate) of num_generations responses per prompt,
  seeded as the trainer seeds step 0. It is generated once per repeat with the same seed and
  must give identical completions each time; those completions are then reused by every
  algorithm, so only the OAR part differs between grpo, oar-g and oar-p.
* reward: the trainer's reward function (accuracy_reward) + group_advantages.
* importance: train.weights.weigh_rollout minus the Bi-Level reshape inside it (segment building +
  the importance function the trainer picks: gradient_importance for oar-g,
  perturbation_importance for oar-p; nothing for grpo).
* reshape: bilevel_reshape as called by weigh_rollout (timed by wrapping it).
* update: the trainer's update, train.update.update (padding, micro-batches, completion_logp
  at the sampling temperature, grpo_loss with the OAR weights, backward, gradient clipping,
  AdamW step) on a train.loop.Run of this process and a generation.Rollout of the rows.

Each algorithm starts from a copy of the same initial weights and a fresh AdamW; one warm-up
step, then the median of --steps repeated steps (the same rollout every step; the weights move
between steps as in training). The full step = rollout + reward + importance + reshape + update.

Extra rows: "oar-g bound" (KL modes) is the grpo step plus baselines.chunk_pass on the
scored rows: a lower bound for an exact OAR-G step that packs ragged chunks as OARGStep does
(see there; only a kernel without any padding could go below it). "oar-g 1fwd" is the one-forward training-step form (oar_kernels.importance.OARGStep:
the GRPO forward also yields the OAR-G saliency, its backward is the update's; the trainer's
`--oarg_step one-forward`, and its choice under `auto` in a single process), shown with
importance fused into the update column (the update's forward scores the rows); "oar-g" is the separate gradient_importance pass
before the update (`--oarg_step separate`, and the choice under torchrun). The OAR-P table compares
perturbation_importance(prefix_reuse=True) with prefix_reuse=False and the naive oracle
(oar_kernels.reference.perturbation_importance_naive, one forward per reasoning token;
extrapolated from the first responses when it would take longer than --naive-budget seconds).

gpu_rows(device) gives rows for benchmarks/gpu_check.py.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Callable, Dict, List

import harness
import torch

ALGOS = ("grpo", "oar-g", "oar-p")
PARTS = ("rollout", "reward", "importance", "reshape", "update")
TARGET_OARG = 1.15


def make_config(algo="grpo", prompts=16, num_generations=8, max_completion_length=48, seed=0, **kw):
    """The trainer's TrainConfig with the benchmark's batch (everything else: trainer defaults)."""
    from oar_kernels.train.config import TrainConfig, validate

    cfg = TrainConfig(algo=algo, prompts_per_step=prompts, num_generations=num_generations,
                      max_completion_length=max_completion_length, seed=seed, progress=False, **kw)
    return validate(cfg)


def load_model(model: str, device: torch.device, dtype: str = "float32", log: Callable = print):
    """(model, tokenizer, path) through the trainer's loader ('default': the policy shipped
    in the package)."""
    from oar_kernels.train.distributed import Dist
    from oar_kernels.train.policy import load_policy

    cfg = make_config(model=model, dtype=dtype)
    m, tok, path = load_policy(cfg, Dist(), log)
    return m.to(device), tok, path


@contextlib.contextmanager
def _timed_oar_parts(acc: Dict[str, float], device):
    """Wraps trainer_weights.score_segments / trainer_weights.bilevel_reshape so that the trainer's
    weigh_rollout reports the time of the importance function and of the reshape it calls
    (restored on exit)."""
    from oar_kernels.train import weights as trainer_weights

    orig_score, orig_reshape = trainer_weights.score_segments, trainer_weights.bilevel_reshape

    def timed(fn, key):
        def wrapper(*a, **k):
            dt, out = harness.timed(lambda: fn(*a, **k), device)
            acc[key] = acc.get(key, 0.0) + dt
            return out
        return wrapper

    trainer_weights.score_segments = timed(orig_score, "importance_fn")
    trainer_weights.bilevel_reshape = timed(orig_reshape, "reshape")
    try:
        yield
    finally:
        trainer_weights.score_segments, trainer_weights.bilevel_reshape = orig_score, orig_reshape


def _scored(batch, tokenizer, cfg):
    """(one Segments per row, the scored rows): the trainer's own choice (train.weights.row_segments:
    nonzero advantage, an answer, some reasoning). Synthetic mode patches the build_segments it calls."""
    from oar_kernels.train.weights import row_segments

    picked, segs = row_segments(batch.rows, batch.advantages, tokenizer, cfg, batch.answers)
    return segs, picked


# ------------------------------------------------------------------------------------ synthetic mode

SYNTHETIC_ANSWER = 4  # answer-span tokens of a synthetic segment


def synthetic_segments(prompt_ids, response_ids, tokenizer, conclude_text, response_text=None, **_):
    """Segments of a response whatever it says: the last SYNTHETIC_ANSWER tokens before EOS are
    the answer, everything before them the reasoning (too short a response: no answer)."""
    from oar_kernels.segments import Segments

    resp = list(response_ids)
    if resp and resp[-1] == tokenizer.eos_token_id:
        resp = resp[:-1]
    t = lambda x: torch.as_tensor(x, dtype=torch.long)  # noqa: E731
    if len(resp) <= SYNTHETIC_ANSWER:
        return Segments(t(prompt_ids), t(resp), t([]), t([]))
    conclude = tokenizer.encode(conclude_text, add_special_tokens=False)
    return Segments(t(prompt_ids), t(resp[:-SYNTHETIC_ANSWER]), t(conclude), t(resp[-SYNTHETIC_ANSWER:]),
                    answer_text="<synthetic>")


@contextlib.contextmanager
def _synthetic_segments():
    """segments.build_segments, which the trainer's choice of scored rows
    (segments.build_scored_segments) calls, replaced by synthetic_segments (restored on exit)."""
    from oar_kernels import segments

    orig = segments.build_segments
    segments.build_segments = lambda p, r, tok, conclude_text, response_text=None, **_: synthetic_segments(p, r, tok, conclude_text)
    try:
        yield
    finally:
        segments.build_segments = orig


SYNTHETIC_MODELS = {
    # Qwen2.5-0.5B's shape (random weights): 24 layers, hidden 896, 14 / 2 heads, vocab 151936
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, vocab_size=151936),
    "tiny": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=64, vocab_size=1000),
}


def synthetic_model(name: str, device, dtype=torch.float32):
    """(model, tokenizer, label): a Qwen2 model of a named shape with random weights, and the
    project's character tokenizer padded with placeholder tokens to the model's vocabulary (so
    any sampled id decodes). Nothing is downloaded."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from oar_kernels.default_job import build_char_tokenizer

    shape = SYNTHETIC_MODELS[name]
    tok = build_char_tokenizer(vocab_size=shape["vocab_size"])
    cfg = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=0,
                      eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    return model, tok, f"{name}-shaped Qwen2 (random init, synthetic answer spans)"


# ------------------------------------------------------------------------------------ measurement

def run(model, tokenizer, prompts=16, num_generations=8, max_completion_length=48, steps=3, warmup=1,
        seed=0, naive_budget=20.0, oarg_step=True, prefix_table=True, device=None, log: Callable = print,
        synthetic: bool = False) -> Dict:
    """Measures every algorithm on the same rollout; returns a dict of results (see format_table).

    synthetic: for models that write no answers (random weights at realistic sizes): rewards
    alternate 0/1 within each group and every response is scored, its last SYNTHETIC_ANSWER
    tokens (before EOS) taken as the answer span, the rest as reasoning (synthetic_segments).
    """
    with _synthetic_segments() if synthetic else contextlib.nullcontext():
        return _measure(model, tokenizer, prompts, num_generations, max_completion_length, steps, warmup, seed,
                        naive_budget, oarg_step, prefix_table, device, log, synthetic)


def _measure(model, tokenizer, prompts, num_generations, max_completion_length, steps, warmup, seed, naive_budget,
             oarg_step, prefix_table, device, log, synthetic) -> Dict:
    from oar_kernels import group_advantages
    from oar_kernels.data import format_prompt, load_task
    from oar_kernels.rewards import load_reward_fn
    from oar_kernels.train import generation
    from oar_kernels.train.distributed import Dist
    from oar_kernels.train.loop import Run
    from oar_kernels.train.update import make_optimizer, update
    from oar_kernels.train.weights import weigh_rollout

    device = device or next(model.parameters()).device
    base = make_config("grpo", prompts, num_generations, max_completion_length, seed)
    task = load_task(base.dataset, None, 1, seed)
    reward_fn = load_reward_fn(base.reward_fn)
    examples = [task.train_example(seed, j) for j in range(prompts)]
    prompt_texts = [format_prompt(e.question, base.prompt_template) for e in examples]
    sample_seeds = [generation.derive_seed(seed, 0, "sample", 0)]
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reps = warmup + steps

    # 1. rollout, generated once per repeat with the same seed; the completions are reused
    t_roll, rows = [], None
    for k in range(reps):
        model.load_state_dict(init_state)
        dt, r = harness.timed(lambda: generation.sample(model, tokenizer, prompt_texts, base, sample_seeds), device)
        if rows is None:
            rows = r
        elif device.type == "cpu" and [x.response_ids for x in r] != [x.response_ids for x in rows]:
            log("[rl_step] note: a repeated rollout with the same seed gave other completions; the first is used")
        if k >= warmup:
            t_roll.append(dt)
    completion_tokens = sum(len(x.response_ids) for x in rows)

    # 2. reward + advantages
    texts = [x.text for x in rows]
    answers = [e.answer for e in examples for _ in range(num_generations)]
    prompts_rep = [p for p in prompt_texts for _ in range(num_generations)]
    def reward_step():
        if synthetic:  # alternating rewards: every group mixed, every response scored
            r = torch.tensor([float(i % 2) for i in range(len(rows))])
        else:
            r = torch.tensor(reward_fn(prompts_rep, texts, answers), dtype=torch.float32)
        return r, group_advantages(r, num_generations, scale=base.scale_rewards)

    t_rew = harness.time_fn(reward_step, "cpu", repeats=steps, warmup=warmup).samples
    rewards, adv = reward_step()

    def rollout(k):  # generation batch k: the same rollout, fresh weights
        return generation.Rollout(index=k, prompts=prompts_rep, answers=answers, rows=rows, rewards=rewards,
                                  correct=rewards, advantages=adv)

    common = {"rollout": statistics.median(t_roll), "reward": statistics.median(t_rew)}
    results = {"rows": [], "completion_tokens": completion_tokens, "responses": len(rows),
               "reward_mean": float(rewards.mean()), "device": str(device),
               "params": sum(p.numel() for p in model.parameters())}

    # 3. importance + reshape (train.weights.weigh_rollout) and the update (train.update.update) per
    # algorithm, as train_step runs them: oar-g with the separate gradient_importance pass, and
    # "oar-g 1fwd" the one-forward OARGStep inside the update. The algorithms take turns within
    # each repeat (so load drift on a shared machine hits them alike), each with its own weights
    # and AdamW state.
    algos = list(ALGOS) + (["oar-g 1fwd"] if oarg_step else [])
    runs, states = {}, {}
    for a in algos:
        cfg = make_config("oar-g" if a == "oar-g 1fwd" else a, prompts, num_generations, max_completion_length,
                          seed, oarg_step="one-forward" if a == "oar-g 1fwd" else "separate")
        model.load_state_dict(init_state)
        runs[a] = Run(cfg, Dist(), device, model, model, tokenizer, *make_optimizer(model, cfg), task, [], reward_fn)
        states[a] = {k: v.clone() for k, v in init_state.items()}
    per = {a: {k: [] for k in ("importance", "reshape", "update")} for a in algos}
    scored = {a: 0 for a in algos}
    for k in range(reps):
        for a in algos:
            model.load_state_dict(states[a])
            batch, acc = rollout(k), {}
            with _timed_oar_parts(acc, device):
                t_oar, _ = harness.timed(lambda: weigh_rollout(runs[a], batch), device)
            t_upd, _ = harness.timed(lambda: update(runs[a], batch, 0), device)
            states[a] = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
            scored[a] = batch.oar_responses
            if k >= warmup:
                per[a]["importance"].append(t_oar - acc.get("reshape", 0.0))
                per[a]["reshape"].append(acc.get("reshape", 0.0))
                per[a]["update"].append(t_upd)
    for a in algos:
        parts = dict(common, **{kk: statistics.median(v) for kk, v in per[a].items()})
        results["rows"].append({"algo": a, "scored": scored[a], **parts})
        log(f"[rl_step] {a}: " + ", ".join(f"{kk} {v:.3f}s" for kk, v in parts.items()) + f" ({scored[a]} responses scored)")
    runs.clear()  # their optimizer states
    states.clear()

    # 4. A lower bound for exact OAR-G in the KL modes: the GRPO step plus the least work any
    # exact step adds (baselines.chunk_pass on the scored rows: a forward of reasoning
    # + conclude (+ answer) without the prompt and a backward to those inputs only)
    cfg = make_config("oar-g", prompts, num_generations, max_completion_length, seed)
    mode = cfg.resolved_pfinal_mode()
    if oarg_step and mode != "answer_joint":
        from baselines import chunk_pass

        segs, picked = _scored(rollout(0), tokenizer, cfg)
        if picked:
            model.load_state_dict(init_state)
            model.train()
            t_chunk = [harness.timed(lambda: chunk_pass(model, [segs[i] for i in picked], device, mode), device)[0]
                       for _ in range(reps)][warmup:]
            grpo = next(r for r in results["rows"] if r["algo"] == "grpo")
            results["rows"].append({**grpo, "algo": "oar-g bound", "scored": len(picked),
                                    "importance": statistics.median(t_chunk), "reshape": 0.0})

    # 5. OAR-P: prefix reuse vs plain batched vs the naive oracle, on the initial weights
    if prefix_table:
        results["oarp"] = oarp_prefix_saving(model, tokenizer, rollout(0), init_state, seed, prompts,
                                             num_generations, max_completion_length, steps, naive_budget, device)
    model.load_state_dict(init_state)
    return results


def oarp_prefix_saving(model, tokenizer, batch, init_state, seed, prompts, num_generations,
                       max_completion_length, steps, naive_budget, device) -> Dict:
    from oar_kernels.importance import perturbation_importance
    from oar_kernels.reference import perturbation_importance_naive

    cfg = make_config("oar-p", prompts, num_generations, max_completion_length, seed)
    model.load_state_dict(init_state)
    model.eval()
    segs, picked = _scored(batch, tokenizer, cfg)
    segs = [segs[i] for i in picked]
    mode = cfg.resolved_pfinal_mode()
    out = {"responses": len(segs), "reasoning_tokens": sum(s.num_reasoning for s in segs), "mode": mode}
    if not segs:
        return out

    kw = dict(mode=mode, perturb_token=cfg.perturb_token, max_batch_tokens=cfg.max_batch_tokens)
    for key, reuse in (("reuse", True), ("plain", False)):
        out[key] = harness.time_fn(lambda: perturbation_importance(model, segs, prefix_reuse=reuse, **kw), device,
                                   max(1, steps)).median
    # naive: whole responses until the budget is spent, extrapolated by forwards (R + 1 per response)
    t0, done = time.perf_counter(), 0
    with torch.no_grad():
        while done < len(segs) and (time.perf_counter() - t0 < naive_budget or done == 0):
            harness.timed(lambda: perturbation_importance_naive(model, [segs[done]], mode=mode,
                                                                perturb_token=cfg.perturb_token), device)
            done += 1
    t_part = time.perf_counter() - t0
    fw_done = sum(s.num_reasoning + 1 for s in segs[:done])
    fw_all = sum(s.num_reasoning + 1 for s in segs)
    out["naive"] = t_part * fw_all / fw_done
    out["naive_measured"] = f"{done}/{len(segs)} responses measured" + ("" if done == len(segs) else ", extrapolated")
    return out


# ------------------------------------------------------------------------------------ report

def table_rows(res: Dict) -> List[Dict]:
    tok = res["completion_tokens"]
    grpo = next(r for r in res["rows"] if r["algo"] == "grpo")
    t_grpo = sum(grpo[p] for p in PARTS)
    out = []
    for r in res["rows"]:
        total = sum(r[p] for p in PARTS)
        row = {"algo": r["algo"], "s/step": total, "tokens/s": tok / total}
        for p in PARTS:
            row[f"{p} s"] = r[p]
            row[f"{p} %"] = 100.0 * r[p] / total
        row["x grpo"] = total / t_grpo
        row["scored"] = r["scored"]
        out.append(row)
    return out


def _cell(k, v) -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:.1f}" if k.endswith("%") else f"{v:.0f}" if k == "tokens/s" else f"{v:.3f}"


def _oarp_rows(res: Dict) -> List[Dict]:
    o = res.get("oarp", {})
    if "reuse" not in o:
        return []
    names = {"reuse": "prefix_reuse=True", "plain": "prefix_reuse=False", "naive": f"naive oracle ({o.get('naive_measured')})"}
    return [{"oar-p importance": names[k], "s": o[k], "x prefix_reuse=True": o[k] / o["reuse"]} for k in names]


def format_table(res: Dict) -> str:
    """The step table and the OAR-P table in Markdown (harness.render)."""
    rows = table_rows(res)
    lines = [harness.render([{k: _cell(k, v) for k, v in r.items()} for r in rows], cols=tuple(rows[0]))]
    by = {r["algo"]: r for r in rows}
    lines.append(f"{res['responses']} responses, {res['completion_tokens']} completion tokens per step, "
                 f"mean reward {res['reward_mean']:.3f}, {res['params'] / 1e6:.2f}M parameters, {res['device']}.")
    for algo, what in (("oar-g", "oar-g"), ("oar-g 1fwd", "oar-g (one-forward OARGStep)")):
        if algo in by:
            g = by[algo]["x grpo"]
            lines.append(f"{what} / grpo per full step: {g:.3f}x (target <= {TARGET_OARG}: "
                         f"{'met' if g <= TARGET_OARG else 'NOT met'})")
    if "oar-g bound" in by:
        lines.append(f"lower bound for exact oar-g in this mode (grpo + packed chunk forward + input backward): "
                     f"{by['oar-g bound']['x grpo']:.3f}x")
    lines.append(f"oar-p / grpo per full step: {by['oar-p']['x grpo']:.3f}x (reported)")
    o = res.get("oarp", {})
    if "reuse" in o:
        lines += ["", f"OAR-P importance (mode {o['mode']}, {o['responses']} responses, {o['reasoning_tokens']} "
                  "reasoning tokens):", "",
                  harness.render([{k: _cell(k, v) for k, v in r.items()} for r in _oarp_rows(res)],
                                 cols=("oar-p importance", "s", "x prefix_reuse=True"))]
    return "\n".join(lines)


def write_csv(res: Dict, path: str) -> None:
    """Both tables' rows as CSV, each line with the run's environment (harness.write_csv)."""
    harness.write_csv(table_rows(res) + _oarp_rows(res), path, harness.environment(res["device"]))


# ------------------------------------------------------------------------------------ GPU rows

def gpu_rows(device, prompts=64, num_generations=8, max_completion_length=256, steps=3, model_path=None,
             synthetic="qwen2-0.5b", synthetic_prompts=16, naive_budget=30.0, emit=None, budget_s=float("inf"),
             large_s=120.0) -> list:
    """Rows (op, shape, metric, value, target, ok) for benchmarks/gpu_check.py: the full RL step
    on `device` for the trainer's default policy; for a realistic size, a `synthetic`-shaped
    model (random weights, bf16, synthetic answer spans: every response scored) at
    max_completion_length; and, when $OAR_BENCH_SMOLLM2 (or model_path) names a local
    transformers folder, for that model. Failures become rows with ok=False. emit(row) is
    called with each row as it is made. Of budget_s seconds, the default policy is not started
    with less than large_s / 4 left, any other model with less than large_s (a guess at what
    the synthetic Qwen2-0.5B needs on one H100 / H200, not a measurement); a row says so. The naive OAR-P oracle gets at
    most a tenth of the time left."""
    device = torch.device(device)
    rows, end = harness.Rows(emit), time.monotonic() + budget_s

    targets = [("default", 48, None)]
    if synthetic:
        targets.append((synthetic, max_completion_length, "synthetic"))
    path = model_path or os.environ.get("OAR_BENCH_SMOLLM2")
    if path:
        targets.append((path, max_completion_length, None))
    for name, C, kind in targets:
        P = synthetic_prompts if kind else prompts
        shp = f"{os.path.basename(str(name).rstrip('/'))} P={P} G={num_generations} C={C}"
        left = end - time.monotonic()
        if left <= (large_s if name != "default" else large_s / 4):
            rows.add("rl_step", shp, f"skipped ({left:.0f} s of the time budget left)", None, "", False)
            continue
        try:
            if kind:
                model, tok, _ = synthetic_model(name, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
            else:
                model, tok, _ = load_model(name, device, log=lambda *a, **k: None)
            res = run(model, tok, P, num_generations, C, steps=steps, warmup=1, naive_budget=min(naive_budget, left / 10),
                      device=device, log=lambda *a, **k: None, synthetic=bool(kind))
            by = {r["algo"]: r for r in table_rows(res)}
            for algo in ("oar-g", "oar-g 1fwd", "oar-g bound", "oar-p"):
                if algo not in by:
                    continue
                r = by[algo]
                target = f"<= {TARGET_OARG}" if algo in ("oar-g", "oar-g 1fwd") else ""
                ok = r["x grpo"] <= TARGET_OARG if target else True
                rows.add("rl_step", shp, f"{algo} / grpo full step ({r['s/step']:.3f} s vs {by['grpo']['s/step']:.3f} s, "
                         f"importance {r['importance %']:.0f}%)", r["x grpo"], target, ok)
            o = res.get("oarp", {})
            if "reuse" in o:
                rows.add("rl_step", shp, f"OAR-P prefix_reuse speed-up vs prefix_reuse=False ({o['reuse']:.3f} s vs "
                         f"{o['plain']:.3f} s)", o["plain"] / o["reuse"])
                rows.add("rl_step", shp, f"OAR-P prefix_reuse speed-up vs naive ({o['naive_measured']})", o["naive"] / o["reuse"])
            del model
        except Exception as e:  # noqa: BLE001
            rows.add("rl_step", shp, f"error: {type(e).__name__}: {e}"[:200], None, "", False)
    return rows


# ------------------------------------------------------------------------------------ CLI

def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="'default' (the trainer's policy) or a local transformers folder")
    ap.add_argument("--synthetic", default="", choices=["", *SYNTHETIC_MODELS],
                    help="instead of --model: a Qwen2 of this shape with random weights; every response is scored "
                         "with a synthetic answer span (its last tokens) and rewards alternate, so OAR's cost shows "
                         "at sizes where no trained model is at hand")
    ap.add_argument("--score-all", action="store_true",
                    help="with --model: score every response with a synthetic answer span (as --synthetic does)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=48)
    ap.add_argument("--steps", type=int, default=5, help="measured steps (median) after one warm-up step")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the trainer's auto choice)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-budget", type=float, default=20.0, help="seconds of naive OAR-P before extrapolating")
    ap.add_argument("--no-oarg-step", action="store_true", help="skip the one-forward OARGStep row")
    ap.add_argument("--no-prefix-table", action="store_true",
                    help="skip the OAR-P table (prefix reuse vs plain vs naive): a shorter run")
    ap.add_argument("--out", default="", help="write the table: .csv as CSV, otherwise markdown")
    a = ap.parse_args(argv)
    from oar_kernels.train.distributed import Dist, resolve_device, set_cpu_threads

    cfg = make_config(device=a.device, num_threads=max(a.threads, 0))
    device = resolve_device(cfg, Dist())
    threads = set_cpu_threads(cfg, Dist()) if device.type == "cpu" else torch.get_num_threads()
    torch.manual_seed(a.seed)
    if a.synthetic:
        model, tok, path = synthetic_model(a.synthetic, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    else:
        model, tok, path = load_model(a.model, device)
    print(f"[rl_step] model {path} on {device}" + (f" ({threads} threads)" if device.type == "cpu" else "")
          + f"; {a.prompts} prompts x {a.num_generations} generations, <= {a.max_completion_length} tokens, "
          f"median of {a.steps} steps after {a.warmup} warm-up")
    res = run(model, tok, a.prompts, a.num_generations, a.max_completion_length, steps=a.steps, warmup=a.warmup,
              seed=a.seed, naive_budget=a.naive_budget, oarg_step=not a.no_oarg_step, prefix_table=not a.no_prefix_table, device=device,
              synthetic=bool(a.synthetic) or a.score_all)
    text = format_table(res)
    print(text)
    if a.out.endswith(".csv"):
        write_csv(res, a.out)
    elif a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return res


if __name__ == "__main__":
    main()
