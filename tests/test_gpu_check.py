"""benchmarks/gpu_check.py, the one command of a short GPU window, runs every section in its CPU
dry run (Triton interpreter, tiny sizes) and exits 0, with the table on disk; an absent baseline
is a "missing" row, not a failure. Plus the traffic model's arithmetic."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
gpu_check = load_benchmark("gpu_check")
harness = load_benchmark("harness")


def test_dry_run_every_section_with_liger_hidden(tmp_path):
    stub = tmp_path / "hide" / "liger_kernel"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("liger_kernel hidden by tests/test_gpu_check.py")\n')
    out = tmp_path / "gc.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(stub.parent), os.environ.get("PYTHONPATH")) if p))
    env.pop("TRITON_INTERPRET", None)  # the dry run sets it itself
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run-cpu", "--out", str(out), "--wheels="],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    table = out.read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| op ")]
    assert "correctness failures: 0" in table and "in progress" not in table
    assert any(ln.startswith("| preflight | device |") for ln in rows)
    for mode in gpu_check.OURS:  # both forward modes, forward only and fwd+bwd
        assert any(ln.startswith("| logprob fwd |") and f"| {mode}: fwd " in ln for ln in rows), mode
        assert any(ln.startswith("| logprob |") and f"| {mode}: fwd+bwd " in ln for ln in rows), mode
    for p in ("fused fwd", "chunked fwd", "bwd"):
        assert any(ln.startswith("| traffic model |") and f"| {p}: " in ln for ln in rows), p
    for axis in ("vocab", "rows"):  # the backward's two axes, timed back to back
        assert any(ln.startswith("| logprob bwd axis |") and f"| backward over {axis}: fwd+bwd " in ln for ln in rows), axis
    assert any("liger_kernel: missing (ImportError: liger_kernel hidden" in ln for ln in rows)
    assert any("| liger: missing (" in ln for ln in rows)  # the baseline rows say so too
    assert any(ln.startswith("| kernel tests |") and "tests collected" in ln for ln in rows)
    for op in ("bilevel_reshape", "saliency_probe", "perturbation_importance", "OARGStep", "rl_step", "trainer step"):
        assert any(ln.startswith(f"| {op} |") for ln in rows), op  # every other script's rows came through
    assert not [ln for ln in rows if "(error:" in ln or "| error:" in ln], table


def test_traffic_model_counts():
    N, D, V = 8192, 4096, 131072
    m = gpu_check.traffic_model(N, D, V, 2, 512 << 20, block_n=64, block_v=128, sms=132)
    gemm = 2 * N * D * V
    assert m["fused fwd"]["flops"] == m["chunked fwd"]["flops"] == gemm and m["bwd"]["flops"] == 3 * gemm
    # 1024-row chunks of 512 MiB fp32 logits: the weight read 8 times, the logits written and read once
    assert m["chunked fwd"]["bytes"] == N * D * 2 + 8 * V * D * 2 + 2 * N * V * 4
    # 128 row blocks x 3 vocabulary splits over 132 SMs: 3 waves, each reading the weight once
    assert m["fused fwd"]["bytes"] == N * D * 2 + 3 * V * D * 2
    assert m["fused fwd"]["l2_bytes"] > 10 * m["fused fwd"]["bytes"]
    # the backward moves at least the fp32 logits twice and d logits three times
    assert m["bwd"]["bytes"] > N * V * (8 + 3 * 2)


def test_foreign_gpu_rows_stream_and_keep_their_budget():
    """The foreign section's rows are handed to emit as they are made, and with no time left
    what has not started is skipped (saying so) instead of run."""
    seen = []
    rows = gpu_check.bilevel_rows("cpu", batch=3, seq=40, long_shape=(1, 70), repeats=1, emit=seen.append, budget_s=0)
    assert seen == rows and len(rows) == 3  # the speed row, then each correctness shape skipped
    assert all("skipped (time budget spent)" in r.metric for r in rows[1:])


def test_trainer_gpu_rows_stream_without_a_budget():
    """trainer_rows with no budget (its default) runs each trainer to the end, each in its own
    process (baselines.trainer_step through harness.run_child)."""
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    seen = []
    rows = gpu_check.trainer_rows("cpu", steps=2, hidden=32, layers=1, gens=2, prompts=2, completion=8, threads=1,
                                  emit=seen.append)
    assert seen == rows and len(rows) == 3 and all(r.ok and r.value > 0 for r in rows), rows


def test_stream_kills_at_its_timeout():
    """The child-process runner (the kernel tests'): lines come as they are printed; past the
    timeout the child and its own children are killed and the status is None."""
    lines = []
    code = "import subprocess, sys, time; print('started', flush=True); subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    t0 = time.monotonic()
    assert harness.stream([sys.executable, "-c", code], 2, lines.append) is None
    assert lines == ["started"] and time.monotonic() - t0 < 30
    assert harness.stream([sys.executable, "-c", "print('x')"], 30, lines.append) == 0 and lines[-1] == "x"


def test_install_wheels_offline(tmp_path):
    """Carried wheels are installed without an index into a folder that comes first on sys.path
    and on the PYTHONPATH of subprocesses; a wheel for another Python is left out and named."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "oar_probe_pkg-0.1-py3-none-any.whl", "w") as z:
        z.writestr("oar_probe_pkg/__init__.py", "X = 1\n")
        info = "oar_probe_pkg-0.1.dist-info/"
        z.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: oar-probe-pkg\nVersion: 0.1\n")
        z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(info + "RECORD", "")
    (tmp_path / "other-0.1-cp27-cp27mu-manylinux1_x86_64.whl").write_bytes(b"")
    code = ("import os, subprocess, sys; sys.path.insert(0, 'benchmarks'); import gpu_check; "
            f"print(gpu_check.install_wheels({str(tmp_path)!r})); import oar_probe_pkg; print(oar_probe_pkg.X); "
            "subprocess.run([sys.executable, '-c', 'import oar_probe_pkg'], check=True)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    note, x = r.stdout.strip().splitlines()[-2:]
    assert note.startswith("1 installed into ") and "oar_probe_pkg-0.1" in note and "not for this Python: other-0.1" in note
    assert x == "1"
