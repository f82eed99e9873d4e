"""Tests of the naive OAR-P / OAR-G oracles (oar_kernels.reference.importance).

Exactness checks use float64 models built with make_model(exact=True): transformers' own
RMSNorm and eager softmax compute in float32 even in a float64 model, which would limit
finite differences to float32 accuracy.
KL scores are >= 0 up to rounding: sum_v p (log p - log q) of two float64 distributions can
come out at about -1e-16 when P == Q, so we allow -1e-12.
"""
from __future__ import annotations

import math

import pytest
import torch

from oar_kernels.reference import gradient_importance_naive, perturbation_importance_naive
from oar_kernels.reference import importance as imp
from oar_kernels.segments import Segments
from tiny_models import make_model, make_segments, make_tokenizer

MODES = ("last", "answer_mean", "answer_joint")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Batch-1 forwards of a 2-layer model: a second thread only adds contention on shared cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model64(tok):
    return make_model("qwen2", vocab_size=len(tok), dtype=torch.float64, seed=0, exact=True)


@pytest.fixture(scope="module")
def segs(tok):
    return make_segments(tok, 5, seed=3)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _seg(prompt, reasoning, conclude, answer):
    return Segments(prompt, reasoning, conclude, answer)


def _expected_mask(segments, mode):
    r_max = max(s.num_reasoning for s in segments)
    mask = torch.zeros(len(segments), r_max, dtype=torch.bool)
    for b, s in enumerate(segments):
        if s.num_reasoning and (mode == "last" or s.answer_ids.numel()):
            mask[b, : s.num_reasoning] = True
    return mask


# ---------------------------------------------------------------- shapes, masks, ragged


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_masks_ragged(tok, segs, arch, mode):
    model = make_model(arch, vocab_size=len(tok), seed=1)  # float32
    want = _expected_mask(segs, mode)
    assert {s.num_reasoning for s in segs} != {segs[0].num_reasoning}  # really ragged
    outs = [
        perturbation_importance_naive(model, segs, mode=mode),
        gradient_importance_naive(model, segs, mode=mode, generator=_gen()),
        gradient_importance_naive(model, segs, mode=mode, score="grad_norm", generator=_gen()),
    ]
    for scores, mask in outs:
        assert scores.dtype == torch.float32 and mask.dtype == torch.bool
        assert scores.shape == mask.shape == want.shape
        assert torch.equal(mask, want)
        assert torch.all(scores[~mask] == 0)
        assert torch.isfinite(scores).all()
        assert scores[mask].abs().sum() > 0
        if mode != "answer_joint":  # float32 KL: >= 0 up to float32 rounding
            assert (scores[mask] >= -1e-6).all()


def test_empty_batch(model64):
    for fn in (perturbation_importance_naive, gradient_importance_naive):
        scores, mask = fn(model64, [])
        assert scores.shape == mask.shape == (0, 0)


# ---------------------------------------------------------------- hand-computed P_final


def test_p_final_modes_by_hand(model64):
    """Two-token answer: every P_final mode and one OAR-P score from explicit indexing."""
    prompt, reasoning, conclude, answer = [5, 9, 13], [20, 21, 22, 23], [30, 31], [40, 41]
    seg = _seg(prompt, reasoning, conclude, answer)
    full = torch.tensor(prompt + reasoning + conclude + answer)
    a0 = len(prompt) + len(reasoning) + len(conclude)  # position of answer token 0
    with torch.no_grad():
        logits = model64(input_ids=full[None]).logits[0]  # [L, V]
        logits_noans = model64(input_ids=full[None, :a0]).logits[0]

    # last: next-token distribution after the conclude, from the sequence without the answer.
    p_last = torch.softmax(logits_noans[a0 - 1], dim=-1)
    # answer_mean: softmax of the mean of the logits at positions a0-1 and a0.
    p_mean = torch.softmax((logits[a0 - 1] + logits[a0]) / 2, dim=-1)
    # answer_joint: mean of log p(answer_0 | ..) and log p(answer_1 | .., answer_0).
    lp0 = torch.log(torch.softmax(logits[a0 - 1], dim=-1)[answer[0]])
    lp1 = torch.log(torch.softmax(logits[a0], dim=-1)[answer[1]])
    phi = (lp0 + lp1) / 2

    torch.testing.assert_close(imp.p_final_last(logits_noans, seg).exp(), p_last, rtol=0, atol=1e-13)
    torch.testing.assert_close(imp.p_final_last(logits, seg).exp(), p_last, rtol=0, atol=1e-10)  # causal
    torch.testing.assert_close(imp.p_final_answer_mean(logits, seg).exp(), p_mean, rtol=0, atol=1e-13)
    torch.testing.assert_close(imp.phi_answer_joint(logits, seg), phi, rtol=0, atol=1e-13)

    # OAR-P at reasoning position t=2 (sequence position 5), perturbation token 7, by hand.
    t, tok_p = 2, 7
    pert = full.clone()
    pert[len(prompt) + t] = tok_p
    with torch.no_grad():
        lg = model64(input_ids=pert[None]).logits[0]
        lg_noans = model64(input_ids=pert[None, :a0]).logits[0]
    q_last = torch.softmax(lg_noans[a0 - 1], dim=-1)
    q_mean = torch.softmax((lg[a0 - 1] + lg[a0]) / 2, dim=-1)
    phi_t = (torch.log(torch.softmax(lg[a0 - 1], -1)[answer[0]]) + torch.log(torch.softmax(lg[a0], -1)[answer[1]])) / 2
    want = {
        "last": (p_last * (p_last.log() - q_last.log())).sum(),
        "answer_mean": (p_mean * (p_mean.log() - q_mean.log())).sum(),
        "answer_joint": phi - phi_t,
    }
    for mode in MODES:
        scores, mask = perturbation_importance_naive(model64, [seg], mode=mode, perturb_token=tok_p)
        assert mask.tolist() == [[True] * 4]
        assert abs(float(scores[0, t]) - float(want[mode])) <= 1e-6 * abs(float(want[mode])) + 1e-12, mode


# ---------------------------------------------------------------- OAR-P properties


@pytest.mark.parametrize("mode", MODES)
def test_unchanged_position_scores_exactly_zero(model64, mode):
    pad = model64.config.pad_token_id
    seg = _seg([5, 6], [11, pad, 12, 13, pad], [30], [40, 41])
    scores, mask = perturbation_importance_naive(model64, [seg], mode=mode)  # default: pad
    assert mask.all()
    assert scores[0, 1] == 0 and scores[0, 4] == 0
    assert (scores[0, [0, 2, 3]] != 0).all()
    # an explicit perturb_token equal to the original token, too
    scores, _ = perturbation_importance_naive(model64, [seg], mode=mode, perturb_token=12)
    assert scores[0, 2] == 0


def test_kl_scores_nonnegative(model64, segs):
    for mode in ("last", "answer_mean"):
        for scores, mask in (
            perturbation_importance_naive(model64, segs, mode=mode),
            gradient_importance_naive(model64, segs, mode=mode, generator=_gen()),
        ):
            assert (scores[mask] >= -1e-12).all()


def test_answer_joint_can_be_negative(model64, segs):
    scores, mask = perturbation_importance_naive(model64, segs, mode="answer_joint")
    assert (scores[mask] < 0).any() and (scores[mask] > 0).any()


def test_perturb_token_default_falls_back_to_eos(tok):
    model = make_model(vocab_size=len(tok), dtype=torch.float64)
    seg = _seg([5, 6], [11, 12, 1], [30], [])  # token 1 == eos
    model.config.pad_token_id = None
    model.config.eos_token_id = [1, 2]
    scores, _ = perturbation_importance_naive(model, [seg], mode="last")
    assert scores[0, 2] == 0 and scores[0, 0] != 0
    assert imp.default_perturb_token(model) == 1
    explicit, _ = perturbation_importance_naive(model, [seg], mode="last", perturb_token=1)
    assert torch.equal(scores, explicit)
    as_tensor, _ = perturbation_importance_naive(model, [seg], mode="last", perturb_token=torch.tensor(1))
    assert torch.equal(scores, as_tensor)
    model.config.eos_token_id = None
    with pytest.raises(ValueError, match="perturb_token"):
        perturbation_importance_naive(model, [seg], mode="last")


# ---------------------------------------------------------------- OAR-G


def _embed_objective(model, seg, mode, e_clean_ids, e):
    """J(e) for one response: P_clean from the clean embeddings, P(e) from e, both [1, L, D]."""
    with torch.no_grad():
        clean = imp.p_final(model(inputs_embeds=e_clean_ids).logits[0], seg, mode)
    noisy = imp.p_final(model(inputs_embeds=e).logits[0], seg, mode)
    if mode == "answer_joint":
        return clean - noisy
    p, q = clean.exp(), noisy.exp()
    return (p * (torch.log(p + 1e-12) - torch.log(q + 1e-12))).sum()


@pytest.mark.parametrize("noise_std", [0.0, 1e-3])
def test_oar_g_answer_joint_finite_difference(model64, noise_std):
    """grad_x_input = |<dJ/de_t, e_t>| by a hand autograd pass (exact: same forwards) and by a
    central difference of J(e_noisy + h * e_t) on a float64-exact model;
    grad_norm = ||dJ/de_t|| by the hand autograd pass."""
    seg = _seg([5, 9, 13], [20, 21, 22, 23, 24], [30, 31], [40, 41])
    ids = seg.sequence(True)[None]
    emb = model64.get_input_embeddings()
    r0, n = seg.reasoning_start, seg.num_reasoning
    with torch.no_grad():
        e_clean = emb(ids)
    noise = torch.randn((n, e_clean.shape[-1]), generator=_gen(5), dtype=torch.float32).double() * noise_std
    e_noisy = e_clean.clone()
    e_noisy[0, r0 : r0 + n] += noise

    gxi, mask = gradient_importance_naive(model64, [seg], mode="answer_joint", noise_std=noise_std, generator=_gen(5))
    gn, _ = gradient_importance_naive(
        model64, [seg], mode="answer_joint", noise_std=noise_std, score="grad_norm", generator=_gen(5)
    )
    assert mask.all()
    h = 1e-4
    e_var = e_noisy.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_embed_objective(model64, seg, "answer_joint", e_clean, e_var), e_var)
    for t in range(n):
        direction = torch.zeros_like(e_clean)
        direction[0, r0 + t] = e_clean[0, r0 + t]
        with torch.no_grad():
            jp = _embed_objective(model64, seg, "answer_joint", e_clean, e_noisy + h * direction)
            jm = _embed_objective(model64, seg, "answer_joint", e_clean, e_noisy - h * direction)
        fd = abs(float(jp - jm) / (2 * h))
        exact = abs(float((grad[0, r0 + t] * e_clean[0, r0 + t]).sum()))
        assert math.isclose(float(gxi[0, t]), exact, rel_tol=1e-6, abs_tol=1e-12), (t, float(gxi[0, t]), exact)
        assert math.isclose(float(gxi[0, t]), fd, rel_tol=1e-6, abs_tol=1e-10), (t, float(gxi[0, t]), fd)
        assert math.isclose(float(gn[0, t]), float(grad[0, r0 + t].norm()), rel_tol=1e-6, abs_tol=1e-12)


def test_oar_g_kl_mode_matches_hand_autograd_and_draw_convention(model64, tok):
    """answer_mean / last, with an unscored row in the middle: the documented noise draws
    (one randn((R_b, D)) per scored row, in order) reproduce the oracle exactly."""
    segs = [
        _seg([5, 9], [20, 21, 22], [30], [40, 41]),
        _seg([6], [23, 24], [31], []),  # unscored in answer modes: draws nothing
        _seg([7, 8, 9], [25, 26, 27, 28], [30, 31], [42]),
    ]
    emb = model64.get_input_embeddings()
    for mode in ("answer_mean", "last"):
        std = 1e-2
        gen = _gen(11)
        want = torch.zeros(3, 4)
        for b, seg in enumerate(segs):
            if mode != "last" and seg.answer_ids.numel() == 0:
                continue
            ids = seg.sequence(mode != "last")[None]
            r0, n = seg.reasoning_start, seg.num_reasoning
            with torch.no_grad():
                e_clean = emb(ids)
            noise = torch.randn((n, e_clean.shape[-1]), generator=gen, dtype=torch.float32)
            e = e_clean.clone()
            e[0, r0 : r0 + n] += noise.double() * std
            e.requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(_embed_objective(model64, seg, mode, e_clean, e), e)
            want[b, :n] = (g[0, r0 : r0 + n] * e_clean[0, r0 : r0 + n]).sum(-1).abs().float()
        got, mask = gradient_importance_naive(model64, segs, mode=mode, noise_std=std, generator=_gen(11))
        assert mask[1].any() == (mode == "last")
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        assert (got[mask] > 0).all()  # nonzero noise gives a nonzero second-order signal


def test_oar_g_determinism_and_global_rng(model64, segs):
    a, _ = gradient_importance_naive(model64, segs, mode="answer_mean", generator=_gen(123))
    b, _ = gradient_importance_naive(model64, segs, mode="answer_mean", generator=_gen(123))
    c, _ = gradient_importance_naive(model64, segs, mode="answer_mean", generator=_gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # KL-mode scores depend on the noise draw
    # generator=None draws from the global CPU RNG the same way
    torch.manual_seed(123)
    d, _ = gradient_importance_naive(model64, segs, mode="answer_mean")
    assert torch.equal(a, d)
    # OAR-P has no randomness at all
    p1, _ = perturbation_importance_naive(model64, segs, mode="last")
    p2, _ = perturbation_importance_naive(model64, segs, mode="last")
    assert torch.equal(p1, p2)


def test_oar_g_zero_noise_kl_is_zero(model64, segs):
    """At zero noise P_noisy == P_clean: the KL objective sits at its minimum, gradient 0."""
    scores, mask = gradient_importance_naive(model64, segs, mode="answer_mean", noise_std=0.0)
    assert mask.any() and scores.abs().max() < 1e-10


def test_oar_g_works_under_no_grad_and_inference_mode(model64, segs):
    a, _ = gradient_importance_naive(model64, segs, mode="answer_joint", generator=_gen(1))
    with torch.no_grad():
        b, _ = gradient_importance_naive(model64, segs, mode="answer_joint", generator=_gen(1))
    with torch.inference_mode():
        c, _ = gradient_importance_naive(model64, segs, mode="answer_joint", generator=_gen(1))
        d, _ = perturbation_importance_naive(model64, segs[:2], mode="last")
    assert torch.equal(a, b) and torch.equal(a, c) and a.abs().sum() > 0
    assert torch.equal(d, perturbation_importance_naive(model64, segs[:2], mode="last")[0])


# ---------------------------------------------------------------- model state untouched


def _attach_grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    return [p.grad.clone() for p in model.parameters()]


def test_parameter_grads_untouched(tok, segs):
    model = make_model(vocab_size=len(tok), dtype=torch.float64, seed=2)
    before = _attach_grads(model, 0)  # as if gradients had been accumulated over micro-batches
    weights = [p.detach().clone() for p in model.parameters()]
    for mode in MODES:
        perturbation_importance_naive(model, segs, mode=mode)
        gradient_importance_naive(model, segs, mode=mode, generator=_gen())
    for p, g, w in zip(model.parameters(), before, weights):
        assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)
    # and parameters without gradients stay without
    for p in model.parameters():
        p.grad = None
    gradient_importance_naive(model, segs, mode="answer_joint", generator=_gen())
    assert all(p.grad is None for p in model.parameters())


def test_training_flag_restored_and_dropout_off(tok, segs):
    model = make_model(vocab_size=len(tok), dtype=torch.float64, seed=4)
    ref_p, _ = perturbation_importance_naive(model, segs, mode="last")
    ref_g, _ = gradient_importance_naive(model, segs, mode="answer_mean", generator=_gen())
    for m in model.modules():  # heavy attention dropout: would randomise scores if left on
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.5
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back as it was, module by module
    flags = [m.training for m in model.modules()]
    got_p, _ = perturbation_importance_naive(model, segs, mode="last")
    got_g, _ = gradient_importance_naive(model, segs, mode="answer_mean", generator=_gen())
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(got_p, ref_p) and torch.equal(got_g, ref_g)


# ---------------------------------------------------------------- edge cases and bad input


@pytest.mark.parametrize("mode", MODES)
def test_empty_reasoning_and_empty_answer(model64, mode):
    segs = [
        _seg([5, 6], [], [30], [40]),  # no reasoning: nothing to score
        _seg([5, 6], [20, 21, 22], [30], []),  # no answer: scored only in mode "last"
        _seg([5, 6], [20, 21], [30], [40]),
    ]
    for scores, mask in (
        perturbation_importance_naive(model64, segs, mode=mode),
        gradient_importance_naive(model64, segs, mode=mode, generator=_gen()),
    ):
        assert scores.shape == (3, 3)
        assert mask[0].tolist() == [False] * 3
        assert mask[1].tolist() == ([True] * 3 if mode == "last" else [False] * 3)
        assert mask[2].tolist() == [True, True, False]
        assert torch.all(scores[~mask] == 0)


def test_too_long_sequence_names_response(tok):
    model = make_model(vocab_size=len(tok), max_position_embeddings=16)
    segs = [_seg([5] * 4, [20] * 4, [30], [40]), _seg([5] * 8, [20] * 8, [30], [40])]
    for fn in (perturbation_importance_naive, gradient_importance_naive):
        with pytest.raises(ValueError, match=r"segments\[1\].*response 1"):
            fn(model, segs, mode="last")
    # exactly at the context length is fine: 4 + 4 + 7 + 1 = 16 tokens
    ok = [_seg([5] * 4, [20] * 4, [30] * 7, [40])]
    perturbation_importance_naive(model, ok, mode="answer_joint")


def test_bad_inputs_name_the_argument(model64):
    seg = _seg([5, 6], [20, 21], [30], [40])
    P, G = perturbation_importance_naive, gradient_importance_naive
    cases = [
        (lambda: P(model64, seg), "segments"),  # not a list
        (lambda: P(model64, [seg, {"prompt_ids": [1]}]), r"segments\[1\]"),
        (lambda: G(model64, "abc"), "segments"),
        (lambda: P(model64, [seg], mode="mean"), "mode"),
        (lambda: G(model64, [seg], mode="joint"), "mode"),
        (lambda: G(model64, [seg], score="saliency"), "score"),
        (lambda: G(model64, [seg], noise_std=-1e-3), "noise_std"),
        (lambda: G(model64, [seg], noise_std=float("nan")), "noise_std"),
        (lambda: G(model64, [seg], noise_std="0.1"), "noise_std"),
        (lambda: G(model64, [seg], generator=123), "generator"),
        (lambda: P(model64, [seg], perturb_token=-1), "perturb_token"),
        (lambda: P(model64, [seg], perturb_token=10_000), "perturb_token"),
        (lambda: P(model64, [seg], perturb_token=1.0), "perturb_token"),
        (lambda: P(model64, [_seg([5], [20], [30], [10_000])], mode="answer_mean"), r"segments\[0\]"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()


def test_model_without_input_embeddings_is_a_type_error():
    from oar_kernels.reference import gradient_importance_naive, perturbation_importance_naive

    class NotALanguageModel(torch.nn.Module):
        def get_input_embeddings(self):
            return None

    segs = [Segments([1, 2], [3, 4], [5], [6])]
    for fn in (perturbation_importance_naive, gradient_importance_naive):
        for model in (NotALanguageModel(), torch.nn.Linear(2, 2)):
            with pytest.raises(TypeError, match="model"):
                fn(model, segs)
