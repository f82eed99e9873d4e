"""Issue 22 point 1: what a run needs is checked before any model load or evaluation, and a
missing piece is one `config error` line, exit 2, within seconds, nothing written."""
import importlib.util
import time

import pytest

from oar_kernels.train.__main__ import main


def _run(capsys, tmp_path, *flags):
    out = tmp_path / "out"
    t = time.time()
    rc = main([*flags, "--output_dir", str(out), "--progress", "false"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("oar_kernels.train: config error: "), err
    assert not out.exists()
    assert time.time() - t < 30
    return lines[0]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_rollout_without_vllm(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--rollout", "vllm")
    assert "rollout: 'vllm' needs the vllm package" in line and "--rollout hf" in line


def test_hub_dataset_offline(capsys, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    line = _run(capsys, tmp_path, "--dataset", "gsm8k")
    assert "dataset: 'openai/gsm8k' is not a local folder and not in the hub cache" in line


def test_prompt_longer_than_context(capsys, tmp_path):
    pytest.importorskip("reasoning_gym")
    line = _run(capsys, tmp_path, "--dataset", "gsm_symbolic:50", "--eval_size", "5")
    assert "max_position_embeddings=256" in line and "a model with a longer context" in line


def test_completion_too_long_names_the_smaller_length(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--max_completion_length", "250")
    assert "+ max_completion_length 250" in line and "a smaller --max_completion_length (at most " in line


def test_cuda_without_cuda(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    line = _run(capsys, tmp_path, "--device", "cuda")
    assert "CUDA is not available" in line


def test_reward_fn_that_does_not_import(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--reward_fn", "no_such_module:f")
    assert "reward_fn: cannot import" in line
