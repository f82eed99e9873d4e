"""What every task hands the trainer: examples with a question and a reference answer.

Loaders that read rows (JSONL, `datasets`, reasoning-gym) record what they leave out in a
SkipLog per source, and the ListTask they build reports it with the real split sizes:

    task.skipped             rows left out, over every source (int)
    task.skipped_examples    the first 5 (where, reason) pairs, e.g. (2, "no answer field")
    task.num_train           training examples
    task.num_eval            held-out examples (0: none; the trainer must not evaluate)
    task.has_eval            num_eval > 0
    task.describe(eval_size) one line, e.g.
        "data.jsonl: 1 training, 1 held-out; skipped 3 of 5 rows of data.jsonl (line 2: no
         answer field; line 4: not valid JSON; line 5: empty answer)"

`where` is the 1-based line number of a JSONL file, or the 0-based row index of a `datasets`
split / reasoning-gym item. describe_task(task, eval_size) gives the same line for any task,
including the generated ones that have none of these attributes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Sequence, Tuple

MAX_SKIP_EXAMPLES = 5  # (where, reason) pairs kept per source and per task


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    solution: Optional[str] = None  # a worked solution, when the data has one (warm start)


class Task(Protocol):
    """What the trainer reads of a task (ListTask, and the generated tasks registered with
    data.register_task)."""

    def train_example(self, seed: int, index: int) -> Example: ...

    def eval_examples(self, n: int) -> List[Example]: ...


@dataclass
class SkipLog:
    """The rows of one source (a file, a split) a loader read, and those it left out.

    unit: "line" (JSONL: 1-based line numbers), "row" (datasets: 0-based index) or "item"
    (reasoning-gym: 0-based index).
    """

    source: str
    unit: str = "line"
    rows: int = 0  # rows read (blank lines of a JSONL file are not rows)
    skipped: int = 0
    examples: List[Tuple[int, str]] = field(default_factory=list)  # the first MAX_SKIP_EXAMPLES

    def skip(self, where: int, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append((int(where), reason))

    def describe(self) -> str:
        """"skipped 3 of 5 rows of data.jsonl (line 2: no answer field; ...)", or "" when none."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"{self.unit} {w}: {r}" for w, r in self.examples)
        more = self.skipped - len(self.examples)
        if more > 0:
            shown += f"; {more} more"
        return f"skipped {self.skipped} of {self.rows} rows of {self.source} ({shown})"


class ListTask:
    """A finite set of examples served as an endless seeded shuffle, plus an eval split.

    train_example(seed, index) is a pure function of its arguments (epoch-wise permutations),
    so a resumed run sees exactly the data an uninterrupted one would. eval_examples(n) is the
    real held-out list: at most n, possibly fewer, possibly empty (never training rows).

    skips: the SkipLog of every source read; eval_note: why there is no held-out row, when
    there is none (shown by describe()).
    """

    def __init__(self, train: Sequence[Example], eval: Sequence[Example], name: str = "list",
                 skips: Sequence[SkipLog] = (), eval_note: str = ""):
        if not train:
            raise ValueError(f"dataset {name!r}: no usable training rows")
        self.train: List[Example] = list(train)
        self.eval: List[Example] = list(eval)
        self.name = name
        self.skips: List[SkipLog] = list(skips)
        self.eval_note = eval_note
        self._perm_cache = {}

    # -- what was loaded ----------------------------------------------------------------------

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.skips)

    @property
    def skipped_examples(self) -> List[Tuple[int, str]]:
        return [e for s in self.skips for e in s.examples][:MAX_SKIP_EXAMPLES]

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_eval(self) -> int:
        return len(self.eval)

    @property
    def has_eval(self) -> bool:
        return bool(self.eval)

    def describe(self, eval_size: Optional[int] = None) -> str:
        """One line: training and held-out counts (held-out capped at eval_size, the number the
        trainer evaluates), then the skipped rows of every source with their first reasons."""
        return _describe(self.name, self.num_train, self.num_eval if eval_size is None else
                         min(self.num_eval, max(int(eval_size), 0)), self.eval_note, self.skips)

    def __repr__(self) -> str:
        return f"ListTask({self.describe()!r})"

    # -- serving ------------------------------------------------------------------------------

    def _perm(self, seed: int, epoch: int) -> List[int]:
        key = (seed, epoch)
        if key not in self._perm_cache:
            perm = list(range(len(self.train)))
            random.Random(f"perm:{seed}:{epoch}").shuffle(perm)
            self._perm_cache = {key: perm}
        return self._perm_cache[key]

    def train_example(self, seed: int, index: int) -> Example:
        epoch, i = divmod(index, len(self.train))
        return self.train[self._perm(seed, epoch)[i]]

    def eval_examples(self, n: int, seed: int = 1234) -> List[Example]:
        return self.eval[:max(int(n), 0)]


def _describe(name: str, num_train: Optional[int], num_eval: int, eval_note: str, skips: Sequence[SkipLog]) -> str:
    parts = [f"{num_train} training" if num_train is not None else "generated training problems"]
    if num_eval:
        parts.append(f"{num_eval} held-out")
    else:
        parts.append("0 held-out" + (f" ({eval_note})" if eval_note else ""))
    line = f"{name}: " + ", ".join(parts)
    skipped = [s.describe() for s in skips if s.skipped]
    return line + ("; " + "; ".join(skipped) if skipped else "")


def describe_task(task, eval_size: int) -> str:
    """task.describe(eval_size) where the task has it; else (generated tasks) the held-out count
    is len(task.eval_examples(eval_size))."""
    if hasattr(task, "describe"):
        return task.describe(eval_size)
    return _describe(getattr(task, "name", type(task).__name__), None, len(task.eval_examples(eval_size)), "", ())


def num_held_out(task, eval_size: int) -> int:
    """How many held-out problems an evaluation of `eval_size` uses (0: do not evaluate)."""
    n = getattr(task, "num_eval", None)
    if n is not None:
        return min(n, max(int(eval_size), 0))
    return len(task.eval_examples(eval_size))
