"""The arithmetic_plan task (issue 15: a task where credit assignment matters) and the token
classes benchmarks/credit_task.py measures drift on."""
import dataclasses
import random

from bench_loader import load_benchmark

from oar_kernels.answers import extract_answer
from oar_kernels.data import load_task


def test_plan_line_and_shortcuts():
    task = load_task("arithmetic_plan:3-3")
    assert task.plan and load_task("arithmetic").plan is False
    rng = random.Random(0)
    warm = dataclasses.replace(task, shortcut_frac=0.5)
    seen = set()
    for _ in range(40):
        ex = warm.sample(rng)
        first, rest = ex.solution.split("\n", 1)
        k = int(first[len("Steps: "):])
        steps = rest.split("\n")[:-1]
        assert first.startswith("Steps: ") and len(steps) == k  # the plan says how many steps follow
        got = extract_answer(ex.solution).text
        assert (got == ex.answer) == (k == 2)  # a one-step plan is a shortcut: always wrong here
        seen.add(k)
    assert seen == {1, 2}
    plain = load_task("arithmetic_plan:3-3").sample(random.Random(1))
    assert plain.solution.startswith("Steps: 2\n") and extract_answer(plain.solution).text == plain.answer


def test_drift_token_classes():
    from oar_kernels.default_job import build_char_tokenizer

    ct = load_benchmark("credit_task")
    tok = build_char_tokenizer()
    sol = "Steps: 2\n17 + 8 = 25\n25 - 12 = 13\nThe answer is 13."
    p, s, lab = ct._classes(tok, "What is 17 + 8 - 12?\n", sol)
    assert len(s) == len(sol) == len(lab)
    assert [sol[i] for i, c in enumerate(lab) if c == "P"] == ["2"]
    assert "".join(sol[i] for i, c in enumerate(lab) if c == "N") == "17 + 8 = 25\n"
