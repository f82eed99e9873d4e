"""Verifiable rewards.

A reward function is any callable ``(prompts, completions, answers) -> list[float]`` (one
float per completion; `answers` are the reference answers, repeated per completion). The
trainer picks one by import path ("package.module:function" or "package.module.function").

The default, accuracy_reward, gives 1.0 when the final answer extracted from the completion
(oar_kernels.answers.extract_answer, the same extractor that splits OAR's segments) equals the
reference answer, else 0.0; a completion with no extractable answer gets 0.0.
"""
from __future__ import annotations

import importlib
import re
import threading
from fractions import Fraction
from typing import Callable, List, Optional, Sequence

from ..answers import extract_answer

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], List[float]]

__all__ = ["RewardFn", "accuracy_reward", "format_reward", "answers_equivalent", "load_reward_fn", "DEFAULT_REWARD"]

DEFAULT_REWARD = "oar_kernels.rewards:accuracy_reward"

_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?")


def _as_number(s: str) -> Optional[Fraction]:
    t = s.strip().replace(",", "").rstrip(".").strip()
    if t.startswith("$") and t.endswith("$") and len(t) > 1:
        t = t[1:-1].strip()
    if not _NUMBER.fullmatch(t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify_equal(reference: str, predicted: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is an install requirement
        return False
    # math-verify's timeouts use SIGALRM, which only works in the main thread.
    main = threading.current_thread() is threading.main_thread()
    t = 5 if main else None
    try:
        gold = parse(f"${reference}$", parsing_timeout=t)
        pred = parse(f"${predicted}$", parsing_timeout=t)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=t))
    except Exception:  # a malformed model answer must never crash training
        return False


def answers_equivalent(reference: str, predicted: str) -> bool:
    """Exact string, then exact rational number, then math-verify (LaTeX, fractions, sets...)."""
    ref, pred = reference.strip(), predicted.strip()
    if not ref or not pred:
        return False
    if ref == pred:
        return True
    a, b = _as_number(ref), _as_number(pred)
    if a is not None and b is not None:
        return a == b
    return _math_verify_equal(ref, pred)


def accuracy_reward(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> List[float]:
    """1.0 if the completion's extracted final answer is equivalent to the reference, else 0.0."""
    if len(completions) != len(answers):
        raise ValueError(f"answers: expected {len(completions)} (one per completion), got {len(answers)}")
    out = []
    for completion, reference in zip(completions, answers):
        span = extract_answer(completion)
        out.append(1.0 if span is not None and answers_equivalent(str(reference), span.text) else 0.0)
    return out


def format_reward(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> List[float]:
    """1.0 when a final answer can be extracted from the completion, right or wrong, else 0.0."""
    return [0.0 if extract_answer(c) is None else 1.0 for c in completions]


def load_reward_fn(path: str) -> RewardFn:
    """Imports "pkg.module:function" (or "pkg.module.function") and checks it is callable."""
    if callable(path):
        return path
    if not isinstance(path, str) or not path:
        raise ValueError(f"reward_fn: expected an import path 'module:function', got {path!r}")
    mod_name, sep, attr = path.partition(":")
    if not sep:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise ValueError(f"reward_fn: expected an import path 'module:function', got {path!r}")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward_fn: cannot import {path!r} ({err})") from None
    if not callable(fn):
        raise ValueError(f"reward_fn: {path!r} is not callable")
    return fn
