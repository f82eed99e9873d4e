"""Data parallelism: `torchrun --nproc_per_node 2` (gloo, CPU) follows the single-process
curve for the same global batch and seed."""
import os
import subprocess
import sys

import pytest
from tiny_models import metrics_rows

pytestmark = pytest.mark.skipif(not __import__("torch").distributed.is_available(),
                                reason="needs torch.distributed")


def _args(model, out, algo):
    return ["--model", model, "--dataset", "arithmetic:2-2", "--output_dir", str(out), "--algo", algo,
            "--max_steps", "2", "--prompts_per_step", "4", "--num_generations", "4", "--generation_batch_size", "8",
            "--max_completion_length", "32", "--eval_size", "2", "--no-progress", "--save_steps", "0",
            "--reward_fn", "oar_kernels.rewards:format_reward", "--learning_rate", "1e-3"]


@pytest.mark.parametrize("algo, fsdp, iterations", [("oar-g", False, 1), ("oar-g", True, 1), ("oar-p", True, 1),
                                                     ("oar-p", False, 2)])
def test_two_processes_match_one(tiny_model, tmp_path, algo, fsdp, iterations):
    """DDP and FSDP2 over 2 gloo processes vs 1 process, same global batch. The FSDP runs
    cover the GRPO loss too, and OAR scoring under sharding (the full-parameter block); the
    num_iterations=2 run the sampling log-probs kept per process and the clipped second update."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    # one process, two micro-batches (the 2-process run has one micro-batch per process)
    extra = ["--num_iterations", str(iterations), "--epsilon", "0.02"] if iterations > 1 else []
    r1 = subprocess.run([sys.executable, "-m", "oar_kernels.train", *_args(tiny_model, one, algo), *extra,
                         "--gradient_accumulation_steps", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "oar_kernels.train", *_args(tiny_model, two, algo), *extra, *(["--fsdp"] if fsdp else [])],
                        env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = metrics_rows(one), metrics_rows(two)
    assert [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        # the same responses, scored alike ...
        for key in ("reward", "completion_length", "oar_responses"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), (ra["step"], key)
        # ... with the same weights' spread (from step 2 on the parameters differ by the all-reduce's
        # float32 rounding, which the KL mode's q - p signal at noise 1e-3 amplifies: 1e-3)
        for key in ("weight_std", "weight_min", "weight_max", "boosted_frac"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-3, abs=1e-5), (ra["step"], key)
        # ... and the same update: loss and gradient norm (before clipping) of the whole batch
        for key in ("loss", "grad_norm", "clip_ratio"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-3, abs=1e-5), (ra["step"], key)
    # what is compared is informative: responses were weighted, the weights spread, the gradients
    # differ between steps (an on-policy loss is about 0 by construction: its gradient is compared)
    assert sum(r["oar_responses"] for r in a) > 0 and any(r["weight_std"] > 0.05 for r in a)
    assert all(r["grad_norm"] > 1e-3 for r in a) and abs(a[0]["grad_norm"] - a[1]["grad_norm"]) > 1e-3
    if iterations > 1:  # one generation batch, two updates: the second one clips, its loss is not ~0
        assert [r["generation"] for r in a] == [0, 0] and a[0]["clip_ratio"] == 0 < a[1]["clip_ratio"]
        assert abs(a[1]["loss"]) > 1e-3
