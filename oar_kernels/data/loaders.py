"""Loaders for real data: a local JSONL file, or any `datasets` data set (hub or local).

Reference answers are normalised to the final answer: GSM8K's "... #### 42" gives "42",
MATH's "... \\boxed{\\frac{1}{2}}" gives "\\frac{1}{2}". Rows with no question or no
answer are skipped and counted; a file with no usable row is an error.
"""
from __future__ import annotations

import json
import os
import random
import re
from typing import Iterable, List, Optional, Tuple

from ..answers import extract_answer
from .base import Example, ListTask

QUESTION_KEYS = ("question", "problem", "prompt", "query", "input")
ANSWER_KEYS = ("answer", "final_answer", "solution", "output", "target")
# name -> (path, config, question key, answer key) for `datasets.load_dataset`
KNOWN = {
    "gsm8k": ("openai/gsm8k", "main", "question", "answer"),
    "math": ("hendrycks/competition_math", None, "problem", "solution"),
}


def reference_answer(raw) -> Optional[str]:
    """The final answer inside a reference field (#### / \\boxed / "The answer is"), else
    the stripped text itself; None when empty."""
    if raw is None:
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text:
        return None
    span = extract_answer(text)
    if span is not None:
        return span.text.replace(",", "") if re.fullmatch(r"-?[\d,]+(\.\d+)?", span.text) else span.text
    return text


def _pick(row: dict, keys: Iterable[str], wanted: Optional[str]):
    if wanted is not None:
        return row.get(wanted)
    for k in keys:
        if k in row:
            return row[k]
    return None


def rows_to_examples(rows: Iterable[dict], question_key=None, answer_key=None, source="data") -> Tuple[List[Example], int]:
    """(examples, number of skipped rows)."""
    out, skipped = [], 0
    for row in rows:
        q = _pick(row, QUESTION_KEYS, question_key) if isinstance(row, dict) else None
        raw = _pick(row, ANSWER_KEYS, answer_key) if isinstance(row, dict) else None
        ans = reference_answer(raw)
        if not isinstance(q, str) or not q.strip() or ans is None:
            skipped += 1
            continue
        sol = raw if isinstance(raw, str) and raw.strip() != ans else None
        out.append(Example(question=q.strip(), answer=ans, solution=sol))
    return out, skipped


def read_jsonl(path: str, question_key=None, answer_key=None) -> Tuple[List[Example], int]:
    if not os.path.isfile(path):
        raise ValueError(f"dataset: no such file {path!r}")
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    examples, skipped = rows_to_examples(rows, question_key, answer_key, path)
    if not examples:
        raise ValueError(f"dataset {path!r}: no usable row (need question and answer fields; "
                         f"{skipped + bad} rows skipped)")
    return examples, skipped + bad


def _split(examples: List[Example], eval_size: int, seed: int):
    ex = list(examples)
    random.Random(f"split:{seed}").shuffle(ex)
    n_eval = min(eval_size, max(len(ex) // 5, 1)) if len(ex) > 1 else 0
    return ex[n_eval:], ex[:n_eval]


def load_jsonl_task(path: str, eval_path: Optional[str] = None, eval_size: int = 200, seed: int = 0,
                    question_key=None, answer_key=None) -> ListTask:
    """A task from a local JSONL file (one {"question": ..., "answer": ...} object a line).

    Without eval_path, a seeded slice of the rows (at most eval_size, at most a fifth) is held
    out for evaluation and never trained on.
    """
    examples, skipped = read_jsonl(path, question_key, answer_key)
    if eval_path:
        train, _ = examples, None
        evals, s2 = read_jsonl(eval_path, question_key, answer_key)
        skipped += s2
    else:
        train, evals = _split(examples, eval_size, seed)
    task = ListTask(train, evals, name=path)
    task.skipped = skipped
    return task


def load_hf_task(name: str, config: Optional[str] = None, split: str = "train", eval_split: Optional[str] = "test",
                 eval_size: int = 200, seed: int = 0, question_key=None, answer_key=None) -> ListTask:
    """A task through `datasets.load_dataset` (hub name or local folder / data files).

    "gsm8k" and "math" are shorthands for their usual hub names and fields.
    """
    try:
        import datasets  # optional dependency
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError("dataset: loading hub/local data sets needs the `datasets` package "
                         "(pip install 'oar_kernels[data]')") from err
    if name.lower() in KNOWN:
        name, default_cfg, qk, ak = KNOWN[name.lower()]
        config = config or default_cfg
        question_key, answer_key = question_key or qk, answer_key or ak
    ds = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    train, skipped = rows_to_examples(ds[split], question_key, answer_key, name)
    if not train:
        raise ValueError(f"dataset {name!r}: no usable row in split {split!r} ({skipped} skipped)")
    if eval_split and eval_split in ds:
        evals, s2 = rows_to_examples(ds[eval_split], question_key, answer_key, name)
        skipped += s2
        evals = evals[:eval_size]
    else:
        train, evals = _split(train, eval_size, seed)
    task = ListTask(train, evals, name=name)
    task.skipped = skipped
    return task
