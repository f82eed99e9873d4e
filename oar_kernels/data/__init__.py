"""Tasks for the trainer: loaders for real data, and load_task, which also builds the default job's
generated arithmetic task (oar_kernels/default_job/arithmetic.py).

    task = load_task("arithmetic")          # generated, unlimited, held-out split
    task = load_task("data/train.jsonl")    # local JSONL with question/answer fields
    task = load_task("hf:gsm8k")            # through `datasets` (optional dependency)
    task = load_task("gsm_symbolic")        # GSM8K-template problems from reasoning-gym, offline (optional)

Every task has train_example(seed, index) -> Example and eval_examples(n) -> [Example].
"""
from __future__ import annotations

from typing import Optional

from .base import Example, ListTask
from .loaders import load_hf_task, load_jsonl_task, read_jsonl, reference_answer, rows_to_examples

DEFAULT_PROMPT_TEMPLATE = "{question}\n"

__all__ = ["Example", "ListTask", "load_task", "load_jsonl_task", "load_hf_task",
           "read_jsonl", "reference_answer", "rows_to_examples", "format_prompt",
           "DEFAULT_PROMPT_TEMPLATE"]


def format_prompt(question: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    return template.format(question=question)


def load_task(spec: str, eval_dataset: Optional[str] = None, eval_size: int = 200, seed: int = 0):
    """A task from a spec string.

    "arithmetic" or "arithmetic:MIN-MAX" (terms per problem): the generated task of
        oar_kernels.default_job (ArithmeticTask);
    "arithmetic_plan[:MIN-MAX]": the same with a plan line "Steps: K" opening every solution.
    "*.jsonl" / "jsonl:PATH": a local JSONL file.
    "hf:NAME[:CONFIG]", "gsm8k", "math": a `datasets` data set.
    "gsm_symbolic[:SIZE]", "rg:NAME[:SIZE]": problems generated offline by reasoning-gym.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset: expected a non-empty string, got {spec!r}")
    if spec in ("arithmetic", "arithmetic_plan") or spec.startswith(("arithmetic:", "arithmetic_plan:")):
        from ..default_job.arithmetic import ArithmeticTask

        plan = spec.startswith("arithmetic_plan")
        if ":" in spec:
            try:
                lo, hi = (int(x) for x in spec.split(":", 1)[1].split("-"))
            except ValueError:
                raise ValueError(f"dataset: expected 'arithmetic:MIN-MAX' (terms), got {spec!r}") from None
            if not 2 <= lo <= hi:
                raise ValueError(f"dataset: need 2 <= MIN <= MAX terms, got {spec!r}")
            return ArithmeticTask(min_terms=lo, max_terms=hi, plan=plan)
        return ArithmeticTask(plan=plan)
    from .reasoning_gym import load_reasoning_gym_task, parse_spec

    rg = parse_spec(spec)
    if rg is not None:
        return load_reasoning_gym_task(rg[0], rg[1], eval_size)
    if spec.startswith("jsonl:"):
        return load_jsonl_task(spec[6:], eval_dataset, eval_size, seed)
    if spec.endswith(".jsonl") or spec.endswith(".json"):
        return load_jsonl_task(spec, eval_dataset, eval_size, seed)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        return load_hf_task(parts[0], parts[1] if len(parts) > 1 else None, eval_size=eval_size, seed=seed)
    if spec.lower() in ("gsm8k", "math"):
        return load_hf_task(spec, eval_size=eval_size, seed=seed)
    raise ValueError(f"dataset: unknown spec {spec!r} (arithmetic, arithmetic_plan, PATH.jsonl, hf:NAME[:CONFIG], gsm8k, math, "
                     "gsm_symbolic[:SIZE], rg:NAME[:SIZE])")
