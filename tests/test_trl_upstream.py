"""A fixed subset of TRL's own GRPOTrainer tests, run against OARGRPOTrainer (OAR on and off).

Runs scripts/trl_suite.py (which obtains TRL's tests for the installed release, builds local
stand-ins for their hub models and data sets, and swaps GRPOTrainer for OARGRPOTrainer with a
pytest plugin; see docs/integrations.md, "TRL's own tests") on the tests below, which exercise
the trainer's public surface: construction from a config with only model / reward / data set,
a training step with a checkpoint save, evaluation during training, and logging of reward
metrics. A TRL release that breaks the subclass fails here.

Where TRL's tests come from: OAR_TRL_TESTS_SOURCE (a local TRL git repository, source tree or
.tar.gz; OAR_TRL_TESTS_REF picks its revision, default v<installed version>), else the
installed release's source distribution when it has tests/, else a shallow clone of TRL's
repository at tag v<installed version>; cached under ~/.cache/oar_kernels/trl_suite. The test
is skipped, with the reason, only when none of these can be reached (no network and no local
source); any other problem fails it.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "trl_suite.py"

HAVE_TRL = importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None

# TRL test ids (inside TRL's test_grpo_trainer.py) that must run and pass in both modes.
SUBSET = [
    "TestGRPOTrainer::test_init_minimal",  # config defaults: model, reward model and data set only
    "TestGRPOTrainer::test_train_dataset_format[conversational_prompt_only]",  # a train step, a checkpoint save
    "TestGRPOTrainer::test_train_with_eval",  # evaluation during training (TRL's per-sequence advantages)
    "TestGRPOTrainer::test_train_reward_func_with_log_metric",  # logging through the trainer's metrics
]
MODES = ("on", "off")
UNREACHABLE = ("could not resolve", "unable to access", "connection", "network", "timed out", "no route",
               "temporary failure", "name or service", "failed to establish")


@pytest.mark.skipif(not HAVE_TRL, reason="trl / datasets not installed (pip install 'oar_kernels[trl]')")
def test_trl_grpo_tests_pass_against_oar_trainer(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--modes", ",".join(MODES), "--jobs", "2", "--out", str(tmp_path),
           "--no-baseline", "--timeout", "600", "--tests", *SUBSET]
    if os.environ.get("OAR_TRL_TESTS_SOURCE"):
        cmd += ["--source", os.environ["OAR_TRL_TESTS_SOURCE"]]
    if os.environ.get("OAR_TRL_TESTS_REF"):
        cmd += ["--ref", os.environ["OAR_TRL_TESTS_REF"]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode == 2 and "cannot obtain TRL's tests" in proc.stderr:
        message = proc.stderr.strip().splitlines()[-1]
        if any(word in message.lower() for word in UNREACHABLE) and not os.environ.get("OAR_TRL_TESTS_SOURCE"):
            pytest.skip("TRL's tests cannot be fetched from here (the installed release's source distribution "
                        "has no tests/ and TRL's repository is unreachable); set OAR_TRL_TESTS_SOURCE to a local "
                        f"TRL checkout to run them. {message}")
    assert proc.returncode == 0, f"trl_suite.py exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    for mode in MODES:
        by_test = {nodeid.split("::", 1)[1]: rec for nodeid, rec in results["tests"][mode].items()}
        for name in SUBSET:
            assert name in by_test, f"OAR {mode}: TRL's test {name} was not collected (renamed upstream?)"
            rec = by_test[name]
            assert rec["outcome"] == "passed", f"OAR {mode}: {name} {rec['outcome']}: {rec.get('reason')}"


# A tests file written here in the form TRL's take (a class of tests importing GRPOConfig and
# GRPOTrainer from trl, the hub model and data set ids TRL's tests use): the whole mechanism of
# scripts/trl_suite.py (source tree, offline stand-ins, the swap, results.json) runs in CI even
# where TRL's own tests cannot be fetched.
TRL_STYLE_TESTS = '''
import torch
from datasets import load_dataset

from trl import GRPOConfig, GRPOTrainer


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


class TestGRPOTrainer:
    def test_train_one_step(self, tmp_path):
        dataset = load_dataset("trl-internal-testing/zen", "standard_prompt_only", split="train")
        args = GRPOConfig(output_dir=str(tmp_path), learning_rate=0.1, per_device_train_batch_size=3,
                          num_generations=3, max_completion_length=8, max_steps=1, report_to="none",
                          bf16=False)
        trainer = GRPOTrainer(model="trl-internal-testing/tiny-Qwen2ForCausalLM-2.5", reward_funcs=length_reward,
                              args=args, train_dataset=dataset)
        assert type(trainer).__name__ == "OARGRPOTrainer"
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        assert trainer.state.log_history[-1]["train_loss"] is not None
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())

    def test_fails_on_purpose(self):
        assert GRPOTrainer.__name__ == "GRPOTrainer"  # the swap makes this false
'''


@pytest.mark.skipif(not HAVE_TRL, reason="trl / datasets not installed (pip install 'oar_kernels[trl]')")
def test_the_suite_mechanism_runs_a_trl_style_tests_file(tmp_path):
    tree = tmp_path / "trl-tree"
    (tree / "tests").mkdir(parents=True)
    (tree / "tests" / "test_grpo_trainer.py").write_text(TRL_STYLE_TESTS)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--modes", "on,off", "--jobs", "2", "--out", str(out), "--no-baseline",
           "--timeout", "600", "--source", str(tree), "--cache", str(tmp_path / "cache"), "--allow-failures"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"trl_suite.py exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    results = json.loads((out / "results.json").read_text())
    for mode in MODES:
        by_test = {nodeid.split("::", 1)[1]: rec["outcome"] for nodeid, rec in results["tests"][mode].items()}
        assert by_test == {"TestGRPOTrainer::test_train_one_step": "passed",
                           "TestGRPOTrainer::test_fails_on_purpose": "failed"}, (mode, by_test)
