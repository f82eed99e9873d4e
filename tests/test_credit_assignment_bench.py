"""benchmarks/credit_assignment.py at tiny size: ground-truth labels, metrics, one small run."""
import sys
from pathlib import Path

import pytest
import torch
from bench_loader import load_benchmark

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_model, make_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def ca():
    return load_benchmark("credit_assignment")


def test_metrics(ca):
    assert ca.auc([3, 2], [1, 0]) == 1.0 and ca.auc([0], [1]) == 0.0 and ca.auc([1], [1]) == 0.5
    assert ca.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert ca.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ca.spearman([1, 1, 1], [1, 2, 3]) is None
    assert ca.ranks([5, 1, 5, 0]) == [2.5, 1.0, 2.5, 0.0]
    labels = ["N", "D", "F", "D", "N"]
    assert ca.topk_recall([0, 9, 8, 7, 1], labels) == 0.5
    assert ca.topk_recall([0, 9, 1, 7, 1], labels) == 1.0


def test_labels_char_and_bpe(ca):
    from oar_kernels.default_job import build_char_tokenizer

    case = ca.make_cases(1, seed=3)[0]
    a, o1, b, o2, d = case.prompt[len("What is "):-2].split()
    c = str(eval(f"{a} {o1} {b}"))
    e = str(eval(f"{c} {o2} {d}"))
    assert case.reasoning == f"{a} {o1} {b} = {c}\n{c} {o2} {d} = {e}\n" and case.own == case.reference == e
    char = build_char_tokenizer()
    ca.attach_segments([case], char)
    line1 = f"{a} {o1} {b} = {c}\n"
    want = []
    for ch_i, ch in enumerate(case.reasoning):
        if ch in " =\n":
            want.append("F")
        elif ch_i < len(line1):
            want.append("N")
        elif ch_i >= len(case.reasoning) - 1 - len(e):
            want.append("D")
        else:
            want.append("C")
    assert case.token_labels == want
    bpe = make_tokenizer()
    segs = ca.attach_segments([case], bpe, conclude=ca.pick_conclude(bpe))
    assert case.token_labels.count("D") >= 1 and "N" in case.token_labels
    assert bpe.decode(segs[0].answer_ids).strip() == e
    wrong = ca.make_cases(1, seed=3, wrong=True)[0]
    assert abs(int(wrong.own) - int(wrong.reference)) == 1


def test_perfect_and_uniform_estimators(ca):
    tok = make_tokenizer()
    cases = ca.make_cases(3)
    segs = ca.attach_segments(cases, tok)
    R = max(s.num_reasoning for s in segs)
    scores, mask = torch.zeros(3, R), torch.zeros(3, R, dtype=torch.bool)
    for b, c in enumerate(cases):
        mask[b, : len(c.token_labels)] = True
        scores[b, : len(c.token_labels)] = torch.tensor([1.0 if x == "D" else 0.0 for x in c.token_labels])
    m = ca.metrics(scores, mask, cases, ref=scores, draw2=scores)
    assert m["auc"] == 1.0 and m["recall"] == 1.0 and m["rho_oarp"] == pytest.approx(1.0) and m["w_ratio"] > 1
    m = ca.metrics(torch.ones(3, R), mask, cases)
    assert m["auc"] == 0.5 and m["w_ratio"] == pytest.approx(1.0)


def test_tiny_run(ca):
    torch.manual_seed(0)
    tok = make_tokenizer()
    model = make_model("qwen2", vocab_size=len(tok), seed=0)
    rows, readings = ca.run(model, tok, n=2, conclude=ca.pick_conclude(tok), noise_scales=(1e-3,),
                            only=["OAR-G answer_mean grad_x_input", "uniform", "token entropy", "input-gradient"],
                            log=lambda *a: None)
    names = [r["name"] for r in rows]
    assert names[:4] == [f"OAR-P {m}" for m in ca.OAR_MODES]
    assert "uniform" in names and "token entropy" in names and "input-gradient norm (no noise)" in names
    g = rows[names.index("OAR-G answer_mean grad_x_input noise 0.001")]
    assert g["rho_oarp"] is not None and g["rho_draws"] is not None and -1 <= g["rho_draws"] <= 1
    assert rows[names.index("uniform")]["auc"] == 0.5
    for r in rows:
        assert r["auc"] is None or 0 <= r["auc"] <= 1
        assert r["ms"] >= 0
    assert len(readings) == 10 and all(r["rho"] is None or -1 <= r["rho"] <= 1 for r in readings[4:])
    assert all(r["rho"] >= 0 for r in readings[:4])
    text = ca.table(rows, readings)
    main, _, second = text.partition("\n\n")
    assert main.count("\n| OAR-P") == 4 and main.count("\n|") == len(rows) + 1
    assert second.count("own answer vs reference answer") == 4


def test_bilevel_row_matches_the_op(ca):
    import oar_kernels as oar

    x = [0.3, -0.2, 2.0, 0.0, 0.7, 1.1]
    w, _ = ca._bilevel_row(x, 0.25, clamp=True)
    want = oar.bilevel_reshape(torch.tensor([x], dtype=torch.float64), torch.ones(1, 6, dtype=torch.bool))[0]
    assert w == pytest.approx(want.tolist(), abs=1e-6)
    w2, _ = ca._bilevel_row(x, 0.25, clamp=False)
    assert max(abs(a - b) for a, b in zip(w, w2)) > 1e-3  # the negative score changes the weights
