"""What every task hands the trainer: examples with a question and a reference answer."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    solution: Optional[str] = None  # a worked solution, when the data has one (warm start)


class ListTask:
    """A finite set of examples served as an endless seeded shuffle, plus an eval split.

    train_example(seed, index) is a pure function of its arguments (epoch-wise permutations),
    so a resumed run sees exactly the data an uninterrupted one would.
    """

    def __init__(self, train: Sequence[Example], eval: Sequence[Example], name: str = "list"):
        if not train:
            raise ValueError(f"dataset {name!r}: no usable training rows")
        self.train: List[Example] = list(train)
        self.eval: List[Example] = list(eval)
        self.name = name
        self._perm_cache = {}

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
        return self.eval[:n]
