"""The runnable examples in python/ run end to end on tiny sizes (so they cannot rot)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "python"
HAVE_TRL = importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None


def run_example(script, *flags, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *flags], cwd=str(ROOT), env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert out.stdout.rstrip().endswith("done"), out.stdout[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory):
    """A tiny model and tokenizer saved as a normal local model folder."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from tiny_setup import char_tokenizer, tiny_model
    finally:
        sys.path.remove(str(EXAMPLES))
    path = tmp_path_factory.mktemp("tiny_model")
    tok = char_tokenizer()
    tiny_model(tok, hidden_size=32, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_plain_pytorch_loop_oar_g():
    out = run_example("plain_pytorch_loop.py", "--steps", "2", "--num-generations", "4",
                      "--prompts-per-step", "2", "--max-new-tokens", "10")
    lines = [line for line in out.splitlines() if line.startswith("step=")]
    assert len(lines) == 2
    assert any(" scored=0/" not in line for line in lines), "OAR scored nothing"


def test_plain_pytorch_loop_oar_p_local_model(local_model_dir):
    out = run_example("plain_pytorch_loop.py", "--model", str(local_model_dir), "--algo", "oar-p", "--steps", "1",
                      "--num-generations", "2", "--prompts-per-step", "2", "--max-new-tokens", "8")
    assert "step=1 " in out


@pytest.mark.skipif(not HAVE_TRL, reason="trl / datasets not installed (pip install 'oar_kernels[trl]')")
def test_trl_example_tiny():
    out = run_example("trl_oar_grpo.py", "--steps", "1", "--num-generations", "4", "--prompts-per-step", "2",
                      "--max-completion-length", "10")
    assert "step=1 " in out and "oar/scored_frac=" in out


@pytest.mark.skipif(not HAVE_TRL, reason="trl / datasets not installed (pip install 'oar_kernels[trl]')")
def test_trl_example_local_model_and_dataset(local_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    with open(data, "w") as f:
        for a in range(4):
            f.write(json.dumps({"question": f"Q: {a}+1=? A:", "solution": str(a + 1)}) + "\n")
    out_dir = tmp_path / "out"
    out = run_example("trl_oar_grpo.py", "--model", str(local_model_dir), "--dataset", str(data),
                      "--prompt-field", "question", "--answer-field", "solution", "--extractor",
                      "tiny_setup.last_number", "--algo", "oar-p", "--steps", "1", "--num-generations", "2",
                      "--prompts-per-step", "2", "--max-completion-length", "8", "--output-dir", str(out_dir))
    assert "step=1 " in out
    assert (out_dir / "config.json").exists()
