"""The default job's policy: shipped in the package, built by the project's warm-start script,
and used only while its recipe key matches the recipe in the code."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oar_kernels.default_job import policy
from oar_kernels.default_job import SHIPPED_DIR, WarmStartRecipe, default_policy_path, folder_recipe_key, load_default_policy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "warm_start_default_policy.py"
TINY = dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, steps=3, batch_size=4, warmup_steps=1,
            num_threads=1)


def test_shipped_weights_carry_the_current_recipe_key():
    with open(os.path.join(SHIPPED_DIR, policy.RECIPE_FILE)) as f:
        meta = json.load(f)
    recipe = WarmStartRecipe()
    assert meta["key"] == recipe.key()
    assert meta["recipe"] == {k: v for k, v in recipe.__dict__.items()}  # every field, not only the hash
    res = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_shipped_policy_loads_without_a_warm_start(monkeypatch, tmp_path):
    def no_build(*a, **k):
        raise AssertionError("the default recipe must not be warm-started: its weights ship with the package")

    monkeypatch.setattr(policy, "build_default_policy", no_build)
    model, tok, path = load_default_policy(cache_dir=str(tmp_path), progress=False, log=lambda *a: None)
    assert path == SHIPPED_DIR and not list(tmp_path.iterdir())  # nothing written to the cache
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 < n < 800_000, n  # the ~0.5M-parameter policy the README describes
    size = os.path.getsize(os.path.join(SHIPPED_DIR, "model.safetensors"))
    assert size < 4 * 1024 * 1024, size
    ids = tok("12 + 30 = ", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_another_recipe_is_warm_started_into_the_cache(tmp_path):
    recipe = WarmStartRecipe(**TINY)
    path = default_policy_path(str(tmp_path), recipe)
    assert path != SHIPPED_DIR and path.startswith(str(tmp_path)) and recipe.key() in path
    model, tok, got = load_default_policy(cache_dir=str(tmp_path), recipe=recipe, progress=False, log=lambda *a: None)
    assert got == path and folder_recipe_key(path) == recipe.key()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written atomically, nothing left over
    assert model.config.hidden_size == 16


def test_warm_start_script_is_deterministic(tmp_path):
    """A short warm start through the script: same recipe, same weights; another seed, others."""
    from safetensors.torch import load_file

    def run(out, seed):
        args = [sys.executable, str(SCRIPT), "--out", str(out), "--no-progress", "--seed", str(seed)]
        for k, v in TINY.items():
            args += [f"--{k}", str(v)]
        res = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return load_file(str(out / "model.safetensors"))

    a, b, c = run(tmp_path / "a", 0), run(tmp_path / "b", 0), run(tmp_path / "c", 1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert folder_recipe_key(str(tmp_path / "a")) == WarmStartRecipe(**TINY).key()


def test_default_run_computes_the_same_at_1_and_2_threads(tmp_path):
    """The default job's figures must not depend on the thread count (which the trainer picks from
    the machine's load): a short run of the shipped policy at 1 and 2 threads gives the same
    held-out accuracy and per-step losses, gradient norms and rewards (bitwise on the machines
    measured; a relative 1e-6 is allowed for BLAS builds that split sums by thread)."""
    from oar_kernels.train import from_dict, train

    rows, before = {}, torch.get_num_threads()
    try:
        for n in (1, 2):
            out = tmp_path / f"t{n}"
            cfg = from_dict(dict(output_dir=str(out), max_steps=2, prompts_per_step=2, num_generations=4,
                                 eval_size=16, progress=False, save_steps=0, num_threads=n, html_samples=0))
            train(cfg, log=lambda *a: None)
            with open(out / "metrics.jsonl") as f:
                rows[n] = [json.loads(line) for line in f]
    finally:
        torch.set_num_threads(before)  # the trainer sets it for the process
    assert [r["kind"] for r in rows[1]] == [r["kind"] for r in rows[2]]
    for a, b in zip(rows[1], rows[2]):
        for key in ("eval_accuracy", "reward", "completion_length", "loss", "grad_norm", "weight_std"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
