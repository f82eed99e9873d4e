"""benchmarks/bench_importance.py's OAR-G step rows (the steps of benchmarks/baselines.py) run at
tiny sizes (keeps the script from rotting)."""
import math

import pytest
import torch

from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_importance")


@pytest.fixture(scope="module")
def bl():
    return load_benchmark("baselines")


def test_step_rows_with_lower_bound(bench, bl):
    torch.manual_seed(0)
    model = bl.build_model(hidden=32, layers=2, heads=4, kv_heads=2, vocab=97)
    segs = bl.make_segments(2, 5, 7, 3, 2, vocab=97)
    rows = bench.step_rows(model, segs, "cpu", repeats=1, modes=("answer_mean", "answer_joint"), floor=True)
    by = {name: (t, r, target) for name, t, r, target in rows}
    assert set(by) == {
        "GRPO step (forward + loss backward)",
        "OAR-G step (answer_mean)",
        "OAR-G step (answer_joint)",
        "OAR-G step (answer_mean, linearized)",
        "three-pass (naive OAR-G + GRPO step), answer_mean",
        "three-pass / OAR-G step (answer_mean)",
        bl.FLOOR,
    }
    t_grpo = by["GRPO step (forward + loss backward)"][0]
    for name, (t, r, target) in by.items():
        if t is not None:
            assert math.isfinite(t) and t > 0, name
        if r is not None and t is not None:
            assert r == pytest.approx(t / t_grpo), name
    assert by["OAR-G step (answer_mean)"][2] == bench.G_TARGET
    assert model.training is False  # step_rows puts the model back in eval mode
    assert all(p.grad is None for p in model.parameters())


def test_chunk_pass_differentiates_only_the_chunk_inputs(bl):
    model = bl.build_model(hidden=32, layers=2, heads=4, kv_heads=2, vocab=97)
    segs = bl.make_segments(3, 4, 6, 3, 2, vocab=97)
    calls = []
    real_grad = torch.autograd.grad

    def spy(outputs, inputs, *a, **k):
        calls.append([tuple(x.shape) for x in inputs])
        return real_grad(outputs, inputs, *a, **k)

    torch.autograd.grad = spy
    try:
        bl.chunk_pass(model, segs, "cpu")
    finally:
        torch.autograd.grad = real_grad
    # reasoning 6 + conclude 3 + answer 2 - 1 = 10 positions, hidden 32; no parameter touched
    assert calls == [[(3, 10, 32)]]
    assert all(p.grad is None for p in model.parameters())
