"""What OAR costs a TRL user: OARGRPOTrainer against TRL's GRPOTrainer, seconds per training step.

    python benchmarks/bench_trainer.py --steps 6 --threads 1

Same model (python/tiny_setup.py's Llama-architecture policy, random init from a seed), same
data (its arithmetic prompts), same seed and the same GRPO options for every trainer; the only
change is the class (and OARConfig's oar_algo). Each trainer runs in a fresh subprocess for
--steps optimizer steps; a step's time is taken between TrainerCallback.on_step_begin and
on_step_end (generation, rewards, OAR weights, loss, backward, optimizer step), the first step
is dropped (warm-up) and the median of the rest reported. gpu_rows(device) runs the same on a
GPU with a larger policy, for benchmarks/gpu_check.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAINERS = ("GRPOTrainer", "OARGRPOTrainer oar-g", "OARGRPOTrainer oar-p")


def _child(which: str, steps: int, threads: int, hidden: int, layers: int, gens: int, prompts: int,
           completion: int, device: str) -> dict:
    import torch

    sys.path.insert(0, os.path.join(ROOT, "python"))
    sys.path.insert(0, ROOT)
    torch.set_num_threads(threads)
    from datasets import Dataset
    from tiny_setup import answer_reward, arithmetic_problems, char_tokenizer, last_number, tiny_model
    from transformers import TrainerCallback

    tok = char_tokenizer()
    model = tiny_model(tok, hidden_size=hidden, num_layers=layers, seed=0)
    rows = arithmetic_problems(prompts * (steps + 1), seed=0)
    data = Dataset.from_list([{"prompt": q, "answer": a} for q, a in rows])

    def reward(completions, answer, **kwargs):
        return [answer_reward(c, a, last_number) for c, a in zip(completions, answer)]

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="oar_bench_trainer_"), per_device_train_batch_size=gens * prompts,
        num_generations=gens, max_completion_length=completion, max_steps=steps, learning_rate=1e-4,
        loss_type="grpo", logging_steps=1, save_strategy="no", report_to="none", bf16=False,
        use_cpu=device == "cpu", gradient_checkpointing=False, seed=0,
    )
    if which == "GRPOTrainer":
        from trl import GRPOConfig, GRPOTrainer

        trainer_cls, args = GRPOTrainer, GRPOConfig(**common)
    else:
        from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

        trainer_cls = OARGRPOTrainer
        args = OARConfig(**common, oar_algo=which.split()[-1], oar_answer_extractor=last_number)

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    kept = times[1:] or times
    return {"step_s": statistics.median(kept), "steps": len(times), "first_s": times[0] if times else None}


def _spawn(which, timeout=None, **kw) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{which}: {(r.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(steps=6, threads=1, hidden=64, layers=2, gens=4, prompts=2, completion=32, device="cpu", log=print,
            trainers=TRAINERS) -> dict:
    """{trainer: median seconds per step}, each trainer in its own subprocess."""
    out = {}
    for which in trainers:
        r = _spawn(which, steps=steps, threads=threads, hidden=hidden, layers=layers, gens=gens, prompts=prompts,
                   completion=completion, device=device)
        log(f"{which}: {r}")
        out[which] = r["step_s"]
    return out


def gpu_rows(device, steps=5, hidden=512, layers=8, gens=8, prompts=4, completion=128, threads=4,
             emit=None, budget_s=float("inf")) -> list:
    """OARGRPOTrainer vs GRPOTrainer per step on the GPU (default: hidden 512, 8 layers, 8 x 4
    completions of up to 128 tokens): one row per trainer with its ratio to GRPOTrainer.
    emit(row) is called with each row as it is made; each trainer's subprocess is killed past
    what is left of budget_s seconds. Without TRL or datasets the rows say they are missing."""
    rows, end = [], time.monotonic() + budget_s
    shape = f"Llama {hidden}x{layers}, {gens * prompts} completions <= {completion} tokens"

    def add(metric, value=None, ok=True, kind="bench"):
        rows.append({"op": "trainer step", "shape": shape, "metric": metric, "value": value,
                     "target": "info" if value is not None else "", "ok": ok, "kind": kind})
        if emit:
            emit(rows[-1])

    try:  # what the children need beyond this project
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except Exception as e:  # noqa: BLE001 - absent, or one of their own requirements is
        add(f"missing ({type(e).__name__}: {e})"[:200], kind="missing")
        return rows
    kw = dict(steps=steps, threads=threads, hidden=hidden, layers=layers, gens=gens, prompts=prompts,
              completion=completion, device=str(device).split(":")[0])
    base = None
    for which in TRAINERS:
        left = end - time.monotonic()
        if left <= 5:
            add(f"{which}: skipped (time budget spent)", ok=False, kind="skip")
            continue
        try:
            sec = _spawn(which, timeout=None if left == float("inf") else left, **kw)["step_s"]
            base = base or (sec if which == "GRPOTrainer" else None)
            add(f"{which}: {sec:.3f} s per step" + (f", {sec / base:.2f}x GRPOTrainer" if base else ""),
                sec / base if base else sec)
        except subprocess.TimeoutExpired as e:
            add(f"{which}: killed after {e.timeout:.0f} s (time budget)", ok=False, kind="skip")
        except Exception as e:  # noqa: BLE001
            add(f"{which}: error: {e}"[:200], ok=False)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--gens", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--completion", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    kw = dict(steps=a.steps, threads=a.threads, hidden=a.hidden, layers=a.layers, gens=a.gens, prompts=a.prompts,
              completion=a.completion, device=a.device)
    if a.child:
        print(json.dumps(_child(a.child, **kw)))
        return 0
    res = compare(**kw)
    base = res["GRPOTrainer"]
    for name, sec in res.items():
        print(f"{name}: {sec:.3f} s per step, {sec / base:.2f}x GRPOTrainer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
