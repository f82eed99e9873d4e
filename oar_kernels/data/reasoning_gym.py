"""GSM8K-style word problems, generated offline by the `reasoning-gym` package.

    task = load_task("gsm_symbolic")          # 2000 training problems, held-out problems apart
    task = load_task("gsm_symbolic:500")      # 500 training problems
    task = load_task("rg:basic_arithmetic")   # any reasoning-gym data set, by name

reasoning-gym's `gsm_symbolic` generators instantiate GSM8K question templates with fresh
numbers (and answer_cot worked solutions ending "#### N"), so trainer and benchmarks can run on
GSM8K-style data with no hub access. Optional dependency: pip install 'oar_kernels[reasoning]'
(the `reasoning-gym` package).

The problems do not depend on the run's seed: the training pool is generated with data seed
TRAIN_SEED and the held-out problems with EVAL_SEED, held-out questions that also occur in the
training pool are dropped, and the run seed only shuffles the training order (ListTask).
"""
from __future__ import annotations

from typing import Optional

from .base import Example, ListTask, SkipLog
from .loaders import reference_answer

TRAIN_SEED = 0
EVAL_SEED = 1_000_003
DEFAULT_SIZE = 2000


def _require():
    try:
        import reasoning_gym  # noqa: F401  (optional dependency)
    except ImportError as err:
        raise ValueError(
            "dataset: reasoning-gym data sets need the `reasoning-gym` package "
            "(pip install 'oar_kernels[reasoning]' or pip install reasoning-gym)"
        ) from err
    return reasoning_gym


def generate(name: str, size: int, seed: int, log: Optional[SkipLog] = None):
    """[Example] of reasoning-gym data set `name`: question, normalised answer, solution (the
    generator's worked solution where it has one, as `metadata["answer_cot"]`). Items with no
    question or no answer are left out (recorded in `log`: item index and reason)."""
    rg = _require()
    try:
        ds = rg.create_dataset(name, size=size, seed=seed)
    except (KeyError, ValueError) as err:
        raise ValueError(f"dataset: reasoning-gym has no data set {name!r} ({err})") from None
    log = log if log is not None else SkipLog(f"reasoning-gym {name}", unit="row")
    out = []
    for i, item in enumerate(ds):
        log.rows += 1
        answer = reference_answer(item.get("answer"))
        question = item.get("question")
        if not isinstance(question, str) or not question.strip():
            log.skip(i, "no question")
            continue
        if answer is None:
            log.skip(i, "empty answer")
            continue
        cot = (item.get("metadata") or {}).get("answer_cot")
        out.append(Example(question=question.strip(), answer=answer, solution=cot if isinstance(cot, str) else None))
    return out


def load_reasoning_gym_task(name: str = "gsm_symbolic", size: int = DEFAULT_SIZE, eval_size: int = 200) -> ListTask:
    """A ListTask of `size` generated training problems (fewer when the generator gives items
    with no question or answer: task.skipped, task.describe()) and up to `eval_size` held-out
    ones (task.num_eval: the real number, after dropping questions of the training pool)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"dataset: expected a training size >= 1, got {size!r}")
    logs = [SkipLog(f"reasoning-gym {name} (training, seed {TRAIN_SEED})", unit="item"),
            SkipLog(f"reasoning-gym {name} (held-out, seed {EVAL_SEED})", unit="item")]
    train = generate(name, size, TRAIN_SEED, logs[0])
    if not train:
        raise ValueError(f"dataset: reasoning-gym {name!r} gave no usable problem ({logs[0].describe()})")
    seen = {ex.question for ex in train}
    evals = [ex for ex in generate(name, max(eval_size, 1) * 2, EVAL_SEED, logs[1])
             if ex.question not in seen][:max(eval_size, 0)]
    note = "" if evals else ("eval_size is 0" if eval_size <= 0
                             else "every generated held-out question is a training one")
    return ListTask(train, evals, name=f"reasoning-gym:{name}", skips=logs, eval_note=note)


def parse_spec(spec: str) -> Optional[tuple]:
    """("gsm_symbolic" | NAME, size) for "gsm_symbolic[:SIZE]" / "rg:NAME[:SIZE]", else None."""
    if spec == "gsm_symbolic" or spec.startswith("gsm_symbolic:"):
        name, rest = "gsm_symbolic", spec[len("gsm_symbolic"):]
    elif spec.startswith("rg:"):
        name, _, rest = spec[3:].partition(":")
        rest = ":" + rest if rest else ""
        if not name:
            raise ValueError(f"dataset: expected 'rg:NAME[:SIZE]', got {spec!r}")
    else:
        return None
    size = DEFAULT_SIZE
    if rest:
        try:
            size = int(rest[1:])
        except ValueError:
            raise ValueError(f"dataset: expected '{name}:SIZE' with an integer size, got {spec!r}") from None
    return name, size
