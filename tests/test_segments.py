"""Tests of answer extraction (oar_kernels.answers) and response segmentation
(oar_kernels.segments) with the in-process byte-level BPE tokenizer of tiny_models."""
from __future__ import annotations

import pytest
import torch

from oar_kernels.answers import AnswerSpan, extract_answer
from oar_kernels.segments import DEFAULT_CONCLUDE_TEXT, Segments, build_segments, reasoning_length
from tiny_models import make_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _decode(tok, ids):
    return tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    "text, answer",
    [
        ("So x = \\boxed{42}.", "42"),
        ("Thus \\boxed{\\frac{1}{2}} is it.", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{ \\sqrt{\\frac{a}{b}} }", "\\sqrt{\\frac{a}{b}}"),
        ("We get \\fbox{7}", "7"),
        ("#### 72", "72"),
        ("work\n#### 3.75\n", "3.75"),  # decimal point kept
        ("#### -12", "-12"),  # negative number
        ("The answer is 19.", "19"),  # sentence period dropped
        ("the final answer is -0.5. Done.", "-0.5"),
        ("Final answer: 8", "8"),
        ("The answer is $12$.", "12"),
        ("The answer is **7**", "7"),
    ],
)
def test_extract_answer_values(text, answer):
    span = extract_answer(text)
    assert isinstance(span, AnswerSpan)
    assert span.text == answer
    assert text[span.answer_start : span.answer_end] == answer
    assert span.start <= span.answer_start


def test_extract_answer_statement_offsets():
    text = "We add 3 and 4.\n#### 7"
    span = extract_answer(text)
    assert text[span.start :].startswith("####")
    text = "Adding gives 7. The answer is 7."
    assert text[extract_answer(text).start :].startswith("The answer is")
    text = "Adding gives 7. Therefore, the final answer is \\boxed{7}."
    assert text[extract_answer(text).start :].startswith("\\boxed{7}")


def test_extract_answer_last_occurrence_wins():
    assert extract_answer("\\boxed{1} then \\boxed{2}").text == "2"
    assert extract_answer("#### 3\nno wait\n#### 4").text == "4"
    assert extract_answer("The answer is 5. Hmm, the answer is 6.").text == "6"
    # an empty or unclosed last box falls back to the previous one
    assert extract_answer("\\boxed{9} and \\boxed{}").text == "9"
    assert extract_answer("\\boxed{9} and \\boxed{10").text == "9"


def test_extract_answer_precedence():
    # boxed > #### > "answer is", wherever each one sits
    assert extract_answer("\\boxed{1}\n#### 2\nThe answer is 3.").text == "1"
    assert extract_answer("The answer is 3.\n#### 2").text == "2"
    assert extract_answer("#### 2\nThe answer is 3.").text == "2"
    assert extract_answer("The answer is 3. \\boxed{4} was wrong").text == "4"


@pytest.mark.parametrize("text", ["", "We compute 5 - 9 = -4", "The answer is", "#### ", "\\boxed{}"])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_extract_answer_bad_input():
    for bad in (None, 42, b"#### 4"):
        with pytest.raises(ValueError, match="text"):
            extract_answer(bad)


# ---------------------------------------------------------------- build_segments


CASES = [
    # (response text, expected answer text, exact: reasoning decodes to exactly the text
    #  before the statement; else the tokenizer glued the space before it onto the marker)
    ("Tom has 12 apples. We compute 12 + 7 = 19. Therefore, the final answer is \\boxed{19}.", "19", False),
    ("We compute 12 * 3 = 36.\n#### 36", "36", True),
    ("Each friend gets 84 / 7 = 12 coins.\nThe answer is 12.", "12", True),
    ("So 5 - 9 = -4.\n#### -4", "-4", True),
    ("We compute 7 / 2 = 3.5. The answer is 3.5.", "3.5", False),
    ("First \\boxed{2}, no: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", False),
]


@pytest.mark.parametrize("text, answer, exact", CASES)
def test_build_segments_with_answer(tok, text, answer, exact):
    prompt = _encode(tok, "Tom has 12 apples. How many?")
    response = _encode(tok, text) + [tok.eos_token_id]
    seg = build_segments(prompt, response, tok)

    assert seg.prompt_ids.tolist() == prompt
    k = seg.num_reasoning
    assert seg.reasoning_ids.tolist() == response[:k]  # a prefix of the response
    statement = extract_answer(text).start
    before = text[:statement]
    reasoning_text = _decode(tok, seg.reasoning_ids)
    assert before.startswith(reasoning_text)
    assert before[len(reasoning_text) :].strip() == ""  # at most the space glued to the marker
    assert len(_decode(tok, response[: k + 1])) > statement  # k is the largest such prefix
    if exact:
        assert reasoning_text == before
    assert seg.answer_text == answer
    assert seg.answer_ids.tolist() == _encode(tok, answer)
    assert _decode(tok, seg.answer_ids) == answer
    assert seg.conclude_ids.tolist() == _encode(tok, DEFAULT_CONCLUDE_TEXT)
    assert _decode(tok, seg.conclude_ids) == DEFAULT_CONCLUDE_TEXT
    for t in (seg.prompt_ids, seg.reasoning_ids, seg.conclude_ids, seg.answer_ids):
        assert t.dtype == torch.int64 and t.dim() == 1 and t.device.type == "cpu"
    # scoring-sequence geometry
    assert seg.reasoning_start == len(prompt)
    assert seg.answer_start == len(prompt) + k + len(seg.conclude_ids)
    full = seg.sequence(True)
    assert full.tolist() == prompt + response[:k] + seg.conclude_ids.tolist() + seg.answer_ids.tolist()
    assert full[seg.answer_start :].tolist() == seg.answer_ids.tolist()
    assert seg.sequence(False).tolist() == full[: seg.answer_start].tolist()
    # passing the decoded text gives the same split
    same = build_segments(prompt, response, tok, response_text=_decode(tok, response))
    assert same == seg and same.answer_text == seg.answer_text


def test_build_segments_no_answer(tok):
    text = "We compute 5 - 9 = -4 and stop here"
    body = _encode(tok, text)
    response = body + [tok.eos_token_id, tok.pad_token_id]
    seg = build_segments([3, 4], response, tok)
    assert seg.reasoning_ids.tolist() == body  # whole response, trailing EOS/pad dropped
    assert _decode(tok, seg.reasoning_ids) == text
    assert seg.answer_ids.numel() == 0 and seg.answer_text is None
    assert seg.conclude_ids.tolist() == _encode(tok, DEFAULT_CONCLUDE_TEXT)
    assert seg.sequence(True).tolist() == seg.sequence(False).tolist()


def test_build_segments_empty_and_answer_only(tok):
    seg = build_segments([3], [], tok)
    assert seg.num_reasoning == 0 and seg.answer_ids.numel() == 0
    seg = build_segments([3], [tok.eos_token_id], tok)
    assert seg.num_reasoning == 0
    seg = build_segments([3], _encode(tok, "#### 8") + [tok.eos_token_id], tok)
    assert seg.num_reasoning == 0 and seg.answer_text == "8"


def test_build_segments_options(tok):
    response = _encode(tok, "We compute 2 + 2 = 4.\n#### 4")
    seg = build_segments(torch.tensor([7, 8]), torch.tensor(response), tok, conclude_text=" Answer: ")
    assert _decode(tok, seg.conclude_ids) == " Answer: "
    assert seg.answer_text == "4"
    seg = build_segments([7], response, tok, conclude_text="")
    assert seg.conclude_ids.numel() == 0
    # a custom extractor decides where reasoning ends
    seg = build_segments([7], response, tok, extractor=lambda text: None)
    assert seg.reasoning_ids.tolist() == response and seg.answer_text is None
    seg = build_segments([7], response, tok, extractor=lambda text: AnswerSpan("2", 10, 10, 11))
    assert _decode(tok, seg.reasoning_ids) == "We compute"
    assert seg.answer_ids.tolist() == _encode(tok, "2")


def test_reasoning_length_bounds(tok):
    ids = _encode(tok, "We compute 12 + 7 = 19.")
    n = len(_decode(tok, ids))
    assert reasoning_length(tok, ids, 0) == 0
    assert reasoning_length(tok, ids, n) == len(ids)
    assert reasoning_length(tok, ids, n + 10) == len(ids)
    for c in range(n + 1):
        k = reasoning_length(tok, ids, c)
        assert len(_decode(tok, ids[:k])) <= c
        assert k == len(ids) or len(_decode(tok, ids[: k + 1])) > c


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "field, value",
    [
        ("prompt_ids", torch.zeros(2, 3, dtype=torch.long)),  # 2-D
        ("reasoning_ids", [[1, 2], [3, 4]]),  # 2-D list
        ("conclude_ids", torch.tensor([1.0, 2.0])),  # float tensor
        ("answer_ids", [1.5, 2.0]),  # float list: must not be truncated to [1, 2]
        ("reasoning_ids", [True, False]),  # bool
        ("prompt_ids", torch.tensor([3, -1])),  # negative
        ("answer_ids", [-5]),
        ("conclude_ids", ["a", "b"]),  # not ids at all
        ("prompt_ids", 5),  # not a sequence
    ],
)
def test_segments_rejects_bad_ids(field, value):
    kwargs = dict(prompt_ids=[1], reasoning_ids=[2, 3], conclude_ids=[4], answer_ids=[5])
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        Segments(**kwargs)


def test_segments_accepts_id_sequences():
    import numpy as np

    seg = Segments(np.array([1, 2]), (3,), torch.tensor([4], dtype=torch.int32), [])
    assert seg.prompt_ids.dtype == torch.int64 and seg.answer_ids.numel() == 0
    assert seg.conclude_ids.dtype == torch.int64
    assert seg.num_reasoning == 1 and seg.answer_start == 4


def test_build_segments_bad_input(tok):
    with pytest.raises(ValueError, match="prompt_ids"):
        build_segments([[1, 2]], [3], tok)
    with pytest.raises(ValueError, match="response_ids"):
        build_segments([1], [0.5], tok)
    with pytest.raises(ValueError, match="conclude_text"):
        build_segments([1], [3], tok, conclude_text=3)


def test_segments_compare_by_token_ids():
    a = Segments([1, 2], [3, 4], [5], [6, 7], answer_text="67")
    b = Segments(torch.tensor([1, 2]), (3, 4), [5], [6, 7])  # answer_text is not compared
    c = Segments([1, 2], [3], [4, 5], [6, 7])  # same concatenation, different split
    assert a == b and hash(a) == hash(b)
    assert a != c and len({a, b, c}) == 2


def test_answer_is_needs_word_boundaries():
    from oar_kernels.answers import extract_answer

    assert extract_answer("so the answer isn't clear") is None
    assert extract_answer("the answers: unclear") is None
    span = extract_answer("I think. The answer isn't 3. The answer is 4.")
    assert span is not None and span.text == "4"
