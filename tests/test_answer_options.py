"""The readings where this project and the authors' code legitimately differ (issue 15):

* which answer the answer modes condition on: the response's own extracted answer (default)
  or the reference answer from the data (`build_segments(reference_answer=...)`, the
  trainer's `answer_source`, the TRL adapter's `oar_answer_source`);
* which position `last` reads: after the conclude text ("last", default) or after the
  appended answer ("last_after_answer", the authors' OAR-G);
* one perturbation-token rule (config pad_token_id, else eos_token_id) everywhere.

Each reading is checked against a direct computation written out here (whole-sequence
forwards, no Segments positions, no shared helpers), on a tiny float64 model.
"""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import oar_kernels as oar  # noqa: E402
from oar_kernels.importance import OARGStep  # noqa: E402
from oar_kernels.reference.importance import draw_noise  # noqa: E402
from oar_kernels.segments import Segments, build_segments  # noqa: E402
from tiny_models import make_model, make_tokenizer  # noqa: E402

TOL = 1e-4
CONCLUDE = "\nTherefore, the final answer is "


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return make_model("qwen2", vocab_size=len(tok), dtype=torch.float64, seed=3)


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


# prompt, response (reasoning + answer statement, or no answer), reference answer
CASES = [
    ("What is 12 + 30?\n", "12 + 30 = 42\nThe answer is 42.", "42"),
    ("What is 7 * 6 - 5?\n", "7 * 6 = 42\n42 - 5 = 37\nThe answer is 36.", "37"),  # wrong own answer
    ("What is 3 + 4?\n", "3 + 4 = 7 and so on", "7"),  # no extractable answer
]


def _segments(tok, reference):
    return [
        build_segments(_enc(tok, p), _enc(tok, r), tok, conclude_text=CONCLUDE,
                       reference_answer=ref if reference else None)
        for p, r, ref in CASES
    ]


def _parts(tok, i, reference):
    """(prompt, reasoning, conclude, answer) ids of case i, derived from the texts directly."""
    p, r, ref = CASES[i]
    cut = r.find("The answer is")
    reasoning = r if cut < 0 else r[:cut]
    own = None if cut < 0 else r[cut + len("The answer is "):].rstrip(".")
    answer = ref if reference else own
    return _enc(tok, p), _enc(tok, reasoning), _enc(tok, CONCLUDE), ([] if answer is None else _enc(tok, answer))


def _read(logits, n_before, answer, mode):
    """log P_final [V] (KL modes) or phi [] of one sequence's logits [L, V]; the answer is the
    last len(answer) tokens of the sequence (or absent for "last")."""
    A = len(answer)
    if mode == "last":
        return torch.log_softmax(logits[-1], -1)
    if mode == "last_after_answer":
        return torch.log_softmax(logits[-1], -1)
    pred = logits[n_before - 1 : n_before - 1 + A]
    if mode == "answer_mean":
        return torch.log_softmax(pred.mean(0), -1)
    return torch.log_softmax(pred, -1)[torch.arange(A), torch.tensor(answer)].mean()


def _direct_oarp(model, parts, mode, perturb):
    prompt, reasoning, conclude, answer = parts
    tail = conclude + ([] if mode == "last" else answer)
    n_before = len(prompt) + len(reasoning) + len(conclude)

    def f(reas):
        ids = torch.tensor([prompt + reas + tail])
        return _read(model(input_ids=ids).logits[0], n_before, answer, mode)

    base = f(reasoning)
    out = []
    for t in range(len(reasoning)):
        q = f(reasoning[:t] + [perturb] + reasoning[t + 1:])
        out.append(base - q if mode == "answer_joint" else (base.exp() * (base - q)).sum())
    return torch.stack(out).float()


def _direct_oarg(model, parts, mode, noise):
    prompt, reasoning, conclude, answer = parts
    tail = conclude + ([] if mode == "last" else answer)
    n_before = len(prompt) + len(reasoning) + len(conclude)
    ids = torch.tensor([prompt + reasoning + tail])
    emb = model.get_input_embeddings()
    with torch.no_grad():
        e = emb(ids)
        clean = _read(model(inputs_embeds=e).logits[0], n_before, answer, mode)
    x = e.clone()
    P, R = len(prompt), len(reasoning)
    x[0, P:P + R] += noise.to(x.dtype)
    x.requires_grad_(True)
    noisy = _read(model(inputs_embeds=x).logits[0], n_before, answer, mode)
    if mode == "answer_joint":
        J = clean - noisy
    else:
        p = clean.exp()
        J = (p * (torch.log(p + 1e-12) - torch.log(noisy.exp() + 1e-12))).sum()
    (g,) = torch.autograd.grad(J, x)
    return (g[0, P:P + R] * e[0, P:P + R]).sum(-1).abs().float()


def _close(got, want):
    assert got.shape == want.shape
    got, want = got.detach(), want.detach()
    scale = float(want.abs().max())
    assert scale > 0
    assert float((got - want).abs().max()) <= TOL * scale, (got, want)


# --------------------------------------------------------------------------------------
# segments builder


def test_reference_answer_segments(tok):
    own, ref = _segments(tok, False), _segments(tok, True)
    for i in range(len(CASES)):
        p, r, c, a = _parts(tok, i, reference=True)
        assert own[i].reasoning_ids.tolist() == r == ref[i].reasoning_ids.tolist()  # boundary unchanged
        assert ref[i].answer_ids.tolist() == a
        assert ref[i].answer_text == own[i].answer_text  # the extracted answer, for rewards/display
    assert own[1].answer_ids.tolist() == _enc(tok, "36") != ref[1].answer_ids.tolist()
    assert own[2].answer_ids.numel() == 0 and ref[2].answer_ids.numel() > 0  # no own answer: reference used
    assert build_segments(_enc(tok, "x"), _enc(tok, "1 + 1"), tok, reference_answer=2).answer_ids.tolist() == _enc(tok, "2")
    with pytest.raises(ValueError, match="reference_answer"):
        build_segments(_enc(tok, "x"), _enc(tok, "1 + 1"), tok, reference_answer="  ")


# --------------------------------------------------------------------------------------
# the estimators under each reading, against the direct computations


@pytest.mark.parametrize("reference", [False, True], ids=["own-answer", "reference-answer"])
@pytest.mark.parametrize("mode", ["answer_mean", "answer_joint", "last_after_answer"])
def test_oarp_readings_match_direct(tok, model, mode, reference):
    segs = _segments(tok, reference)
    scores, mask = oar.perturbation_importance(model, segs, mode=mode)
    pad = model.config.pad_token_id
    for i in range(len(CASES)):
        parts = _parts(tok, i, reference)
        if not parts[3]:  # no answer (own-answer reading, case 2): not scored
            assert not mask[i].any()
            continue
        R = len(parts[1])
        assert mask[i, :R].all()
        _close(scores[i, :R], _direct_oarp(model, parts, mode, pad))


@pytest.mark.parametrize("reference", [False, True], ids=["own-answer", "reference-answer"])
@pytest.mark.parametrize("mode", ["answer_mean", "answer_joint", "last_after_answer"])
def test_oarg_readings_match_direct(tok, model, mode, reference):
    segs = _segments(tok, reference)
    scores, mask = oar.gradient_importance(model, segs, mode=mode, noise_std=1e-2,
                                           generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the draw convention: one draw per scored row, in order
    D = model.get_input_embeddings().weight.shape[1]
    for i in range(len(CASES)):
        parts = _parts(tok, i, reference)
        if not parts[3]:
            assert not mask[i].any()
            continue
        R = len(parts[1])
        noise = draw_noise(R, D, gen) * 1e-2
        _close(scores[i, :R], _direct_oarg(model, parts, mode, noise))


def test_last_after_answer_is_last_with_the_answer_in_the_conclude(tok, model):
    """The issue's observation: the two `last` readings agree when the answer is moved into the
    conclude text, and differ otherwise."""
    segs = [s for s in _segments(tok, True)]
    moved = [Segments(s.prompt_ids, s.reasoning_ids, torch.cat([s.conclude_ids, s.answer_ids]), s.answer_ids)
             for s in segs]
    a, _ = oar.perturbation_importance(model, segs, mode="last_after_answer")
    b, _ = oar.perturbation_importance(model, moved, mode="last")
    c, _ = oar.perturbation_importance(model, segs, mode="last")
    _close(a, b)
    assert float((a - c).abs().max()) > 1e-3 * float(c.abs().max())


@pytest.mark.parametrize("mode", ["last_after_answer", "answer_mean"])
def test_oarg_step_last_after_answer_and_reference(tok, model, mode):
    segs = _segments(tok, True)
    responses = [torch.tensor(_enc(tok, r)) for _, r, _ in CASES]
    out = OARGStep(model, mode=mode, noise_std=1e-2)(segs, responses, generator=torch.Generator().manual_seed(2))
    want, wmask = oar.gradient_importance(model, segs, mode=mode, noise_std=1e-2,
                                          generator=torch.Generator().manual_seed(2))
    assert torch.equal(out.score_mask, wmask) and wmask.any(dim=1).all()
    _close(out.scores[wmask], want[wmask])


# --------------------------------------------------------------------------------------
# one perturbation-token rule


def test_perturbation_token_rule(tok, model):
    segs = _segments(tok, False)[:1]
    default, _ = oar.perturbation_importance(model, segs, mode="last")
    pad, _ = oar.perturbation_importance(model, segs, mode="last", perturb_token=model.config.pad_token_id)
    eos, _ = oar.perturbation_importance(model, segs, mode="last", perturb_token=model.config.eos_token_id)
    assert torch.equal(default, pad) and not torch.equal(default, eos)
    saved = model.config.pad_token_id
    try:
        model.config.pad_token_id = None  # no pad: EOS
        no_pad, _ = oar.perturbation_importance(model, segs, mode="last")
    finally:
        model.config.pad_token_id = saved
    assert torch.equal(no_pad, eos)


# --------------------------------------------------------------------------------------
# the trainer's option


def test_trainer_answer_source(tok):
    from oar_kernels.train.config import from_dict
    from oar_kernels.train.weights import scored_segments

    rows = [(_enc(tok, p), _enc(tok, r) + [tok.eos_token_id], r, False) for p, r, _ in CASES]
    answers = [ref for _, _, ref in CASES]
    adv = torch.tensor([1.0, -1.0, 1.0])
    cfg = from_dict({"algo": "oar-p", "dataset": "arithmetic", "conclude_text": CONCLUDE})
    picked, segs = scored_segments(rows, adv, tok, cfg, answers)
    assert picked == [0, 1]  # own answers; case 2 has none
    assert segs[1].answer_ids.tolist() == _enc(tok, "36")
    cfg = from_dict({"algo": "oar-p", "dataset": "arithmetic", "conclude_text": CONCLUDE, "answer_source": "reference"})
    picked, segs = scored_segments(rows, adv, tok, cfg, answers)
    assert picked == [0, 1, 2]
    assert [s.answer_ids.tolist() for s in segs] == [_enc(tok, a) for a in answers]
    assert segs[2].reasoning_ids.tolist() == _enc(tok, CASES[2][1])  # whole response, EOS dropped
    with pytest.raises(Exception, match="answer_source"):
        from_dict({"answer_source": "gold"})
    assert from_dict({"pfinal_mode": "last_after_answer"}).resolved_pfinal_mode() == "last_after_answer"


# --------------------------------------------------------------------------------------
# the TRL adapter's options


def test_trl_answer_source_and_perturb_token(tok, model, monkeypatch, tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="oar_answer_source"):
        OARConfig(oar_answer_source="gold", **common)
    with pytest.raises(ValueError, match="oar_perturb_token"):
        OARConfig(oar_perturb_token=-1, **common)
    assert OARConfig(oar_pfinal_mode="last_after_answer", **common).oar_pfinal_mode == "last_after_answer"
    args = OARConfig(oar_algo="oar-p", oar_pfinal_mode="answer_mean", oar_conclude_text=CONCLUDE,
                     oar_answer_source="reference", **common)
    prompts = [_enc(tok, p) for p, _, _ in CASES]
    comps = [_enc(tok, r) for _, r, _ in CASES]
    P, C = max(map(len, prompts)), max(map(len, comps))
    batch = {
        "prompt_ids": torch.tensor([[0] * (P - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [0] * (C - len(c)) for c in comps]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (C - len(c)) for c in comps]),
        "advantages": torch.tensor([1.0, -1.0, 0.5]),
    }
    fake = SimpleNamespace(args=args, processing_class=tok, model=model, _oar_extractor=oar.extract_answer,
                           accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    refs = [ref for _, _, ref in CASES]
    rows, segs = OARGRPOTrainer.oar_segments(fake, batch, refs)
    assert rows == [0, 1, 2] and segs == _segments(tok, True)
    rows, segs = OARGRPOTrainer.oar_segments(fake, batch, None)
    assert rows == [0, 1] and segs == _segments(tok, False)[:2]

    seen = {}

    def spy(model, segments, **kw):
        seen.update(kw)
        return torch.zeros(len(segments), 1), torch.zeros(len(segments), 1, dtype=torch.bool)

    from oar_kernels.importance import scoring

    monkeypatch.setattr(scoring, "perturbation_importance", spy)  # what oar_importance calls
    OARGRPOTrainer.oar_importance(fake, segs)
    assert seen["perturb_token"] is None  # the estimator's rule: config pad, else EOS
    args.oar_perturb_token = 5
    OARGRPOTrainer.oar_importance(fake, segs)
    assert seen["perturb_token"] == 5
