"""num_iterations (TRL's mu): several optimizer steps on one generation batch, the sampling
policy's log-probs kept from the first, the ratio clipped from the second on, OAR weights
computed once per generation batch. With num_iterations=1 the update is plain on-policy GRPO."""
import signal

import pytest
import torch

from oar_kernels.train import from_dict, train
from oar_kernels.train.distributed import Dist
from oar_kernels.train.generation import Rollout, SampledRow
from oar_kernels.train.loop import Run
from oar_kernels.train.update import update
from tiny_models import metrics_rows as rows_of, trainer_settings

QUIET = dict(log=lambda *a: None)


def settings(model, out, **over):
    return trainer_settings(model, out, **{"max_steps": 4, "save_steps": 0, **over})


def _run_and_batch(model_path, **cfg_over):
    """A one-process Run over the tiny policy with SGD(lr=1) (parameter change = -gradient), and a
    hand-made batch of 4 responses with non-uniform weights and advantages."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = from_dict({"model": model_path, "max_grad_norm": 0.0, "num_generations": 2, "prompts_per_step": 2,
                     "temperature": 0.8, **cfg_over})
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    run = Run(cfg=cfg, dist=Dist(), device=torch.device("cpu"), model=model, wrapped=model, tokenizer=tok, opt=opt,
              sched=sched, task=None, eval_examples=[], reward_fn=None)
    prompts = ["What is 2 + 3?\n", "What is 7 + 1?\n"]
    texts = ["2 + 3 = 5\nThe answer is 5.", "2 + 3 = 6\nThe answer is 6.", "7 + 1 = 8\nThe answer is 8.",
             "7 + 1 = 9\nThe answer is 9. ok"]
    rows = [SampledRow(tok.encode(prompts[i // 2], add_special_tokens=False),
                       tok.encode(t, add_special_tokens=False) + [tok.eos_token_id], t, False)
            for i, t in enumerate(texts)]
    C = max(len(r.response_ids) for r in rows)
    g = torch.Generator().manual_seed(0)
    weights = 0.5 + torch.rand((4, C), generator=g)
    batch = Rollout(index=0, prompts=[prompts[i // 2] for i in range(4)], answers=["5", "5", "8", "8"], rows=rows,
                    rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]), correct=torch.tensor([1.0, 0.0, 1.0, 0.0]),
                    advantages=torch.tensor([0.7, -0.7, 1.3, -0.4]), weights=weights,
                    reasoning=torch.ones((4, C), dtype=torch.bool))
    return run, batch


def _plain_logp(model, rows, temperature):
    """[B, C] log-probs of each response token, one row at a time, from the logits (no padding)."""
    C = max(len(r.response_ids) for r in rows)
    out = torch.zeros((len(rows), C))
    mask = torch.zeros((len(rows), C), dtype=torch.bool)
    per_row = []
    for i, (p, resp, _, _) in enumerate(rows):
        ids = torch.tensor([p + resp])
        logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float() / temperature
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(resp)[:, None])[:, 0]
        per_row.append(lp)
        mask[i, : len(resp)] = True
    return per_row, mask


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_one_iteration_is_the_plain_on_policy_weighted_step(tiny_model):
    """Parameter change of update() = -gradient of -(1/B) sum_i mean_t A_i w_it logp_it, computed
    from the logits row by row: the ratio is 1, nothing is clipped, weights and advantages reach
    the gradient exactly."""
    run, batch = _run_and_batch(tiny_model)
    before = _params(run.model)
    out = update(run, batch, iteration=0)
    delta = [b - a for a, b in zip(_params(run.model), before)]  # = gradient (SGD, lr 1)
    assert out["clip_ratio"] == 0.0 and batch.old_logp is None

    ref = _run_and_batch(tiny_model)[0].model
    per_row, _ = _plain_logp(ref, batch.rows, 0.8)
    surrogate = -sum(batch.advantages[i] * (batch.weights[i, : len(lp)] * lp).mean() for i, lp in enumerate(per_row)) / 4
    surrogate.backward()
    for d, p in zip(delta, ref.parameters()):
        torch.testing.assert_close(d, p.grad, rtol=2e-4, atol=1e-6)
    assert out["loss"] == pytest.approx(-float(sum(batch.advantages[i] * batch.weights[i, : len(lp)].mean()
                                                   for i, lp in enumerate(per_row)) / 4), rel=1e-5)
    # a weight change of one token changes the gradient (the weights are not dropped)
    run2, batch2 = _run_and_batch(tiny_model)
    batch2.weights[0, 0] += 3.0
    update(run2, batch2, iteration=0)
    assert not torch.allclose(_params(run2.model)[0], _params(run.model)[0])


def test_second_iteration_clips_against_the_sampling_policy(tiny_model):
    """num_iterations=2: the first update keeps the sampling policy's log-probs (no extra forward),
    the second one's loss is the clipped surrogate against them, computed here by hand."""
    run, batch = _run_and_batch(tiny_model, num_iterations=2, epsilon=0.05)
    sampling = _run_and_batch(tiny_model)[0].model
    with torch.no_grad():
        old_rows, mask = _plain_logp(sampling, batch.rows, 0.8)
    update(run, batch, iteration=0)
    for i, lp in enumerate(old_rows):
        torch.testing.assert_close(batch.old_logp[i, : len(lp)], lp, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        new_rows, _ = _plain_logp(run.model, batch.rows, 0.8)
    expected, clipped, n = 0.0, 0, 0
    for i, (old, new) in enumerate(zip(old_rows, new_rows)):
        a = batch.advantages[i] * batch.weights[i, : len(new)]
        ratio = torch.exp(new - old)
        expected += -torch.minimum(ratio * a, ratio.clamp(0.95, 1.05) * a).mean() / 4
        clipped += int((((ratio < 0.95) & (a < 0)) | ((ratio > 1.05) & (a > 0))).sum())
        n += len(new)
    out = update(run, batch, iteration=1)
    assert clipped > 0  # SGD with lr 1 moves the policy far: the test is about clipping
    assert out["loss"] == pytest.approx(float(expected), rel=1e-4)
    assert out["clip_ratio"] == pytest.approx(clipped / n)


def test_num_iterations_in_a_run(tiny_model, tmp_path, monkeypatch):
    """Two updates per generation batch: generations 0,0,1,1; clipping live on the second update;
    OAR importance scored once per generation batch; the weights' statistics shared by both."""
    from oar_kernels.train import weights as weights_module

    calls = []
    real = weights_module.score_segments

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(weights_module, "score_segments", counted)
    out = tmp_path / "mu2"
    train(from_dict(settings(tiny_model, out, num_iterations=2, epsilon=0.01, learning_rate=1e-2,
                             oarg_step="separate")), **QUIET)
    rows = rows_of(out)
    assert [(r["generation"], r["iteration"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["data_position"] for r in rows] == [4, 4, 8, 8]
    assert all(r["clip_ratio"] == 0 for r in rows[::2]) and any(r["clip_ratio"] > 0 for r in rows[1::2])
    # one importance pass per generation batch that has scored responses (one generate call each)
    assert len(calls) == sum(1 for r in rows[::2] if r["oar_responses"]) >= 1
    for first, second in zip(rows[::2], rows[1::2]):
        for key in ("reward", "weight_std", "weight_max", "oar_responses"):
            assert first[key] == second[key]
    assert any(a["loss"] != b["loss"] for a, b in zip(rows[::2], rows[1::2]))  # the policy moved in between


def test_one_forward_oarg_weights_are_reused_on_the_second_iteration(tiny_model, tmp_path):
    out = tmp_path / "one-forward"
    train(from_dict(settings(tiny_model, out, num_iterations=2, oarg_step="one-forward", max_steps=6)), **QUIET)
    rows = rows_of(out)
    assert any(r["oar_responses"] > 0 and r["weight_std"] > 0 for r in rows)
    for a, b in zip(rows[::2], rows[1::2]):
        assert (a["weight_std"], a["weight_min"], a["weight_max"]) == (b["weight_std"], b["weight_min"], b["weight_max"])


def test_ctrl_c_between_two_updates_of_one_batch_resumes_exactly(tiny_model, tmp_path):
    """A checkpoint taken after the first of two updates keeps the generation batch (responses,
    weights, sampling log-probs); the resumed run equals the uninterrupted one."""
    ref, out = tmp_path / "ref", tmp_path / "cut"
    over = dict(num_iterations=2, epsilon=0.05, learning_rate=1e-2)
    train(from_dict(settings(tiny_model, ref, **over)), **QUIET)

    def ctrl_c(step):
        if step == 1:
            signal.raise_signal(signal.SIGINT)

    train(from_dict(settings(tiny_model, out, **over)), step_hook=ctrl_c, **QUIET)
    state = torch.load(out / "checkpoints" / "step-0000001.pt", weights_only=False)
    assert state["rollouts"] and state["rollouts"][0]["old_logp"] is not None
    train(from_dict(settings(tiny_model, out, resume_from_checkpoint="last", **over)), **QUIET)
    a, b = rows_of(ref), rows_of(out)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        for key in ("reward", "loss", "clip_ratio", "grad_norm", "weight_std", "weight_max", "generation"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["step"], key)
    assert any(r["clip_ratio"] > 0 for r in a)
