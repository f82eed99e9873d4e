"""Every Triton kernel compiles for real GPUs (sm_80, sm_90) at the launchers' configurations.

benchmarks/compile_check.py does the work (see its docstring): it drives each launcher with
CUDA-like meta tensors, records the launches, compiles them with triton.compile for
GPUTarget("cuda", 80 / 90, 32) and reads ptxas' report. The kernels must be imported with
TRITON_INTERPRET unset, and this test session has it set (tests/conftest.py), so every
compile runs in a subprocess. About a minute on 2 cores (the first test); the rest show that
each failure condition is caught.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the compile check needs Triton (the gpu / dev extras)")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compile_check as cc  # noqa: E402  (importable here; it only refuses to compile)


def _clean_env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "compile.json"
    r = _run(["benchmarks/compile_check.py", "--targets", "80,90", "--json", str(out)])
    report = r.stdout[-6000:] + r.stderr[-3000:]
    assert out.exists(), report
    data = json.loads(out.read_text())
    variants = data["variants"]
    assert data["problems"] == [], report
    assert r.returncode == 0, report
    kernels = {v["kernel"].split(":")[1] for v in variants}
    assert {"_fused_fwd_kernel", "_chunk_stats_kernel", "_chunk_dlogits_kernel",
            "_bilevel_row_kernel", "_saliency_kernel"} <= kernels
    for kernel in kernels:
        for target in (80, 90):
            assert any(v["kernel"].endswith(kernel) and v["target"] == target for v in variants)
    # every variant was measured: registers from ptxas, shared memory from the metadata
    assert all(v["registers"] and v["shared"] is not None and v["spill_bytes"] == 0 for v in variants)
    # the 16-bit fused forward uses tensor cores on both targets
    half = [v for v in variants if v["kernel"].endswith("_fused_fwd_kernel") and v["dtype"] in ("bf16", "fp16")]
    assert half and all(v["expects_mma"] and v["has_mma"] for v in half)


def test_oversized_block_and_spilling_config_fail_the_check():
    """A real compile: the bf16 fused forward at 256 x 256 x 128 blocks and 4 stages needs more
    shared memory than an A100 block may have; at the old 4-warp default it spills."""
    code = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "benchmarks")
        import compile_check as cc
        base = [la for la in cc.record_launches(108)
                if la.case == "fused_forward gpu_check bias=True entropy=True" and la.dtype == "bf16"][0]
        def with_(**kw):
            return cc.Launch(base.kernel, base.case, base.dtype, base.args, {**base.kwargs, **kw})
        launches = [with_(BLOCK_N=256, BLOCK_V=256, BLOCK_D=128, num_stages=4),
                    with_(BLOCK_N=64, BLOCK_V=128, BLOCK_D=64, num_warps=4, num_stages=3)]
        variants, problems = cc.check(targets=(80,), processes=2, launches=launches)
        print(json.dumps({"problems": problems, "shared": [v.shared for v in variants],
                          "spills": [v.spill_bytes for v in variants]}))
    """)
    r = _run(["-c", code], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["shared"][0] > cc.SHARED_LIMIT[80]
    assert any(p.startswith("shared memory") for p in res["problems"]), res
    assert res["spills"][1] > 0 and any(p.startswith("spills") for p in res["problems"]), res
    # the two launches are the only ones: the other kernels are reported as never launched
    assert sum(p.startswith("kernel launched by no case") for p in res["problems"]) == 4, res


def _variant(**kw):
    base = dict(kernel="m:_k", target=90, dtype="bf16", config="", cases=["case"], expects_mma=True,
                registers=128, spill_bytes=0, shared=1024, num_warps=4, has_mma=True)
    base.update(kw)
    return cc.Variant(**base)


@pytest.mark.parametrize("bad,message", [
    (dict(shared=232_449), "shared memory"),
    (dict(target=80, shared=166_913), "shared memory"),
    (dict(registers=255, num_warps=16), "registers"),
    (dict(has_mma=False), "16-bit tl.dot without tensor-core"),
    (dict(spill_bytes=8), "spills"),
    (dict(error="CompilationError: boom"), "compile error"),
    (dict(registers=None), "no ptxas register report"),
])
def test_each_condition_fails(bad, message):
    assert cc.problems([_variant()], {"m:_k": None}, {"m:_k"}) == []
    probs = cc.problems([_variant(**bad)], {"m:_k": None}, {"m:_k"})
    assert len(probs) == 1 and probs[0].startswith(message), probs


def test_at_the_limits_passes():
    ok = [_variant(target=80, shared=166_912), _variant(shared=232_448),
          _variant(registers=128, num_warps=16), _variant(expects_mma=False, has_mma=False)]
    assert cc.problems(ok, {"m:_k": None}, {"m:_k"}) == []


def test_unlaunched_kernel_fails():
    probs = cc.problems([_variant()], {"m:_k": None, "m:_new_kernel": None}, {"m:_k"})
    assert probs == ["kernel launched by no case: m:_new_kernel"]


def test_ptxas_report_parsing():
    log = ("ptxas info    : Function properties for _k\n"
           "    8 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 8 bytes cumulative stack size\n")
    assert cc._parse_ptxas(log) == (255, 12)
    assert cc._parse_ptxas("ptxas info    : Used 40 registers, used 0 barriers\n") == (40, 0)
    assert cc._parse_ptxas("") == (None, None)
