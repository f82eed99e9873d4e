"""oar.perturbation_importance, oar.gradient_importance and the OAR-G training step against the
naive oracles of oar_kernels.reference.importance, on tiny in-process models (CPU).

Tolerances: max |diff| <= 1e-4 * max |oracle score| in float64 (the scores themselves are
returned as float32) and in float32 (same tolerance for OAR-P); bf16 is compared with the
float64 oracle of the same weights, loosely (bf16 activations).
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import oar_kernels as oar  # noqa: E402
from oar_kernels.importance import OARGStep, oarg_step  # noqa: E402
from oar_kernels.reference import gradient_importance_naive, perturbation_importance_naive  # noqa: E402
from oar_kernels.segments import Segments  # noqa: E402
from tiny_models import make_model, make_segments, make_tokenizer  # noqa: E402

MODES = ("last", "answer_mean", "answer_joint")
ARCHS = ("qwen2", "llama")
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Many small ops: on shared cores one thread beats two (no OpenMP barrier stalls).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def segs(tok):
    # ragged: prompt 2..10, reasoning 1..9, conclude 1..8, answer 0..3 tokens
    return make_segments(tok, 5, seed=11, max_reasoning=9)


_MODELS = {}


def model(arch="qwen2", dtype=torch.float64, attn="eager"):
    key = (arch, dtype, attn)
    if key not in _MODELS:
        m = make_model(arch, dtype=dtype)
        m.config._attn_implementation = attn
        _MODELS[key] = m
    return _MODELS[key]


def assert_close(got, want, tol=TOL):
    scale = float(want.abs().max()) if want.numel() else 0.0
    diff = float((got - want).abs().max()) if want.numel() else 0.0
    assert diff <= tol * max(scale, 1e-30), f"max diff {diff:.3e} > {tol} x max score {scale:.3e}"


# ------------------------------------------------------------------------------ OAR-P


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", MODES)
def test_perturbation_equals_oracle_fp64(arch, mode, segs):
    m = model(arch)
    want, wmask = perturbation_importance_naive(m, segs, mode)
    assert wmask.any()
    # 1 token per forward forces one suffix per chunk (many chunks); 24 packs a few
    budgets = [(True, 8192), (True, 24), (True, 1), (False, 8192)] + ([(False, 1)] if arch == "qwen2" else [])
    for reuse, budget in budgets:
        got, gmask = oar.perturbation_importance(m, segs, mode, max_batch_tokens=budget, prefix_reuse=reuse)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert torch.equal(gmask, wmask)
        assert_close(got, want)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_perturbation_fp32_and_sdpa(attn, segs):
    m = model("llama", torch.float32, attn)
    for mode in ("last",) if attn == "sdpa" else ("answer_joint",):
        want, wmask = perturbation_importance_naive(m, segs, mode)
        got, gmask = oar.perturbation_importance(m, segs, mode, max_batch_tokens=40)
        assert torch.equal(gmask, wmask)
        assert_close(got, want, TOL)


def test_perturbation_bf16_runs(segs):
    segs = segs[:3]
    want, wmask = perturbation_importance_naive(model("qwen2"), segs, "last")
    got, gmask = oar.perturbation_importance(model("qwen2", torch.bfloat16), segs, "last", max_batch_tokens=32)
    assert torch.equal(gmask, wmask) and torch.isfinite(got).all()
    assert_close(got, want, 0.25)  # bf16 activations against the float64 oracle


def test_perturbation_custom_token_and_head_only_where_needed(segs):
    m = model("qwen2")
    want, _ = perturbation_importance_naive(m, segs, "answer_mean", perturb_token=7)
    rows = []
    hook = m.get_output_embeddings().register_forward_hook(lambda mod, i, o: rows.append(i[0].shape[:-1].numel()))
    try:
        got, mask = oar.perturbation_importance(m, segs, "answer_mean", perturb_token=torch.tensor(7))
    finally:
        hook.remove()
    assert_close(got, want)
    # LM head rows: A per scored response for the clean pass + A per perturbation, nothing more
    expected = sum((s.num_reasoning + 1) * s.answer_ids.numel() for s, ok in zip(segs, mask.any(1)) if ok)
    assert sum(rows) == expected


@pytest.mark.parametrize("reuse", [True, False])
def test_perturbation_head_calls_batched_and_bounded(reuse, segs, monkeypatch):
    from oar_kernels.importance import perturbation as pm

    m = model("qwen2")
    want, _ = perturbation_importance_naive(m, segs, "answer_mean")
    head_calls, body_calls = [], []
    h1 = m.get_output_embeddings().register_forward_hook(lambda mod, i, o: head_calls.append(i[0].shape[0]))
    h2 = m.get_decoder().register_forward_hook(lambda mod, i, o: body_calls.append(1))
    try:
        got, _ = oar.perturbation_importance(m, segs, "answer_mean", prefix_reuse=reuse)
        assert_close(got, want)
        # the positions of a whole forward go through the head in one call
        assert len(head_calls) == len(body_calls)
        # a cap of one logits row: one call per item (a response's clean pass, or a block of
        # perturbations, never split), the same scores
        head_calls.clear(), body_calls.clear()
        vocab = m.get_output_embeddings().weight.shape[0]
        monkeypatch.setattr(pm, "HEAD_LOGITS_BYTES", vocab * 8)
        got1, _ = oar.perturbation_importance(m, segs, "answer_mean", prefix_reuse=reuse)
        assert len(head_calls) > len(body_calls)
        assert_close(got1, want)
    finally:
        h1.remove(), h2.remove()


@pytest.mark.parametrize("mode", MODES)
def test_perturbation_ragged_rows_leave_the_batch(mode):
    """Rows with little reasoning run out of perturbations first: the rounds then run only the
    rows still busy (views of the cache), with the same scores."""
    g = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(3, 90, (n,), generator=g)  # noqa: E731
    lengths = [2, 30, 1, 12, 25, 4]  # reasoning; batch order is not the order of work
    segs = [Segments(ids(3 + i % 3), ids(r), ids(2), ids(2), answer_text="x") for i, r in enumerate(lengths)]
    m = model("llama")
    want, wmask = perturbation_importance_naive(m, segs, mode)
    rows_per_call = []
    hook = m.get_decoder().register_forward_hook(
        lambda mod, i, kw, o: rows_per_call.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        got, gmask = oar.perturbation_importance(m, segs, mode, max_batch_tokens=4096)
    finally:
        hook.remove()
    assert torch.equal(gmask, wmask)
    assert_close(got, want)
    assert rows_per_call[0] == len(segs)  # the unperturbed pass
    assert rows_per_call[1:] == sorted(rows_per_call[1:], reverse=True)
    assert rows_per_call[-1] == 1  # at the end only the longest response is left


def test_perturbation_long_reasoning_many_chunks(tok):
    segs = make_segments(tok, 3, seed=5, max_prompt=6, max_reasoning=40)
    m = model("llama")
    want, _ = perturbation_importance_naive(m, segs, "last")
    got, _ = oar.perturbation_importance(m, segs, "last", max_batch_tokens=64)
    assert_close(got, want)


# ------------------------------------------------------------------------------ OAR-G


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", MODES)
def test_gradient_equals_oracle_fp64(arch, mode, segs):
    m = model(arch)
    score = "grad_x_input" if arch == "qwen2" else "grad_norm"
    torch.manual_seed(3)
    want, wmask = gradient_importance_naive(m, segs, mode, score=score)
    torch.manual_seed(3)
    got, gmask = oar.gradient_importance(m, segs, mode, score=score)
    assert torch.equal(gmask, wmask)
    assert_close(got, want)
    if arch == "qwen2":  # seeded generator; 30 tokens per forward: batches of 1-3 responses
        want, _ = gradient_importance_naive(m, segs, mode, noise_std=1e-2, generator=torch.Generator().manual_seed(1))
        got, _ = oar.gradient_importance(
            m, segs, mode, noise_std=1e-2, generator=torch.Generator().manual_seed(1), max_batch_tokens=30
        )
        assert_close(got, want)
    for p in m.parameters():
        assert p.grad is None


def test_gradient_fp32_bf16(segs):
    m32 = model("qwen2", torch.float32)
    want, _ = gradient_importance_naive(m32, segs, "answer_joint", generator=torch.Generator().manual_seed(0))
    got, _ = oar.gradient_importance(m32, segs, "answer_joint", generator=torch.Generator().manual_seed(0))
    assert_close(got, want, 1e-3)  # fp32: first-order mode; the KL modes' signal is noise-limited
    got16, mask16 = oar.gradient_importance(model("qwen2", torch.bfloat16), segs, "answer_joint", noise_std=0.0)
    want64, mask64 = gradient_importance_naive(model("qwen2"), segs, "answer_joint", noise_std=0.0)
    assert torch.equal(mask16, mask64) and torch.isfinite(got16).all()
    assert_close(got16, want64, 0.3)


def test_gradient_eval_mode_and_grads_untouched(segs):
    m = make_model("llama", dtype=torch.float64)
    m.config.attention_dropout = 0.5
    for layer in m.model.layers:
        layer.self_attn.attention_dropout = 0.5
    m.train()
    m.model.layers[0].eval()  # a mixed state must come back as it was
    p0 = next(m.parameters())
    p0.grad = torch.ones_like(p0)
    got, _ = oar.gradient_importance(m, segs, "answer_joint", noise_std=0.0)
    assert m.training and not m.model.layers[0].training and m.model.layers[1].training
    assert torch.equal(p0.grad, torch.ones_like(p0))  # accumulated grads survive
    assert all(p.grad is None for p in list(m.parameters())[1:])
    m.eval()
    want, _ = gradient_importance_naive(m, segs, "answer_joint", noise_std=0.0)
    assert_close(got, want)  # dropout was off while scoring


# ------------------------------------------------------------------------------ training step


def _responses(segs):
    g = torch.Generator().manual_seed(0)
    return [torch.cat([s.reasoning_ids, torch.randint(3, 500, (i % 4,), generator=g), torch.tensor([1])]) for i, s in enumerate(segs)]


def _plain_logp(m, segs, resps, temperature=1.0):
    B = len(segs)
    P = [s.prompt_ids.numel() for s in segs]
    N = [r.numel() for r in resps]
    T, Nm = max(p + n for p, n in zip(P, N)), max(N)
    ids = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        ids[b, : P[b] + N[b]] = torch.cat([segs[b].prompt_ids, resps[b]])
    lp = torch.log_softmax(m(input_ids=ids).logits / temperature, -1)
    logp = torch.zeros(B, Nm, dtype=lp.dtype)
    mask = torch.zeros(B, Nm, dtype=torch.bool)
    for b in range(B):
        idx = torch.arange(N[b]) + P[b] - 1
        logp[b, : N[b]] = lp[b, idx, ids[b, idx + 1]]
        mask[b, : N[b]] = True
    return logp, mask


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", MODES)
def test_step_gradients_equal_separate_grpo(arch, mode, segs):
    m = make_model(arch, dtype=torch.float64).train()
    resps = _responses(segs)
    adv = torch.linspace(-1, 1, len(segs), dtype=torch.float64)
    # noise 1e-2: the KL modes' signal is q - p of two near-equal distributions, whose rounding
    # is amplified by 1 / noise on these peaked tiny models (docs/importance.md)
    torch.manual_seed(0)
    out = OARGStep(m, mode=mode, noise_std=1e-2)(segs, resps)
    assert all(p.grad is None for p in m.parameters())  # the saliency backward touched none
    # scores: answer_joint is OAR-G at zero noise; the KL modes (kl_grad="exact") the oracle's
    torch.manual_seed(0)
    want, wmask = gradient_importance_naive(m, segs, mode, noise_std=0.0 if mode == "answer_joint" else 1e-2)
    assert torch.equal(out.score_mask, wmask)
    assert_close(out.scores, want)
    w = oar.bilevel_reshape(out.scores, out.score_mask)
    assert torch.equal(out.weights[:, : w.shape[1]][out.score_mask], w[out.score_mask])
    loss, _ = out.loss(adv, loss_type="grpo")
    loss.backward()
    g_step = [p.grad.clone() for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    logp, mask = _plain_logp(m, segs, resps)
    assert torch.equal(mask, out.mask)
    assert float((logp - out.logp).detach()[mask].abs().max()) < 1e-12
    loss2, _ = oar.grpo_loss(logp, None, adv, mask, weights=out.weights.double(), loss_type="grpo")
    loss2.backward()
    for a, p in zip(g_step, m.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kl_grad", ["exact", "linearized"])
@pytest.mark.parametrize("arch", ARCHS)
def test_step_noisy_pass_packs_short_chunks(arch, kl_grad):
    """The KL modes' noisy pass packs several short chunks (each with its own prompt) into one
    batch row of the longest chunk's length; the scores stay the oracle's."""
    g = torch.Generator().manual_seed(5)
    ids = lambda n: torch.randint(3, 90, (n,), generator=g)  # noqa: E731
    lengths = [(4, 20), (7, 3), (2, 5), (5, 2), (3, 9), (6, 1)]  # (prompt, reasoning)
    segs = [Segments(ids(p), ids(r), ids(2), ids(2), answer_text="x") for p, r in lengths]
    resps = _responses(segs)
    m = make_model(arch, dtype=torch.float64).train()
    batch_rows = []
    hook = m.get_decoder().register_forward_hook(
        lambda mod, i, kw, o: batch_rows.append(kw["inputs_embeds"].shape[0]) if kw.get("inputs_embeds") is not None
        and any(kw.get(k) is not None for k in ("cache", "past_key_values")) and kw.get("attention_mask") is not None else None, with_kwargs=True)
    # linearized: a relative O(noise_std) away from the oracle (test_step_linearized_kl)
    kw = dict(noise_std=1e-2) if kl_grad == "exact" else dict(noise_std=1e-4, score="grad_norm")
    try:
        torch.manual_seed(0)
        out = OARGStep(m, mode="answer_mean", kl_grad=kl_grad, **kw)(segs, resps)
    finally:
        hook.remove()
    # chunks of 23, 6, 8, 5, 12, 4 tokens into rows of 23: {23}, {12, 8}, {6, 5, 4} -> 3 rows
    assert batch_rows == [3]
    torch.manual_seed(0)
    want, wmask = gradient_importance_naive(m, segs, "answer_mean", **kw)
    assert torch.equal(out.score_mask, wmask)
    assert_close(out.scores, want, TOL if kl_grad == "exact" else 0.1)


@pytest.mark.parametrize("mode", ["last", "answer_mean"])
def test_step_linearized_kl(mode, segs):
    """kl_grad="linearized": the noisy cotangent pulled back through the clean policy graph;
    a relative O(noise_std) away from the oracle, and the parameter gradients still exact."""
    m = model("llama")
    resps = _responses(segs)
    torch.manual_seed(0)
    out = OARGStep(m, mode=mode, noise_std=1e-4, kl_grad="linearized", score="grad_norm")(segs, resps)
    assert all(p.grad is None for p in m.parameters())
    torch.manual_seed(0)
    want, wmask = gradient_importance_naive(m, segs, mode, noise_std=1e-4, score="grad_norm")
    assert torch.equal(out.score_mask, wmask)
    assert_close(out.scores, want, 0.1)
    out.loss(torch.ones(len(segs), dtype=torch.float64))[0].backward()
    g_step = [p.grad.clone() for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    logp, mask = _plain_logp(m, segs, resps)
    oar.grpo_loss(logp, None, torch.ones(len(segs), dtype=torch.float64), mask, weights=out.weights.double())[0].backward()
    for a, p in zip(g_step, m.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-9, atol=1e-12)
    m.zero_grad(set_to_none=True)


def test_step_sdpa_and_bf16(segs):
    m = make_model("qwen2", dtype=torch.float64)
    m.config._attn_implementation = "sdpa"
    resps = _responses(segs)
    torch.manual_seed(1)
    out = OARGStep(m, mode="answer_mean", noise_std=1e-2)(segs, resps)
    torch.manual_seed(1)
    want, wmask = gradient_importance_naive(m, segs, "answer_mean", noise_std=1e-2)
    assert torch.equal(out.score_mask, wmask)
    assert_close(out.scores, want)
    logp, mask = _plain_logp(m, segs, resps)
    assert float((logp - out.logp).detach()[mask].abs().max()) < 1e-12
    m16 = make_model("llama", dtype=torch.bfloat16).train()
    out16 = OARGStep(m16, mode="last")(segs, resps)
    assert torch.isfinite(out16.scores).all() and torch.isfinite(out16.weights).all()
    out16.loss(torch.ones(len(segs)))[0].backward()
    assert all(torch.isfinite(p.grad).all() for p in m16.parameters() if p.grad is not None)


@pytest.mark.parametrize("mode", MODES)
def test_step_reads_shared_continuation_without_branch(mode, tok):
    # an empty conclude text and responses that go on with the answer (the built-in task's
    # shape): the teacher comes from the policy row itself, no branch forward is run, and the
    # scores and gradients stay the oracle's / the separate GRPO step's
    base = make_segments(tok, 4, seed=5, max_reasoning=7)
    empty = torch.zeros(0, dtype=torch.long)
    segs = [Segments(s.prompt_ids, s.reasoning_ids, empty, s.answer_ids) for s in base]
    resps = [torch.cat([s.reasoning_ids, s.answer_ids, torch.tensor([1])]) for s in segs]
    segs.insert(1, Segments(base[1].prompt_ids, [], empty, base[1].answer_ids))  # not scored: left out
    resps.insert(1, torch.cat([base[1].answer_ids, torch.tensor([1])]))         # of the noisy batch
    segs.append(base[0])  # one row with a conclude text: that row alone needs the branch
    resps.append(torch.cat([base[0].reasoning_ids, torch.tensor([1])]))
    m = make_model("llama", dtype=torch.float64).train()
    calls = []
    hook = m.model.register_forward_pre_hook(lambda mod, args, kw: calls.append(any(kw.get(k) is not None for k in ("cache", "past_key_values"))
                                                                                and kw.get("input_ids") is not None),
                                             with_kwargs=True)
    try:
        for rows, want_branch in ((slice(0, 5), False), (slice(0, 6), True)):
            calls.clear()
            torch.manual_seed(0)
            out = OARGStep(m, mode=mode, noise_std=1e-2)(segs[rows], resps[rows])
            assert any(calls) == want_branch  # the branch is the only call fed input_ids on a cache
            torch.manual_seed(0)
            want, wmask = gradient_importance_naive(m, segs[rows], mode, noise_std=0.0 if mode == "answer_joint" else 1e-2)
            assert torch.equal(out.score_mask, wmask) and wmask[0].any() and not wmask[1].any()
            assert_close(out.scores, want)
    finally:
        hook.remove()


def test_step_functional_and_empty_rows(tok):
    segs = make_segments(tok, 3, seed=2, max_reasoning=6)
    empty = Segments(segs[0].prompt_ids, [], segs[0].conclude_ids, segs[0].answer_ids)
    segs = [segs[0], empty, segs[1]]
    resps = [torch.cat([s.reasoning_ids, torch.tensor([5, 1])]) for s in segs]
    m = model("qwen2")
    out = oarg_step(m, segs, resps, mode="answer_joint")
    assert not out.score_mask[1].any()
    assert torch.equal(out.weights[1], torch.ones_like(out.weights[1]))
    assert out.logp.requires_grad and out.logp.shape == out.mask.shape == out.weights.shape


# ------------------------------------------------------------------------------ bad input


def test_empty_reasoning_gives_empty_scores(tok):
    s = make_segments(tok, 2, seed=4)
    empty = Segments(s[0].prompt_ids, [], s[0].conclude_ids, s[0].answer_ids)
    segs = [empty, s[1]]
    m = model("qwen2")
    for fn in (oar.perturbation_importance, oar.gradient_importance):
        scores, mask = fn(m, segs, mode="last")
        assert not mask[0].any() and mask[1].any()
        w = oar.bilevel_reshape(scores, mask)
        assert torch.equal(w[0], torch.ones_like(w[0]))
    scores, mask = oar.perturbation_importance(m, [empty], mode="last")
    assert scores.shape == (1, 0) and mask.shape == (1, 0)


def test_too_long_names_response(tok):
    s = make_segments(tok, 2, seed=4)
    long = Segments(list(range(3, 253)), list(range(3, 13)), s[0].conclude_ids, s[0].answer_ids)
    m = model("qwen2")  # context 256
    for fn in (oar.perturbation_importance, oar.gradient_importance):
        with pytest.raises(ValueError, match="response 1"):
            fn(m, [s[0], long], mode="last")
    with pytest.raises(ValueError, match="response 1"):
        OARGStep(m, mode="last")([s[0], long], [s[0].reasoning_ids, long.reasoning_ids])


class _NoEmbeddings(torch.nn.Module):
    def get_input_embeddings(self):
        return None


def test_bad_arguments(segs):
    m = model("qwen2")
    for fn in (oar.perturbation_importance, oar.gradient_importance):
        with pytest.raises(TypeError, match="get_input_embeddings"):
            fn(_NoEmbeddings(), segs)
        with pytest.raises(TypeError, match="get_input_embeddings"):
            fn(torch.nn.Linear(2, 2), segs)
        with pytest.raises(ValueError, match="mode"):
            fn(m, segs, mode="first")
        with pytest.raises(ValueError, match="max_batch_tokens"):
            fn(m, segs, mode="last", max_batch_tokens=0)
        with pytest.raises(ValueError, match="segments"):
            fn(m, [segs[0], "x"], mode="last")
    with pytest.raises(ValueError, match="score"):
        oar.gradient_importance(m, segs, score="grad")
    with pytest.raises(ValueError, match="noise_std"):
        oar.gradient_importance(m, segs, noise_std=-1.0)
    with pytest.raises(ValueError, match="perturb_token"):
        oar.perturbation_importance(m, segs, perturb_token=10**6)
    with pytest.raises(TypeError, match="get_input_embeddings"):
        OARGStep(_NoEmbeddings())
    with pytest.raises(ValueError, match="mode"):
        OARGStep(m, mode="x")
    with pytest.raises(ValueError, match="kl_grad"):
        OARGStep(m, kl_grad="approx")
    with pytest.raises(ValueError, match="response_ids"):
        OARGStep(m)(segs, [s.prompt_ids for s in segs])


def test_step_fused_head_matches_logits(segs):
    """fused_head=True (oar.fused_linear_logprob, no [B, N, V] logits) gives the logits path's
    log-probs (fp32: 1e-5) and parameter gradients (fp32: rtol 1e-4); bad values are rejected."""
    m = make_model("llama", dtype=torch.float32).train()
    resps = _responses(segs)
    adv = torch.linspace(-1, 1, len(segs))
    grads = []
    for fused in (False, True):
        m.zero_grad(set_to_none=True)
        out = OARGStep(m, mode="answer_joint", fused_head=fused)(segs, resps)
        loss, _ = out.loss(adv)
        loss.backward()
        grads.append((out.logp.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="fused_head"):
        OARGStep(m, fused_head="yes")
    # auto: large vocabularies only, and on CPU only once the logits would reach 1 GiB
    from transformers import LlamaConfig, LlamaForCausalLM

    from oar_kernels.ops.fused_head_rule import FUSED_CPU_MIN_BYTES, FUSED_MIN_VOCAB

    big = LlamaForCausalLM(LlamaConfig(vocab_size=FUSED_MIN_VOCAB, hidden_size=8, intermediate_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    step, head = OARGStep(big), big.get_output_embeddings()
    tokens = FUSED_CPU_MIN_BYTES // (4 * FUSED_MIN_VOCAB)
    assert not step._fused_head(head, tokens - 1) and step._fused_head(head, tokens)
    assert not OARGStep(m)._fused_head(m.get_output_embeddings(), 10**9)  # small vocabulary
    assert OARGStep(big, fused_head=True)._fused_head(head, 1)


@pytest.mark.parametrize("fused", [False, True])
def test_step_temperature_scales_policy_logits_only(segs, fused):
    """temperature divides the policy logits of logp (both head paths); the scores do not move."""
    m = make_model("llama", dtype=torch.float32).train()
    resps = _responses(segs)
    a = OARGStep(m, mode="answer_joint", fused_head=fused)(segs, resps)
    b = OARGStep(m, mode="answer_joint", fused_head=fused, temperature=0.7)(segs, resps)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    logp, mask = _plain_logp(m, segs, resps, temperature=0.7)
    torch.testing.assert_close(b.logp.detach()[mask], logp.detach()[mask], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        OARGStep(m, temperature=0.0)
