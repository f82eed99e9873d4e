"""The trainer end to end on a TINY policy (not the full default run): outputs, resume, errors."""
import os
import signal

import pytest
import torch
import yaml

from oar_kernels.train import ConfigError, TrainConfig, from_dict, parse_args, train
from oar_kernels.train.__main__ import main
from tiny_models import metrics_rows as rows_of

TIME_KEYS = {"time_rollout", "time_importance", "time_step"}


def tiny_config(model, out, **over):
    base = dict(model=model, dataset="arithmetic:2-2", output_dir=str(out), max_steps=2, prompts_per_step=4,
                num_generations=4, max_completion_length=24, eval_size=4, progress=False, save_steps=1,
                reward_fn="oar_kernels.rewards:format_reward", learning_rate=1e-3, html_samples=2)
    base.update(over)
    return from_dict(base)


@pytest.mark.parametrize("algo", ["grpo", "oar-g", "oar-p"])
def test_short_run_writes_every_output(tiny_model, tmp_path, algo):
    out = tmp_path / algo
    summary = train(tiny_config(tiny_model, out, algo=algo, max_steps=3), log=lambda *a: None)
    assert summary["steps"] == 3 and 0 <= summary["accuracy_after"] <= 1
    train_rows, eval_rows = rows_of(out), rows_of(out, "eval")
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert [r["step"] for r in eval_rows] == [0, 3]
    assert all(r["eval_size"] == 4 for r in eval_rows)  # the real held-out count
    for r in train_rows:
        assert 0 <= r["reward"] <= 1 and 0 <= r["accuracy"] <= 1 and r["time_step"] > 0
        assert r["weight_min"] <= r["weight_mean"] <= r["weight_max"]
        assert r["data_position"] == r["step"] * 4
    if algo == "grpo":
        assert all(r["oar_responses"] == 0 and r["weight_std"] == 0 for r in train_rows)
    else:  # some responses were scored and got non-uniform weights
        assert sum(r["oar_responses"] for r in train_rows) > 0
        assert any(r["weight_std"] > 0 for r in train_rows)
    # resolved config: reloads to the same config
    with open(out / "config.yaml") as f:
        assert from_dict(yaml.safe_load(f)) == tiny_config(tiny_model, out, algo=algo, max_steps=3)
    assert parse_args(["--config", str(out / "config.yaml")]).algo == algo
    # checkpoint: the last one is complete, older ones pruned (save_total_limit=2)
    ckpts = sorted(os.listdir(out / "checkpoints"))
    assert ckpts == ["step-0000002.pt", "step-0000003.pt"]
    state = torch.load(out / "checkpoints" / ckpts[-1], weights_only=False)
    assert state["step"] == 3 and {"model", "optimizer", "scheduler", "rng", "data_position", "config"} <= set(state)
    assert not [p for p in os.listdir(out / "checkpoints") if ".tmp" in p]
    # plots and the weights page
    for png in ("reward.png", "accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "weights.html").read_text()
    assert page.startswith("<!doctype html>") and "boosted" in page
    if algo != "grpo":
        assert "title='w=" in page and "rgba(0,160,60" in page
        assert (out / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the same tokens as an image
    else:
        assert not (out / "weights.png").exists()
    assert os.path.isfile(out / "final" / "config.json")


@pytest.mark.parametrize("argv, key", [
    (["--tau", "1.5"], "tau"), (["--num_generations", "1"], "num_generations"), (["--max_steps", "ten"], "max_steps"),
    (["--floor", "-0.1"], "floor"), (["--learning_rate", "0"], "learning_rate"),
    (["--prompt_template", "no placeholder"], "prompt_template"), (["--epsilon_high", "-1"], "epsilon_high"),
    (["--algo=oar-g", "--noise_std", "0"], "noise_std"),
])
def test_bad_flags_fail_before_any_work_naming_the_key(argv, key, tmp_path, capsys):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        parse_args(argv + ["--output_dir", str(tmp_path / "x")])
    assert main(argv + ["--output_dir", str(tmp_path / "x")]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, key", [
    ("taux: 0.3\n", "taux"), ("tau: high\n", "tau"), ("num_generations: 2.5\n", "num_generations"),
    ("progress: 3\n", "progress"), ("algo: ppo\n", "algo"), ("- a\n- b\n", "config"),
])
def test_bad_config_file_names_the_key(text, key, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{key}:"):
        parse_args(["--config", str(path)])


def test_config_file_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("tau: 0.4\nmax_steps: 5\nscale_rewards: false\n")
    (tmp_path / "c.toml").write_text('tau = 0.4\nloss_type = "dr_grpo"\n')
    cfg = parse_args(["--config", str(tmp_path / "c.yaml"), "--max_steps", "9"])
    assert (cfg.tau, cfg.max_steps, cfg.scale_rewards) == (0.4, 9, "none")
    assert parse_args(["--config", str(tmp_path / "c.toml")]).loss_type == "dr_grpo"
    assert TrainConfig().algo == "oar-g" and TrainConfig().resolved_pfinal_mode() == "answer_mean"


def test_conclude_text_auto_follows_the_data():
    from oar_kernels.segments import DEFAULT_CONCLUDE_TEXT

    # built-in task: its own "The answer is ", so the scoring sequence is the response itself
    assert TrainConfig().resolved_conclude_text() == "The answer is "
    assert TrainConfig(dataset="arithmetic:3-3").resolved_conclude_text() == "The answer is "
    assert TrainConfig(dataset="gsm8k").resolved_conclude_text() == DEFAULT_CONCLUDE_TEXT
    assert TrainConfig(dataset="data.jsonl").resolved_conclude_text() == DEFAULT_CONCLUDE_TEXT
    from oar_kernels import build_segments
    from oar_kernels.default_job import build_char_tokenizer

    tok = build_char_tokenizer()
    response = tok.encode("3 + 17 = 20\n20 - 6 = 14\nThe answer is 14.", add_special_tokens=False) + [tok.eos_token_id]
    seg = build_segments([5, 6], response, tok, conclude_text=TrainConfig().resolved_conclude_text())
    assert seg.sequence(True).tolist() == [5, 6] + response[: len(response) - 2]  # the response up to its answer
    assert parse_args(["--conclude_text", ""]).resolved_conclude_text() == ""
    assert parse_args(["--dataset", "gsm8k", "--conclude_text", " Answer: "]).resolved_conclude_text() == " Answer: "


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in TrainConfig.__dataclass_fields__:
        assert f"--{name}" in text


def test_no_answer_gets_reward_zero_and_weights_one(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oar_kernels.rewards import accuracy_reward
    from oar_kernels.train.weights import oar_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = tok.encode("What is 12 + 30?\n", add_special_tokens=False)
    texts = ["12 + 30 = 42\nThe answer is 42.", "12 + 30 = 42 and so on"]
    rows = [(prompt, tok.encode(t, add_special_tokens=False) + [tok.eos_token_id], t, False) for t in texts]
    assert accuracy_reward(["", ""], texts, ["42", "42"]) == [1.0, 0.0]
    for algo in ("oar-g", "oar-p"):
        cfg = from_dict({"algo": algo})
        w, reasoning = oar_weights(model, tok, rows, torch.tensor([1.0, -1.0]), cfg, seed=0, stats={})
        R = len(tok.encode("12 + 30 = 42\n", add_special_tokens=False))
        assert reasoning[0, :R].all() and not reasoning[0, R:].any()
        assert (w[0, R:] == 1).all() and not torch.allclose(w[0, :R], torch.ones(R))
        assert w[0, :R].mean().item() == pytest.approx(1.0, abs=1e-4)  # sum_to_len
        assert (w[1] == 1).all() and not reasoning[1].any()  # no answer: weight 1 everywhere
    # zero advantage: not scored at all
    w, reasoning = oar_weights(model, tok, rows, torch.tensor([0.0, 0.0]), from_dict({}), seed=0, stats={})
    assert (w == 1).all() and not reasoning.any()


def test_ctrl_c_on_the_command_line_checkpoints_and_exits(tiny_model, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "cli"
    args = [sys.executable, "-m", "oar_kernels.train", "--model", tiny_model, "--dataset", "arithmetic:2-2",
            "--output_dir", str(out), "--max_steps", "500", "--prompts_per_step", "2", "--num_generations", "2",
            "--max_completion_length", "16", "--eval_size", "2", "--no-progress", "--save_steps", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and (not metrics.exists() or len(rows_of(out)) < 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-2000:]
    step = len(rows_of(out))
    assert 1 <= step < 500 and "checkpoint saved" in output
    assert os.listdir(out / "checkpoints") == [f"step-{step:07d}.pt"]


def test_fused_lm_head_logp_equals_logits_path():
    """completion_logp through oar.fused_linear_logprob (no [B, C, V] logits) equals the logits
    path in value and parameter gradients (fp32: 1e-5), temperature and padding included."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from oar_kernels.train.update import completion_logp

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=97, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 97, (3, 11))
    att = torch.ones_like(ids)
    att[0, :2] = 0  # a left-padded prompt
    att[2, -3:] = 0  # a right-padded completion
    grads = []
    for head in (None, model.get_output_embeddings()):
        model.zero_grad()
        logp = completion_logp(model, ids, att, 5, temperature=0.7, lm_head=head)
        (logp * att[:, 5:]).sum().backward()
        grads.append((logp.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_lm_head_choice(tiny_model, tmp_path):
    """auto picks the fused path only for large vocabularies; 'on' trains the same as 'off'."""
    from oar_kernels.ops.fused_head_rule import FUSED_MIN_VOCAB
    from oar_kernels.train.update import fused_lm_head
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.vocab_size < FUSED_MIN_VOCAB
    assert fused_lm_head(model, tiny_config(tiny_model, tmp_path)) is None
    assert fused_lm_head(model, tiny_config(tiny_model, tmp_path, fused_lm_head="on")) is model.get_output_embeddings()
    # a large vocabulary: on CPU, auto streams the head only once the logits would reach 1 GiB
    from transformers import LlamaConfig, LlamaForCausalLM
    from oar_kernels.ops.fused_head_rule import FUSED_CPU_MIN_BYTES

    big = LlamaForCausalLM(LlamaConfig(vocab_size=FUSED_MIN_VOCAB, hidden_size=8, intermediate_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    tokens = FUSED_CPU_MIN_BYTES // (4 * FUSED_MIN_VOCAB)
    assert fused_lm_head(big, tiny_config(tiny_model, tmp_path), tokens - 1) is None
    assert fused_lm_head(big, tiny_config(tiny_model, tmp_path), tokens) is big.get_output_embeddings()
    assert fused_lm_head(big, tiny_config(tiny_model, tmp_path, fused_lm_head="off"), tokens) is None
    # the --help text states the rule with the numbers the code uses
    import dataclasses

    from oar_kernels.ops.fused_head_rule import AUTO_RULE
    from oar_kernels.train import TrainConfig

    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}["fused_lm_head"]
    assert AUTO_RULE in help_text and str(FUSED_MIN_VOCAB) in AUTO_RULE
    assert f"{FUSED_CPU_MIN_BYTES / 2 ** 30:g} GiB" in AUTO_RULE
    runs = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        train(tiny_config(tiny_model, out, algo="oar-g", fused_lm_head=mode, save_steps=0), log=lambda *a: None)
        runs[mode] = rows_of(out)
    for a, b in zip(runs["off"], runs["on"]):
        for key in ("reward", "loss", "grad_norm", "weight_std", "weight_max"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_oarg_one_forward_step_matches_separate(tiny_model, tmp_path):
    """oarg_step='one-forward' (OARGStep: the update's forward yields the saliency) trains like
    the separate gradient_importance pass: same noise draw, same weights, loss and gradient."""
    runs = {}
    for mode in ("separate", "one-forward"):
        out = tmp_path / mode
        train(tiny_config(tiny_model, out, algo="oar-g", oarg_step=mode, save_steps=0, temperature=0.9),
              log=lambda *a: None)
        runs[mode] = rows_of(out)
    a, b = runs["separate"][0], runs["one-forward"][0]
    assert a["oar_responses"] == b["oar_responses"] > 0
    # float32: the one-forward step reads the clean teacher from the update's own forward (the
    # built-in task's conclude text is the response's), the separate pass from its own; the KL
    # mode's signal (q - p at noise 1e-3) amplifies that rounding difference, hence 1e-3 on the
    # weight statistics (in float64 the two agree to 1e-4 of the largest score: test_importance_fast)
    for key, rel in (("reward", 1e-4), ("loss", 1e-4), ("grad_norm", 1e-4), ("clip_ratio", 1e-4),
                     ("weight_mean", 1e-3), ("weight_std", 1e-3), ("weight_min", 1e-3), ("weight_max", 1e-3),
                     ("boosted_frac", 1e-3), ("suppressed_frac", 1e-3)):
        assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-6), key
    with pytest.raises(ConfigError, match="oarg_step"):
        from_dict(dict(oarg_step="fused"))
