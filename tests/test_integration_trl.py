"""OARGRPOTrainer, the TRL drop-in (oar_kernels/integrations/trl.py).

Tiny in-process models and tokenizer (tests/tiny_models.py), in-memory datasets, no hub.
Skipped test by test when TRL is not installed (the lazy-import test runs regardless).
"""
import importlib.util
import math
import subprocess
import sys

import pytest
import torch

from oar_kernels.answers import AnswerSpan

HAVE_TRL = importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None
needs_trl = pytest.mark.skipif(not HAVE_TRL, reason="trl / datasets not installed (pip install 'oar_kernels[trl]')")

G = 4  # num_generations
B = 8  # completions per generation batch: two prompts


def even_length_answer(text):
    """Test extractor: the last 3 characters are the answer when the text has an even length.

    Random tiny models never write "The answer is", so this gives every batch completions both
    with and without an answer, deterministically from the text.
    """
    if len(text) < 6 or len(text) % 2:
        return None
    s = len(text) - 3
    return AnswerSpan(text[s:], s, s, len(text))


def char_sum_reward(completions, **kwargs):
    """A reward that varies between completions of a group (so advantages are non-zero)."""
    return [float(sum(map(ord, c)) % 7) for c in completions]


@pytest.fixture(scope="module")
def tok():
    from tiny_models import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": f"Tom has {i} apples and finds {i + 3} more. How many apples are there now?"} for i in range(8)]
    )


def _model(tok):
    from tiny_models import make_model

    return make_model("qwen2", vocab_size=len(tok), seed=0)


def _common(tmp_path, **overrides):
    kw = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=B, num_generations=G, max_completion_length=10,
        max_steps=1, report_to="none", bf16=False, use_cpu=True, save_strategy="no", logging_steps=1,
        learning_rate=1e-2, gradient_checkpointing=False, loss_type="grpo", seed=0,
    )
    kw.update(overrides)
    return kw


def _oar_trainer(tok, dataset, tmp_path, model=None, **overrides):
    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

    oar = dict(oar_answer_extractor=even_length_answer)
    oar.update({k: overrides.pop(k) for k in list(overrides) if k.startswith("oar_")})
    args = OARConfig(**_common(tmp_path, **overrides), **oar)
    return OARGRPOTrainer(
        model=model if model is not None else _model(tok), reward_funcs=char_sum_reward, args=args,
        train_dataset=dataset, processing_class=tok,
    )


def _generation_inputs(dataset):
    """What TRL's sampler hands _generate_and_score_completions: each prompt G times."""
    return [dict(dataset[i]) for i in (0, 1) for _ in range(G)]


def _batch(trainer, dataset, monkeypatch):
    """One generation batch from trainer, plus the per-sequence advantages TRL computed."""
    from trl import GRPOTrainer

    seen = {}
    original = GRPOTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = original(self, inputs)
        seen["advantages"] = out["advantages"].clone()
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", spy)
    if not trainer.model.training:
        trainer.model.train()
    batch = trainer._generate_and_score_completions(_generation_inputs(dataset))
    trainer.current_gradient_accumulation_steps = 1
    return batch, seen["advantages"]


def _loss_and_grads(trainer, batch):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _token_logps(model, batch):
    """Per-token log-probs of the completion tokens, computed from full logits (no TRL code)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    am = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=am).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp[:, -batch["completion_ids"].shape[1]:]


def _expected_weights(trainer, batch, tok, advantages, algo_mode="last"):
    """OAR weights rebuilt outside the trainer: segments, OAR-P, bilevel, prefix mapping.

    The estimator is the one the trainer uses: this checks the plumbing, the estimators have
    their own tests against the naive oracles.
    """
    import oar_kernels as oar
    from oar_kernels.segments import build_segments

    args = trainer.args
    Bn, T = batch["completion_ids"].shape
    expected = torch.ones(Bn, T)
    rows, segs = [], []
    for b in range(Bn):
        n = int(batch["completion_mask"][b].sum())
        if n == 0 or float(advantages[b]) == 0:
            continue
        seg = build_segments(
            batch["prompt_ids"][b][batch["prompt_mask"][b].bool()], batch["completion_ids"][b, :n], tok,
            extractor=even_length_answer, conclude_text=args.oar_conclude_text,
        )
        if seg.answer_text is not None and seg.num_reasoning > 0:
            rows.append(b)
            segs.append(seg)
    model = trainer.model
    was = model.training
    model.eval()
    with torch.no_grad():
        scores, smask = oar.perturbation_importance(model, segs, mode=algo_mode, perturb_token=tok.pad_token_id)
    model.train(was)
    w = oar.bilevel_reshape(scores, smask, tau=args.oar_tau, beta=args.oar_beta, floor=args.oar_floor)
    for i, b in enumerate(rows):
        expected[b, : segs[i].num_reasoning] = w[i, : segs[i].num_reasoning]
    return expected, rows


# --------------------------------------------------------------------------------------


def test_import_oar_kernels_does_not_import_trl():
    code = (
        "import sys, oar_kernels, oar_kernels.integrations; "
        "assert 'trl' not in sys.modules, 'trl imported'; "
        "assert 'oar_kernels.integrations.trl' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


@needs_trl
def test_version_check():
    from oar_kernels.integrations.trl import MIN_TRL_VERSION, check_trl_version

    check_trl_version(MIN_TRL_VERSION, allow_any=False)
    for bad in ("0.20.0", "1.15.2", "2.0.0", "not-a-version"):
        with pytest.raises(ImportError, match="supports trl>="):
            check_trl_version(bad, allow_any=False)
    with pytest.warns(UserWarning, match="supports trl>="):
        check_trl_version("0.20.0", allow_any=True)


@needs_trl
@pytest.mark.parametrize(
    "field, value",
    [("oar_algo", "oar-x"), ("oar_tau", 1.5), ("oar_tau", float("nan")), ("oar_beta", -1.0), ("oar_floor", 2.0),
     ("oar_pfinal_mode", "mean"), ("oar_noise_std", -1e-3), ("oar_score", "grad"), ("oar_max_batch_tokens", 0),
     ("oar_conclude_text", 3), ("oar_answer_extractor", "no_such_module_xyz.f"), ("oar_answer_extractor", 5)],
)
def test_config_validation_names_the_field(tmp_path, field, value):
    from oar_kernels.integrations.trl import OARConfig

    with pytest.raises(ValueError, match=field):
        OARConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, **{field: value})


@needs_trl
def test_config_defaults_and_serialisation(tmp_path):
    import json

    from oar_kernels.integrations.trl import OARConfig
    from oar_kernels.segments import DEFAULT_CONCLUDE_TEXT

    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)
    g = OARConfig(**common)
    assert (g.oar_algo, g.oar_pfinal_mode) == ("oar-g", "answer_mean")
    assert (g.oar_tau, g.oar_beta, g.oar_floor, g.oar_max_batch_tokens) == (0.25, 1.0, 0.1, None)
    assert g.oar_conclude_text == DEFAULT_CONCLUDE_TEXT and g.oar_noise_std == 1e-3
    assert OARConfig(oar_algo="oar-p", **common).oar_pfinal_mode == "last"
    c = OARConfig(oar_answer_extractor=even_length_answer, **common)
    assert json.loads(c.to_json_string())["oar_answer_extractor"].endswith("even_length_answer")


@needs_trl
def test_rejects_plain_grpo_config(tok, dataset, tmp_path):
    from trl import GRPOConfig

    from oar_kernels.integrations.trl import OARGRPOTrainer

    with pytest.raises(ValueError, match="args: expected an OARConfig"):
        OARGRPOTrainer(model=_model(tok), reward_funcs=char_sum_reward, args=GRPOConfig(**_common(tmp_path)),
                       train_dataset=dataset, processing_class=tok)


@needs_trl
def test_trains_with_gradient_accumulation_and_logs_oar_metrics(tok, dataset, tmp_path):
    # gradient_accumulation_steps=2: the [B, T] advantages go through TRL's shuffle and split.
    trainer = _oar_trainer(tok, dataset, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                           max_steps=2, oar_algo="oar-g")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert torch.isfinite(torch.tensor(h["loss"]))
        for key in ("oar/scored_frac", "oar/time"):
            assert key in h
    scored = [h for h in logs if "oar/weight_mean" in h]
    assert scored, "no completion was scored in two steps"
    for h in scored:
        assert h["oar/weight_min"] <= h["oar/weight_mean"] <= h["oar/weight_max"]
        assert 0.0 <= h["oar/suppressed_frac"] <= 1.0 and h["oar/weight_std"] >= 0.0
        assert abs(h["oar/weight_mean"] - 1.0) < 1e-4  # Bi-Level rescales each row to mean 1
    changed = any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert changed


def _known_weights(Bn, T):
    """A fixed non-uniform weight pattern [Bn, T]: 0.25, 1 and 2.5 along each row."""
    levels = torch.tensor([0.25, 1.0, 2.5])
    return levels[(torch.arange(Bn)[:, None] + 2 * torch.arange(T)[None, :]) % 3]


def _batches_with_weights(trainer, dataset, monkeypatch, weights_of):
    """Two generation batches of the same completions (same seed), through the adapter's own
    _generate_and_score_completions, with its OAR weights replaced by weights_of(B, T) in the
    second and by ones in the first. Returns (ones batch, weighted batch, TRL's [B] advantages)."""
    out = []
    for fn in (lambda Bn, T: torch.ones(Bn, T), weights_of):
        def fixed(batch, references=None, fn=fn):
            Bn, T = batch["completion_ids"].shape
            return fn(Bn, T), [0.0, 0.0, 0.0, math.inf, -math.inf, 0.0, float(Bn), float(Bn), 0.0]

        monkeypatch.setattr(trainer, "oar_weights", fixed)
        torch.manual_seed(1234)
        out.append(_batch(trainer, dataset, monkeypatch))
    (ones, seq_adv), (weighted, seq_adv_w) = out
    assert torch.equal(ones["completion_ids"], weighted["completion_ids"]) and torch.equal(seq_adv, seq_adv_w)
    return ones, weighted, seq_adv


def _check_known_weights_reach_the_loss(trainer, ones, weighted, seq_adv):
    """TRL's loss on the adapter's batches against the per-token GRPO terms computed here.

    l_t = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) with rho = exp(logp - old) from
    the model's full logits; loss_type "grpo": mean over sequences of the token mean. With known
    weights w > 0 the token terms are w_t l_t, so the loss must move by exactly
    mean_i( sum_t mask (w_t - 1) l_t / n_i ).
    """
    assert trainer.loss_type == "grpo" and trainer.beta == 0.0 and trainer.top_entropy_quantile == 1.0
    model = trainer.model
    mask = ones["completion_mask"].float()
    Bn, T = mask.shape
    w = _known_weights(Bn, T)
    # the adapter's batches: A_i * 1 and A_i * w_t, per token
    assert torch.equal(ones["advantages"], seq_adv.unsqueeze(1).expand(Bn, T))
    torch.testing.assert_close(weighted["advantages"], seq_adv.unsqueeze(1) * w, rtol=0, atol=0)
    assert (seq_adv != 0).any()

    with torch.no_grad():
        logp0 = _token_logps(model, ones)
    # off-policy log-probs, so ratios differ from 1 and some clip on each side
    old = logp0 + 0.3 * torch.randn(logp0.shape, generator=torch.Generator().manual_seed(5))
    for batch in (ones, weighted):
        batch["old_per_token_logps"] = old

    loss_1, grads_1 = _loss_and_grads(trainer, ones)
    loss_w, grads_w = _loss_and_grads(trainer, weighted)
    loss_plain, grads_plain = _loss_and_grads(trainer, dict(ones, advantages=seq_adv))  # plain GRPO: [B]

    # weight 1 everywhere is plain GRPO, value and gradient
    torch.testing.assert_close(loss_1, loss_plain, rtol=0, atol=1e-7)
    for name in grads_plain:
        torch.testing.assert_close(grads_1[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)

    # per-token terms by hand
    model.zero_grad(set_to_none=True)
    logp = _token_logps(model, ones)
    rho = torch.exp(logp - old)
    a = seq_adv.unsqueeze(1).float()
    term = -torch.minimum(rho * a, rho.clamp(1 - trainer.epsilon_low, 1 + trainer.epsilon_high) * a)  # l_t, w = 1
    n = mask.sum(1).clamp(min=1.0)
    clipped = ((rho < 1 - trainer.epsilon_low) | (rho > 1 + trainer.epsilon_high)) & (mask > 0)
    assert clipped.any() and (~clipped & (mask > 0)).any()
    by_hand_1 = ((term * mask).sum(1) / n).mean()
    expected_shift = (((w - 1) * term * mask).sum(1) / n).mean()
    torch.testing.assert_close(loss_1, by_hand_1.detach(), rtol=1e-4, atol=1e-6)
    assert abs(expected_shift.item()) > 1e-2 * max(abs(loss_1.item()), 1e-2)  # the weights must matter
    torch.testing.assert_close(loss_w - loss_1, expected_shift.detach(), rtol=1e-4, atol=1e-6)

    # and the gradient is the one of the weighted per-token terms
    ((w * term * mask).sum(1) / n).mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads_w[name], p.grad, rtol=1e-3, atol=1e-5, msg=name)


@needs_trl
def test_known_token_weights_reach_trl_loss(tok, dataset, tmp_path, monkeypatch):
    """A known non-uniform weight through the adapter's batch moves TRL's loss by exactly the
    hand-computed amount; weight 1 reproduces plain GRPO's loss and gradient."""
    trainer = _oar_trainer(tok, dataset, tmp_path, oar_algo="oar-p")
    ones, weighted, seq_adv = _batches_with_weights(trainer, dataset, monkeypatch, _known_weights)
    _check_known_weights_reach_the_loss(trainer, ones, weighted, seq_adv)


@needs_trl
def test_per_token_advantages_reach_the_loss(tok, dataset, tmp_path, monkeypatch):
    import oar_kernels as oar

    # OAR-P: deterministic scores; a small token budget splits its scoring into several forwards
    trainer = _oar_trainer(tok, dataset, tmp_path, oar_algo="oar-p", oar_max_batch_tokens=256)
    batch, seq_adv = _batch(trainer, dataset, monkeypatch)
    expected_w, rows = _expected_weights(trainer, batch, tok, seq_adv)
    assert rows, "no completion had an answer and a non-zero advantage"
    assert len(rows) < (seq_adv != 0).sum(), "every completion scored: the weight-1 rows are not exercised"
    assert not torch.allclose(expected_w, torch.ones_like(expected_w))
    torch.testing.assert_close(batch["advantages"], seq_adv.unsqueeze(1) * expected_w, rtol=1e-5, atol=1e-6)
    # completions without an answer keep weight 1 everywhere
    for b in set(range(B)) - set(rows):
        assert torch.equal(batch["advantages"][b], seq_adv[b].expand(batch["advantages"].shape[1]))

    loss, grads = _loss_and_grads(trainer, batch)

    # The same loss from first principles: oar.grpo_loss on log-probs of the full logits.
    model = trainer.model
    model.zero_grad(set_to_none=True)
    logp = _token_logps(model, batch)
    mask = batch["completion_mask"].bool()
    ref_loss, _ = oar.grpo_loss(logp, None, seq_adv, mask, weights=expected_w, loss_type="grpo")
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-4, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-3, atol=1e-5, msg=name)

    # ... and it is not plain GRPO's gradient.
    _, grads_seq = _loss_and_grads(trainer, dict(batch, advantages=seq_adv))
    diff = max((grads[n] - grads_seq[n]).abs().max().item() for n in grads)
    scale = max(grads_seq[n].abs().max().item() for n in grads_seq)
    assert diff > 1e-3 * scale


@needs_trl
def test_scoring_touches_no_parameter_grad_and_restores_training_flag(tok, dataset, tmp_path, monkeypatch):
    trainer = _oar_trainer(tok, dataset, tmp_path, oar_algo="oar-g")
    model = trainer.model
    sentinel = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone()
    model.train()
    model.model.layers[0].eval()  # a submodule deliberately in eval mode keeps its flag
    batch, seq_adv = _batch(trainer, dataset, monkeypatch)
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, sentinel[n]), n
    assert batch["advantages"].dim() == 2


@needs_trl
def test_eval_mode_keeps_sequence_advantages(tok, dataset, tmp_path):
    trainer = _oar_trainer(tok, dataset, tmp_path, oar_algo="oar-g")
    trainer.model.eval()
    trainer.args.num_generations_eval = G
    trainer.num_generations_eval = G
    batch = trainer._generate_and_score_completions(_generation_inputs(dataset))
    assert batch["advantages"].dim() == 1


@needs_trl
def test_liger_path_applies_token_weights(tok, dataset, tmp_path, monkeypatch):
    """use_liger_kernel=True (docs of oar_kernels/integrations/trl.py): TRL swaps in Liger's layer
    kernels only, keeps its own loss path (no fused linear cross-entropy), so the adapter's
    per-token weights move the liger-patched model's loss and gradient exactly as on the plain path.

    On CPU, Liger's kernels run in Triton's interpreter, where its RMSNorm and SwiGLU kernels
    fail; only RoPE is applied there. On a GPU every default Liger kernel is applied.
    """
    pytest.importorskip("liger_kernel")
    from transformers.models.qwen2 import modeling_qwen2

    # Liger patches modeling_qwen2's globals: restore them after the test.
    for name, value in list(vars(modeling_qwen2).items()):
        if not name.startswith("__"):
            monkeypatch.setattr(modeling_qwen2, name, value)
    original_rope = modeling_qwen2.apply_rotary_pos_emb
    liger_config = None if torch.cuda.is_available() else {"rms_norm": False, "swiglu": False}
    trainer = _oar_trainer(tok, dataset, tmp_path, oar_algo="oar-p", use_liger_kernel=True,
                           liger_kernel_config=liger_config)
    assert trainer.args.liger_kernel_config["fused_linear_cross_entropy"] is False  # TRL keeps its loss path
    # generation first (interpreted kernels make sampling slow), then what Trainer.train() does first
    # with use_liger_kernel=True: patch the model with the kernels of args.liger_kernel_config.
    ones, weighted, seq_adv = _batches_with_weights(trainer, dataset, monkeypatch, _known_weights)
    from transformers.integrations.liger import apply_liger_kernel

    apply_liger_kernel(trainer.model, trainer.args.liger_kernel_config)
    assert modeling_qwen2.apply_rotary_pos_emb is not original_rope, "Liger's RoPE was not applied"
    trainer.model.train()
    _check_known_weights_reach_the_loss(trainer, ones, weighted, seq_adv)
