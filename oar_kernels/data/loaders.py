"""Loaders for real data: a local JSONL file, or any `datasets` data set (hub or local).

Reference answers are normalised to the final answer: GSM8K's "... #### 42" gives "42",
MATH's "... \\boxed{\\frac{1}{2}}" gives "\\frac{1}{2}".

Skipped rows: a row that is not valid JSON, not an object, or has no question / an empty
question / no answer / an empty answer is left out, and recorded in the task's SkipLog (one per
file or split) with its 1-based line number (JSONL) or 0-based row index (`datasets`) and the
reason; `task.describe(eval_size)` is the one-line report, e.g.

    data.jsonl: 1 training, 1 held-out; skipped 3 of 5 rows of data.jsonl (line 2: no answer
    field; line 4: not valid JSON; line 5: empty answer)

A file with no usable row is an error that names the reasons.

Held-out split: with an eval file / eval split, its first eval_size usable rows; else a seeded
slice of the rows (at most eval_size, at most a fifth, at least one when there are two rows or
more) that is never trained on. A single usable row is not held out: the task then has
num_eval == 0 and eval_examples(n) == [] (the trainer must not evaluate), and describe() says
"0 held-out (1 usable row: too few to hold one out; give an eval file (--eval_dataset))".
Training rows are never evaluated on.
"""
from __future__ import annotations

import json
import os
import random
import re
from typing import Iterable, List, Optional, Tuple

from ..answers import extract_answer
from .base import Example, ListTask, SkipLog

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
    """(found, value): the wanted field, else the first of `keys` the row has."""
    if wanted is not None:
        return (wanted in row), row.get(wanted)
    for k in keys:
        if k in row:
            return True, row[k]
    return False, None


def row_to_example(row, question_key=None, answer_key=None) -> Tuple[Optional[Example], str]:
    """(Example, "") for a usable row, else (None, the reason it is skipped)."""
    if not isinstance(row, dict):
        return None, "not an object"
    has_q, q = _pick(row, QUESTION_KEYS, question_key)
    if not has_q:
        return None, f"no {question_key!r} field" if question_key else "no question field"
    if not isinstance(q, str):
        return None, "question is not text"
    if not q.strip():
        return None, "empty question"
    has_a, raw = _pick(row, ANSWER_KEYS, answer_key)
    if not has_a:
        return None, f"no {answer_key!r} field" if answer_key else "no answer field"
    ans = reference_answer(raw)
    if ans is None:
        return None, "empty answer" if raw is None or isinstance(raw, str) else "answer is not text or a number"
    sol = raw if isinstance(raw, str) and raw.strip() != ans else None
    return Example(question=q.strip(), answer=ans, solution=sol), ""


def rows_to_examples(rows: Iterable[dict], question_key=None, answer_key=None, source="data",
                     log: Optional[SkipLog] = None, start: int = 0) -> Tuple[List[Example], int]:
    """(examples, number of skipped rows). With `log`, every row read and every row skipped
    (index start, start + 1, ... and its reason) is recorded there."""
    log = log if log is not None else SkipLog(source, unit="row")
    before = log.skipped
    out = []
    for i, row in enumerate(rows, start):
        log.rows += 1
        ex, reason = row_to_example(row, question_key, answer_key)
        if ex is None:
            log.skip(i, reason)
        else:
            out.append(ex)
    return out, log.skipped - before


def read_jsonl(path: str, question_key=None, answer_key=None, log: Optional[SkipLog] = None
               ) -> Tuple[List[Example], int]:
    """(examples, number of skipped rows) of a JSONL file; blank lines are not rows. With `log`,
    the skipped rows' 1-based line numbers and reasons are recorded there. No usable row: an
    error that says why the rows were skipped."""
    if not os.path.isfile(path):
        raise ValueError(f"dataset: no such file {path!r}")
    log = log if log is not None else SkipLog(path, unit="line")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            log.rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.skip(lineno, "not valid JSON")
                continue
            ex, reason = row_to_example(row, question_key, answer_key)
            if ex is None:
                log.skip(lineno, reason)
            else:
                out.append(ex)
    if not out:
        raise ValueError(f"dataset {path!r}: no usable row (need question and answer fields; "
                         f"{log.describe() or 'the file has no row'})")
    return out, log.skipped


def _split(examples: List[Example], eval_size: int, seed: int):
    """(train, held-out): a seeded slice of at most eval_size and at most a fifth of the rows
    (at least 1 when there are 2 rows or more) is held out; a single row is never held out."""
    ex = list(examples)
    random.Random(f"split:{seed}").shuffle(ex)
    n_eval = max(min(eval_size, max(len(ex) // 5, 1)), 0) if len(ex) > 1 else 0
    return ex[n_eval:], ex[:n_eval]


def _no_eval_note(n_rows: int, eval_size: int) -> str:
    if eval_size <= 0:
        return "eval_size is 0"
    return f"{n_rows} usable row{'s' * (n_rows != 1)}: too few to hold one out; give an eval file (--eval_dataset)"


def load_jsonl_task(path: str, eval_path: Optional[str] = None, eval_size: int = 200, seed: int = 0,
                    question_key=None, answer_key=None) -> ListTask:
    """A task from a local JSONL file (one {"question": ..., "answer": ...} object a line).

    Without eval_path, a seeded slice of the rows (at most eval_size, at most a fifth) is held
    out for evaluation and never trained on; a file with a single usable row holds none out
    (num_eval 0). With eval_path, the held-out rows are the first eval_size of that file.
    """
    logs = [SkipLog(path, unit="line")]
    examples, _ = read_jsonl(path, question_key, answer_key, log=logs[0])
    note = ""
    if eval_path:
        logs.append(SkipLog(eval_path, unit="line"))
        train = examples
        evals, _ = read_jsonl(eval_path, question_key, answer_key, log=logs[1])
        evals = evals[:max(eval_size, 0)]
        if not evals:
            note = "eval_size is 0"
    else:
        train, evals = _split(examples, eval_size, seed)
        if not evals:
            note = _no_eval_note(len(examples), eval_size)
    return ListTask(train, evals, name=path, skips=logs, eval_note=note)


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
    logs = [SkipLog(f"{name} split {split!r}", unit="row")]
    train, _ = rows_to_examples(ds[split], question_key, answer_key, name, log=logs[0])
    if not train:
        raise ValueError(f"dataset {name!r}: no usable row in split {split!r} ({logs[0].describe() or 'no row'})")
    note = ""
    if eval_split and eval_split in ds:
        logs.append(SkipLog(f"{name} split {eval_split!r}", unit="row"))
        evals, _ = rows_to_examples(ds[eval_split], question_key, answer_key, name, log=logs[1])
        evals = evals[:max(eval_size, 0)]
        if not evals:
            note = "eval_size is 0" if eval_size <= 0 else f"no usable row in split {eval_split!r}"
    else:
        n = len(train)
        train, evals = _split(train, eval_size, seed)
        if not evals:
            note = _no_eval_note(n, eval_size)
    return ListTask(train, evals, name=name, skips=logs, eval_note=note)
