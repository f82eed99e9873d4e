"""The reasoning-gym data path (`--dataset gsm_symbolic`): GSM8K-template problems generated
offline. Skipped only where reasoning-gym is not installed (extra `reasoning`)."""
import pytest

from oar_kernels.data import load_task
from oar_kernels.data.reasoning_gym import parse_spec


def test_spec_parsing():
    assert parse_spec("gsm_symbolic") == ("gsm_symbolic", 2000)
    assert parse_spec("gsm_symbolic:12") == ("gsm_symbolic", 12)
    assert parse_spec("rg:basic_arithmetic:7") == ("basic_arithmetic", 7)
    assert parse_spec("arithmetic") is None
    with pytest.raises(ValueError, match="SIZE"):
        parse_spec("gsm_symbolic:many")


def test_gsm_symbolic_task_and_rewards():
    pytest.importorskip("reasoning_gym")
    from oar_kernels.answers import extract_answer
    from oar_kernels.rewards import accuracy_reward

    task = load_task("gsm_symbolic:6", eval_size=3)
    train = [task.train_example(0, i) for i in range(6)]
    assert len({ex.question for ex in train}) == 6  # one epoch: every problem once
    evals = task.eval_examples(3)
    assert len(evals) == 3 and not {e.question for e in evals} & {e.question for e in train}
    for ex in train + evals:
        assert len(ex.question) > 40
        assert ex.answer.lstrip("-").replace(".", "", 1).isdigit(), ex.answer  # a plain number
        # the generator's worked solution ends "#### N": our extractor and reward read N from it
        assert extract_answer(ex.solution) is not None  # (some write "#### 1260.0" for 1260)
    sols = [ex.solution for ex in train + evals]
    assert accuracy_reward([""] * 9, sols, [ex.answer for ex in train + evals]) == [1.0] * 9
    assert accuracy_reward([""], ["The answer is 1234567."], [train[0].answer]) == [0.0]
    # deterministic: the same problems whatever the run seed or call
    again = load_task("gsm_symbolic:6", eval_size=3)
    assert [again.train[i] for i in range(6)] == task.train
    with pytest.raises(ValueError, match="reasoning-gym has no data set"):
        load_task("rg:no_such_generator:3")


def test_trainer_accepts_the_spec():
    pytest.importorskip("reasoning_gym")
    from oar_kernels.train.config import from_dict

    cfg = from_dict({"dataset": "gsm_symbolic:8"})
    assert cfg.dataset == "gsm_symbolic:8"
    assert load_task(cfg.dataset, eval_size=2).eval_examples(2)
