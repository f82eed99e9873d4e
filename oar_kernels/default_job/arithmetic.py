"""The default job's task: generated arithmetic problems, seeded, unlimited, with a disjoint held-out split.

    Question: "What is 17 + 8 - 12?"
    Solution: "17 + 8 = 25\n25 - 12 = 13\nThe answer is 13."
    With plan=True ("arithmetic_plan"): "Steps: 2\n17 + 8 = 25\n25 - 12 = 13\nThe answer is 13."

A problem belongs to the held-out split when a stable hash of its question falls in the
held-out bucket, so the two splits never share a question whatever the seed or sizes.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Iterator, List, Optional

from ..data.base import Example

HELD_OUT_BUCKETS = 10  # 1 question in HELD_OUT_BUCKETS is held out
EXHAUSTED_AFTER = 10_000  # eval_examples: consecutive repeated draws that mean "no more held-out problems"
# Every solution ends "The answer is N.": asking for the answer this way after the reasoning
# makes OAR's scoring sequence (prompt + reasoning + conclude + answer) the response itself.
CONCLUDE_TEXT = "The answer is "


def is_held_out(question: str) -> bool:
    return zlib.crc32(question.encode("utf-8")) % HELD_OUT_BUCKETS == 0


@dataclass(frozen=True)
class ArithmeticTask:
    """Multi-step + / - problems: a first operand in [lo, hi], then operands in [op_lo, op_hi]
    (default: [lo, hi] too), min_terms..max_terms operands in all; every intermediate result
    stays in [0, max_result].

    shortcut_frac: share of the worked solutions of multi-step problems that stop after the
    first step and give its result as the answer (wrong); the default policy's warm start uses
    0.5 so that the policy starts with a habit RL can remove. `answer` stays the true result
    (a shortcut's is always wrong: every operand is >= 1). The RL task and the held-out split
    use 0.

    plan: solutions open with a plan line "Steps: K" (K = the number of steps written). In a
    shortcut solution K is 1, so one early reasoning token decides whether the solution stops
    after the first step, and the first step's tokens are the same in right and wrong
    solutions: a task where credit assignment matters by construction (issue 15).
    """

    lo: int = 1
    hi: int = 20
    min_terms: int = 2
    max_terms: int = 3
    max_result: int = 99
    op_lo: Optional[int] = None
    op_hi: Optional[int] = None
    shortcut_frac: float = 0.0
    plan: bool = False

    def sample(self, rng: random.Random) -> Example:
        while True:
            n = rng.randint(self.min_terms, self.max_terms)
            value = rng.randint(self.lo, self.hi)
            question = str(value)
            steps: List[str] = []
            ok = True
            for _ in range(n - 1):
                x = rng.randint(self.lo if self.op_lo is None else self.op_lo,
                                self.hi if self.op_hi is None else self.op_hi)
                op = rng.choice("+-")
                new = value + x if op == "+" else value - x
                if new < 0 or new > self.max_result:
                    ok = False
                    break
                steps.append(f"{value} {op} {x} = {new}")
                question += f" {op} {x}"
                value = new
            if ok:
                break
        if len(steps) > 1 and self.shortcut_frac > 0 and rng.random() < self.shortcut_frac:
            # a shortcut solution: stops after the first step and reports its (wrong) result
            first = steps[0].rsplit(" = ", 1)[1]
            solution = f"{steps[0]}\n{CONCLUDE_TEXT}{first}."
            if self.plan:
                solution = f"Steps: 1\n{solution}"
        else:
            solution = "\n".join(steps) + f"\n{CONCLUDE_TEXT}{value}."
            if self.plan:
                solution = f"Steps: {len(steps)}\n{solution}"
        return Example(question=f"What is {question}?", answer=str(value), solution=solution)

    def _stream(self, seed: int, held_out: bool) -> Iterator[Example]:
        rng = random.Random(seed)
        while True:
            ex = self.sample(rng)
            if is_held_out(ex.question) == held_out:
                yield ex

    def train_example(self, seed: int, index: int) -> Example:
        """Training example number `index`: a pure function of (seed, index), so a run can
        resume at any position without replaying the stream."""
        rng = random.Random(f"train:{seed}:{index}")
        while True:
            ex = self.sample(rng)
            if not is_held_out(ex.question):
                return ex

    def eval_examples(self, n: int, seed: int = 1234) -> List[Example]:
        """Up to n distinct held-out problems (deterministic for a given seed): fewer when the
        held-out space is smaller (two operands over 1..20 leave a few dozen), which shows as
        EXHAUSTED_AFTER draws in a row that bring no new problem."""
        out, seen, stale = [], set(), 0
        for ex in self._stream(seed, held_out=True):
            if len(out) >= n or stale >= EXHAUSTED_AFTER:
                return out
            if ex.question in seen:
                stale += 1
                continue
            seen.add(ex.question)
            out.append(ex)
            stale = 0
        return out  # pragma: no cover (the stream is infinite)


def task_from_spec(spec: str) -> ArithmeticTask:
    """The task of a dataset spec "arithmetic[:MIN-MAX]" or "arithmetic_plan[:MIN-MAX]" (terms per
    problem); registered with oar_kernels.data.load_task by this package's __init__."""
    name, _, terms = spec.partition(":")
    if name not in ("arithmetic", "arithmetic_plan"):
        raise ValueError(f"dataset: expected 'arithmetic[:MIN-MAX]' or 'arithmetic_plan[:MIN-MAX]', got {spec!r}")
    plan = name == "arithmetic_plan"
    if not terms:
        return ArithmeticTask(plan=plan)
    try:
        lo, hi = (int(x) for x in terms.split("-"))
    except ValueError:
        raise ValueError(f"dataset: expected '{name}:MIN-MAX' (terms), got {spec!r}") from None
    if not 2 <= lo <= hi:
        raise ValueError(f"dataset: need 2 <= MIN <= MAX terms, got {spec!r}")
    return ArithmeticTask(min_terms=lo, max_terms=hi, plan=plan)
