"""Segments of a scored response: prompt | reasoning | conclude | answer.

OAR scores the reasoning tokens by how much each one moves the model's final answer. The
scoring sequence is prompt + reasoning + conclude (+ answer for the answer_* P_final modes);
see docs/algorithm.md section 2. Reasoning is always a prefix of the response, so the weights of
response positions >= len(reasoning) (the answer statement, EOS) are 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .answers import AnswerExtractor, AnswerSpan, extract_answer

DEFAULT_CONCLUDE_TEXT = "\nTherefore, the final answer is "


def _as_ids(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            # No dtype here: forcing long would silently truncate float ids (1.5 -> 1).
            items = list(value)
            t = torch.as_tensor(items) if items else torch.zeros(0, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name}: expected a 1-D sequence of token ids ({err})") from None
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of token ids, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer token ids, got dtype {t.dtype}")
    t = t.to(torch.long).cpu()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name}: token ids must be >= 0, got {int(t.min())}")
    return t


@dataclass(frozen=True)
class Segments:
    """One response split for scoring. All fields are 1-D int64 CPU tensors.

    answer_text is the extracted answer string (None when none was found), kept for rewards
    and display; it plays no part in scoring.
    """

    prompt_ids: torch.Tensor
    reasoning_ids: torch.Tensor
    conclude_ids: torch.Tensor
    answer_ids: torch.Tensor
    answer_text: Optional[str] = field(default=None, compare=False)

    def __post_init__(self):
        for name in ("prompt_ids", "reasoning_ids", "conclude_ids", "answer_ids"):
            object.__setattr__(self, name, _as_ids(name, getattr(self, name)))

    _ID_FIELDS = ("prompt_ids", "reasoning_ids", "conclude_ids", "answer_ids")

    # The generated dataclass __eq__ compares tensors with `==` and raises for multi-token
    # ids; compare (and hash) the token ids by value instead.
    def __eq__(self, other):
        if not isinstance(other, Segments):
            return NotImplemented
        return all(torch.equal(getattr(self, f), getattr(other, f)) for f in self._ID_FIELDS)

    def __hash__(self):
        return hash(tuple(tuple(getattr(self, f).tolist()) for f in self._ID_FIELDS))

    @property
    def num_reasoning(self) -> int:
        return int(self.reasoning_ids.numel())

    @property
    def reasoning_start(self) -> int:
        """Position of the first reasoning token in the scoring sequence."""
        return int(self.prompt_ids.numel())

    @property
    def answer_start(self) -> int:
        """Position of the first answer token in the scoring sequence (with answer)."""
        return self.reasoning_start + self.num_reasoning + int(self.conclude_ids.numel())

    def sequence(self, with_answer: bool) -> torch.Tensor:
        """The scoring sequence: prompt + reasoning + conclude (+ answer)."""
        parts = [self.prompt_ids, self.reasoning_ids, self.conclude_ids]
        if with_answer:
            parts.append(self.answer_ids)
        return torch.cat(parts)


def _chars_before(tokenizer, ids: Sequence[int], k: int) -> int:
    return len(tokenizer.decode(ids[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False))


def reasoning_length(tokenizer, response_ids: Sequence[int], char_start: int) -> int:
    """Largest k such that the first k response tokens decode to at most `char_start` chars.

    Binary search over prefix decodes (O(log n) decodes): works for any tokenizer whose
    prefix decodes grow monotonically, without needing offset mappings.
    """
    lo, hi = 0, len(response_ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _chars_before(tokenizer, response_ids, mid) <= char_start:
            lo = mid
        else:
            hi = mid - 1
    return lo


def build_segments(
    prompt_ids,
    response_ids,
    tokenizer,
    extractor: AnswerExtractor = extract_answer,
    conclude_text: str = DEFAULT_CONCLUDE_TEXT,
    response_text: Optional[str] = None,
    reference_answer: Optional[str] = None,
) -> Segments:
    """Splits one response into Segments.

    Args:
        prompt_ids: 1-D token ids of the prompt (as fed to the model).
        response_ids: 1-D token ids of the response (special tokens such as EOS included or not;
            they decode to nothing and end up outside the reasoning span when trailing).
        tokenizer: a transformers tokenizer (needs `decode` and `encode`).
        extractor: text -> AnswerSpan | None; the answer span's `start` marks where reasoning ends.
        conclude_text: the fixed text asking for the final answer.
        response_text: the decoded response, if the caller already has it; it must equal
            ``tokenizer.decode(response_ids, skip_special_tokens=True,
            clean_up_tokenization_spaces=False)`` since answer offsets index into it.
        reference_answer: which answer the answer modes condition on. None (default): the
            response's own extracted answer. A string or number (the reference answer from the data, as
            the authors' code does): answer_ids are its tokens, for every response, including
            one without an extractable answer (its whole response is then reasoning); the
            reasoning boundary and answer_text still come from the response's own answer.

    Where no answer is found the whole response is reasoning; answer_ids is empty unless a
    reference_answer is given.
    """
    prompt = _as_ids("prompt_ids", prompt_ids)
    response = _as_ids("response_ids", response_ids).tolist()
    if not isinstance(conclude_text, str):
        raise ValueError(f"conclude_text: expected a str, got {type(conclude_text).__name__}")
    text = response_text
    if text is None:
        text = tokenizer.decode(response, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    span: Optional[AnswerSpan] = extractor(text)
    conclude = tokenizer.encode(conclude_text, add_special_tokens=False)
    if reference_answer is not None:
        if not isinstance(reference_answer, str):
            reference_answer = str(reference_answer)
        reference = reference_answer.strip()
        if not reference:
            raise ValueError("reference_answer: expected a non-empty answer string or None")
    if span is None:
        # Drop trailing special tokens (EOS, pad) from the reasoning: they carry no reasoning.
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        end = len(response)
        while end and response[end - 1] in special:
            end -= 1
        answer = [] if reference_answer is None else tokenizer.encode(reference, add_special_tokens=False)
        return Segments(prompt, response[:end], conclude, answer, answer_text=None)
    k = reasoning_length(tokenizer, response, span.start)
    answer = tokenizer.encode(span.text if reference_answer is None else reference, add_special_tokens=False)
    return Segments(prompt, response[:k], conclude, answer, answer_text=span.text)


# why a response is not scored (its weights stay 1): the keys of build_scored_segments' counts
SKIP_REASONS = ("zero_advantage", "empty", "no_answer", "no_reasoning", "too_long")


def build_scored_segments(
    prompts: Sequence,
    responses: Sequence,
    tokenizer,
    extractor: AnswerExtractor = extract_answer,
    conclude_text: str = DEFAULT_CONCLUDE_TEXT,
    references: Optional[Sequence] = None,
    advantages: Optional[Sequence[float]] = None,
    max_length: Optional[int] = None,
    with_answer: bool = False,
    response_texts: Optional[Sequence[str]] = None,
) -> Tuple[List[int], List[Segments], Dict[str, List[int]]]:
    """Which responses of a batch OAR scores, and their Segments: the one rule of the TRL adapter
    and the verl plugin (docs/algorithm.md section 8, row 3).

    A response is scored when its advantage (if `advantages` is given) is non-zero, it has at
    least one token, it has an extractable final answer (with `references`, one answer per
    response, the reference answer is used instead and every response qualifies) with a
    non-empty reasoning before it, and its scoring sequence (with the answer when
    `with_answer`) fits `max_length` (the model's context; None: no limit). Every other response
    keeps weight 1 at every position. response_texts: the decoded responses, when the caller
    already has them (build_segments' response_text).

    Returns (rows, segments, skipped): the indices of the scored responses, their Segments
    (build_segments), and for each of SKIP_REASONS the indices of the responses it left out.
    """
    n = len(responses)
    if len(prompts) != n:
        raise ValueError(f"prompts: expected {n} prompts (one per response), got {len(prompts)}")
    for name, values in (("references", references), ("advantages", advantages), ("response_texts", response_texts)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name}: expected {n} values (one per response), got {len(values)}")
    skipped: Dict[str, List[int]] = {reason: [] for reason in SKIP_REASONS}
    rows, segments = [], []
    for b in range(n):
        if advantages is not None and float(advantages[b]) == 0.0:
            skipped["zero_advantage"].append(b)
            continue
        response = _as_ids("responses", responses[b])
        if response.numel() == 0:
            skipped["empty"].append(b)
            continue
        seg = build_segments(prompts[b], response, tokenizer, extractor=extractor, conclude_text=conclude_text,
                             reference_answer=None if references is None else references[b],
                             response_text=None if response_texts is None else response_texts[b])
        if seg.answer_text is None and references is None:
            skipped["no_answer"].append(b)
            continue
        if seg.num_reasoning == 0:
            skipped["no_reasoning"].append(b)
            continue
        if max_length is not None and seg.sequence(with_answer).numel() > max_length:
            skipped["too_long"].append(b)
            continue
        rows.append(b)
        segments.append(seg)
    return rows, segments, skipped
