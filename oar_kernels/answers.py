"""Final-answer extraction from a model response (pure text, no tokenizer).

The same extractor decides the reward (is the answer right?) and the OAR segments (where
reasoning ends), so both always agree on what "the final answer" of a response is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import import_module
from typing import Callable, Optional


@dataclass(frozen=True)
class AnswerSpan:
    """Where the final answer sits in a response string.

    text: the answer itself ("42", "\\frac{1}{2}").
    start: offset of the final-answer statement (the "\\boxed", "####" or "The answer is"
        marker); everything before it is reasoning.
    answer_start, answer_end: offsets of `text` inside the response.
    """

    text: str
    start: int
    answer_start: int
    answer_end: int


AnswerExtractor = Callable[[str], Optional[AnswerSpan]]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####[ \t]*")
_ANSWER_IS = re.compile(
    r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is\b\s*[:=]?|[:=])[ \t]*", re.IGNORECASE
)
# Trailing decoration that is not part of the answer: sentence period, math delimiters.
_TRAILING = " \t.$\\]*"


def _boxed(text: str) -> Optional[AnswerSpan]:
    matches = list(_BOXED.finditer(text))
    for m in reversed(matches):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            content = text[m.end() : i - 1]
            lead = len(content) - len(content.lstrip())
            inner = content.strip()
            if inner:
                a0 = m.end() + lead
                return AnswerSpan(inner, m.start(), a0, a0 + len(inner))
    return None


def _after_marker(text: str, pattern: re.Pattern) -> Optional[AnswerSpan]:
    for m in reversed(list(pattern.finditer(text))):
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        raw = text[m.end() : line_end]
        # An answer ends at the first sentence break ". " (a decimal point is kept).
        cut = re.search(r"\.(\s|$)", raw)
        if cut:
            raw = raw[: cut.start()]
        inner = raw.strip().lstrip("$").rstrip(_TRAILING).strip()
        inner = inner.strip("*").strip()
        if inner:
            a0 = m.end() + raw.find(inner)
            return AnswerSpan(inner, m.start(), a0, a0 + len(inner))
    return None


def extract_answer(text: str) -> Optional[AnswerSpan]:
    """The final answer of `text`, or None.

    Looks, in order of precedence, for the last ``\\boxed{...}`` (nested braces allowed), the
    last ``#### answer`` line, then the last "The (final) answer is ..." statement.
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    return _boxed(text) or _after_marker(text, _HASHES) or _after_marker(text, _ANSWER_IS)


DEFAULT_EXTRACTOR = "oar_kernels.answers.extract_answer"


def resolve_extractor(value, name: str = "answer_extractor") -> AnswerExtractor:
    """An answer extractor from None (``extract_answer``), a callable or an import path
    ("pkg.mod.func" or "pkg.mod:func"). One rule for every integration (TRL, verl): an import
    path keeps a config picklable and serialisable. `name` is the option named in errors."""
    if value is None:
        return extract_answer
    if callable(value):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{name}: expected a callable or an import path such as {DEFAULT_EXTRACTOR!r}, got {value!r}"
        )
    path = value.strip()
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{name}: {value!r} is not an import path 'module.function'")
    try:
        fn = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{name}: cannot import {value!r} ({err})") from None
    if not callable(fn):
        raise ValueError(f"{name}: {value!r} is not callable")
    return fn
