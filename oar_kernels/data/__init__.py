"""Tasks for the trainer: loaders for real data, and load_task, which also builds the tasks
other layers register by name (the default job's generated arithmetic task registers itself
when oar_kernels.default_job is imported; the trainer imports it).

    task = load_task("arithmetic")          # generated (registered by oar_kernels.default_job)
    task = load_task("data/train.jsonl")    # local JSONL with question/answer fields
    task = load_task("hf:gsm8k")            # through `datasets` (optional dependency)
    task = load_task("gsm_symbolic")        # GSM8K-template problems from reasoning-gym, offline (optional)

Every task has train_example(seed, index) -> Example and eval_examples(n) -> [Example].
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from .base import Example, ListTask, Task
from .loaders import load_hf_task, load_jsonl_task, read_jsonl, reference_answer, rows_to_examples

DEFAULT_PROMPT_TEMPLATE = "{question}\n"

__all__ = ["Example", "ListTask", "Task", "load_task", "register_task", "load_jsonl_task", "load_hf_task",
           "read_jsonl", "reference_answer", "rows_to_examples", "format_prompt",
           "DEFAULT_PROMPT_TEMPLATE"]


def format_prompt(question: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    return template.format(question=question)


# spec name (the part before ":") -> builder(spec) of a task defined outside data/
_REGISTERED: Dict[str, Callable[[str], Task]] = {}


def register_task(name: str, build: Callable[[str], Task]) -> None:
    """Makes load_task(name) and load_task(f"{name}:ARGS") call build(spec)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a non-empty task name without ':', got {name!r}")
    if not callable(build):
        raise ValueError(f"build: expected a callable spec -> task, got {build!r}")
    _REGISTERED[name] = build


def load_task(spec: str, eval_dataset: Optional[str] = None, eval_size: int = 200, seed: int = 0):
    """A task from a spec string.

    a registered name, e.g. "arithmetic[:MIN-MAX]" and "arithmetic_plan[:MIN-MAX]" (the
        default job's ArithmeticTask, registered by oar_kernels.default_job);
    "*.jsonl" / "jsonl:PATH": a local JSONL file.
    "hf:NAME[:CONFIG]", "gsm8k", "math": a `datasets` data set.
    "gsm_symbolic[:SIZE]", "rg:NAME[:SIZE]": problems generated offline by reasoning-gym.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset: expected a non-empty string, got {spec!r}")
    name = spec.split(":", 1)[0]
    if name in _REGISTERED:
        return _REGISTERED[name](spec)
    if name in ("arithmetic", "arithmetic_plan"):
        raise ValueError(f"dataset: {spec!r} is the default job's generated task; it is registered when "
                         "oar_kernels.default_job is imported (the trainer does)")
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
    known = [f"{n}[:ARGS]" for n in sorted(_REGISTERED)] + [
        "PATH.jsonl", "hf:NAME[:CONFIG]", "gsm8k", "math", "gsm_symbolic[:SIZE]", "rg:NAME[:SIZE]"]
    raise ValueError(f"dataset: unknown spec {spec!r} (known: {', '.join(known)})")
