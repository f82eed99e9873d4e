"""Data: the generated arithmetic task and the JSONL / `datasets` loaders."""
import json
import re

import pytest

from oar_kernels.answers import extract_answer
from oar_kernels.data import format_prompt, load_task, reference_answer
from oar_kernels.default_job import ArithmeticTask, is_held_out
from oar_kernels.rewards import accuracy_reward


def _value(question):
    return eval(re.fullmatch(r"What is (.*)\?", question).group(1))  # digits, spaces, + and - only


def test_arithmetic_problems_are_correct_and_end_with_an_answer_line():
    task = load_task("arithmetic")
    for i in range(200):
        ex = task.train_example(0, i)
        assert str(_value(ex.question)) == ex.answer
        assert ex.solution.endswith(f"The answer is {ex.answer}.")
        assert extract_answer(ex.solution).text == ex.answer
        assert accuracy_reward([""], [ex.solution], [ex.answer]) == [1.0]
        terms = len(re.findall(r"\d+", ex.question))
        assert 2 <= terms <= 3 and ex.solution.count("=") == terms - 1


def test_shortcut_solutions_stop_after_the_first_step():
    import random

    task, rng = ArithmeticTask(shortcut_frac=0.5), random.Random(9)
    n_short = n_multi = 0
    for _ in range(400):
        ex = task.sample(rng)
        assert ex.answer == str(_value(ex.question))  # the answer stays the true result
        if len(re.findall(r"\d+", ex.question)) == 2:  # one step: nothing to cut short
            assert ex.solution.count("=") == 1 and ex.solution.endswith(f"The answer is {ex.answer}.")
            continue
        n_multi += 1
        first = ex.solution.split("\n")[0]
        if ex.solution.count("=") == 1:  # a shortcut states the first step's result: always wrong
            n_short += 1
            assert ex.solution == f"{first}\nThe answer is {first.rsplit(' = ', 1)[1]}."
            assert accuracy_reward([""], [ex.solution], [ex.answer]) == [0.0]
        else:
            assert ex.solution.endswith(f"The answer is {ex.answer}.")
    assert 0.4 < n_short / n_multi < 0.6
    # the RL task and the held-out split (shortcut_frac 0) are what they were
    assert ArithmeticTask(shortcut_frac=0.0) == ArithmeticTask() == load_task("arithmetic")


def test_seeded_and_position_addressable():
    task = ArithmeticTask()
    a = [task.train_example(3, i) for i in range(20)]
    assert a == [task.train_example(3, i) for i in range(20)]
    assert a != [task.train_example(4, i) for i in range(20)]
    assert task.train_example(3, 10_000_000) == task.train_example(3, 10_000_000)  # unlimited


def test_held_out_split_is_disjoint_from_training():
    task = ArithmeticTask()
    evals = task.eval_examples(300)
    assert len({e.question for e in evals}) == 300 and all(is_held_out(e.question) for e in evals)
    train = {task.train_example(0, i).question for i in range(3000)}
    assert not train & {e.question for e in evals}
    assert evals == task.eval_examples(300)


def test_terms_spec():
    task = load_task("arithmetic:3-3")
    assert all(len(re.findall(r"\d+", task.train_example(0, i).question)) == 3 for i in range(30))
    for bad in ["arithmetic:x", "arithmetic:1-2", "arithmetic:4-3"]:
        with pytest.raises(ValueError, match="dataset"):
            load_task(bad)


def test_prompt_template():
    assert format_prompt("What is 1 + 2?") == "What is 1 + 2?\n"
    assert format_prompt("Q", "Question: {question}\nAnswer:") == "Question: Q\nAnswer:"


@pytest.mark.parametrize("raw, want", [
    ("Natalia sold 48 clips...\n#### 72", "72"), ("#### 1,234", "1234"),
    ("so it is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"), ("42", "42"), (7, "7"), ("", None), (None, None),
    ("   ", None),
])
def test_reference_answer(raw, want):
    assert reference_answer(raw) == want


def test_jsonl_loader_skips_and_counts_rows_without_answer(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(10)]
    rows += [{"question": "no answer"}, {"question": "empty", "answer": ""}, {"answer": "3"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n\n")
    task = load_task(str(path), eval_size=2)
    assert task.skipped == 4
    assert len(task.train) + len(task.eval) == 10 and len(task.eval) == 2
    assert not {e.question for e in task.train} & {e.question for e in task.eval}
    seen = [task.train_example(0, i).question for i in range(len(task.train))]
    assert sorted(seen) == sorted(e.question for e in task.train)  # one epoch = each row once
    assert {e.answer for e in task.train + task.eval} == {str(i) for i in range(10)}


def test_jsonl_problem_solution_fields_and_eval_file(tmp_path):
    train, evals = tmp_path / "t.jsonl", tmp_path / "e.jsonl"
    train.write_text(json.dumps({"problem": "p", "solution": "thus \\boxed{3}"}) + "\n")
    evals.write_text(json.dumps({"question": "e", "answer": "4"}) + "\n")
    task = load_task(f"jsonl:{train}", eval_dataset=str(evals))
    assert task.train[0].answer == "3" and task.eval_examples(5)[0].answer == "4"


def test_no_usable_row_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="no usable row"):
        load_task(str(path))
    with pytest.raises(ValueError, match="no such file"):
        load_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown spec"):
        load_task("nonsense")


def test_hf_datasets_loader_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    from oar_kernels.data import load_hf_task

    path = tmp_path / "train.json"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"x\n#### {i}"}) for i in range(5)))
    import datasets

    from oar_kernels.data import rows_to_examples

    ds = datasets.load_dataset("json", data_files=str(path))
    examples, skipped = rows_to_examples(ds["train"])
    assert skipped == 0 and [e.answer for e in examples] == [str(i) for i in range(5)]
    task = load_hf_task(str(tmp_path), split="train", eval_split=None, eval_size=1)
    assert len(task.train) == 4 and len(task.eval) == 1


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_warm_start_takes_the_shortcut_share_from_its_recipe(share, monkeypatch):
    from oar_kernels.default_job import policy

    seen = []

    class Stop(Exception):
        pass

    def first_batch(tokenizer, examples, template):
        seen.extend(examples)
        raise Stop

    monkeypatch.setattr(policy, "sft_batch", first_batch)
    recipe = policy.WarmStartRecipe(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, batch_size=64,
                                    shortcut_frac=share)
    tok = policy.build_char_tokenizer()
    model = policy.build_model(recipe, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    with pytest.raises(Stop):
        policy.warm_start(model, tok, load_task("arithmetic:3-3"), recipe, "{question}\n", progress=False)
    assert len(seen) == 64
    assert all((ex.solution.count("=") == 1) == (share == 1.0) for ex in seen)


def test_arithmetic_eval_stops_when_the_held_out_space_is_used_up():
    """Two operands over 1..20 hold out only a few dozen distinct problems: asking for 500 returns
    those (it used to loop forever), asking for 0 returns none."""
    task = load_task("arithmetic:2-2")
    evals = task.eval_examples(500)
    questions = [e.question for e in evals]
    assert 10 < len(evals) < 500 and len(set(questions)) == len(questions)
    assert all(is_held_out(q) for q in questions)
    assert task.eval_examples(len(evals) + 50) == evals  # nothing more to find
    assert task.eval_examples(0) == [] and load_task("arithmetic").eval_examples(0) == []
    assert len(load_task("arithmetic").eval_examples(300)) == 300
