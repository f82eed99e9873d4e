"""Rewards: answer equivalence (exact, numeric, math-verify), no answer -> 0, plug-ins."""
import pytest

from oar_kernels.rewards import (DEFAULT_REWARD, accuracy_reward, answers_equivalent, format_reward,
                                 load_reward_fn)


@pytest.mark.parametrize("reference, predicted", [
    ("66", "66"), ("66", "66.0"), ("1/2", "0.5"), ("0.5", "\\frac{1}{2}"), ("\\frac{3}{4}", "\\dfrac{3}{4}"),
    ("3/4", "\\frac{3}{4}"), ("1,000", "1000"), ("x+1", "1+x"), ("\\sqrt{4}", "2"), ("-7", "-7.00"),
])
def test_equivalent(reference, predicted):
    assert answers_equivalent(reference, predicted)


@pytest.mark.parametrize("reference, predicted", [("66", "67"), ("1/2", "1/3"), ("x+1", "x-1"), ("2", ""), ("", "2")])
def test_not_equivalent(reference, predicted):
    assert not answers_equivalent(reference, predicted)


def test_accuracy_reward_extracts_the_final_answer():
    completions = [
        "37 + 48 = 85\n85 - 19 = 66\nThe answer is 66.",
        "so the result is \\boxed{\\frac{1}{2}}",
        "work work\n#### 1/2",
        "The answer is 12. Wait, the answer is 13.",  # the last statement counts
        "I do not know",  # no extractable answer -> 0
        "",
        "The answer is 65.",
    ]
    answers = ["66", "0.5", "\\frac{1}{2}", "13", "66", "66", "66"]
    assert accuracy_reward([""] * 7, completions, answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_accuracy_reward_checks_lengths():
    with pytest.raises(ValueError, match="answers"):
        accuracy_reward(["p"], ["The answer is 1."], [])


def test_format_reward():
    assert format_reward(["", ""], ["The answer is 3.", "no idea"], ["4", "4"]) == [1.0, 0.0]


def my_length_reward(prompts, completions, answers):
    return [float(len(c)) for c in completions]


def test_plugin_reward_by_import_path():
    fn = load_reward_fn(f"{__name__}:my_length_reward")
    assert fn(["p"], ["abc"], ["1"]) == [3.0]
    assert load_reward_fn(f"{__name__}.my_length_reward") is fn
    assert load_reward_fn(DEFAULT_REWARD) is accuracy_reward


@pytest.mark.parametrize("path", ["", "nope", "oar_kernels.rewards:missing", "no_such_module_xyz:f",
                                  "oar_kernels.rewards:DEFAULT_REWARD"])
def test_bad_reward_path_names_the_key(path):
    with pytest.raises(ValueError, match="reward_fn"):
        load_reward_fn(path)
