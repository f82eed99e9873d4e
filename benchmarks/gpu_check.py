"""One command for a GPU machine: correctness spot checks of the fused ops and the GPU benchmarks.

    python benchmarks/gpu_check.py --out gpu_check.md
    python benchmarks/gpu_check.py --dry-run-cpu        # every code path, tiny sizes, on CPU

0. The kernel test-suite compiled on the GPU: `pytest --gpu -m kernels tests/` (tests/conftest.py),
   before anything else (a dry run only collects it).
1. Spot checks on the device (small, non-power-of-two shapes, fp32 and bf16):
   fused_linear_logprob (+ entropy, temperature, bias, split vocabulary) against
   oar.reference.linear_logprob_reference; fused_linear_grpo_loss against oar.grpo_loss on
   reference log-probs (each loss_type, OAR weights) and against liger's
   LigerFusedLinearGRPOLoss (uniform weights).
2. Side by side, fwd+bwd, bf16, at N=16384 D=2048 V=151936 and at liger's published Hopper
   shape M=8192 H=4096 V=131072: fused_linear_logprob (with and without entropy) and
   fused_linear_grpo_loss against every baseline of benchmarks/lm_head_baselines.py (TRL's
   ChunkedLogProbFunction, liger's LigerFusedLinearScaledCrossEntropyFunction and its
   LigerFusedLinearGRPOLoss compiled, Cut Cross-Entropy exact where installed, eager and
   torch.compile'd eager): time (CUDA events, median), peak memory above the inputs, achieved
   TFLOP/s of the useful LM-head GEMMs (3 x 2NDV) against the measured rate of one bf16 GEMM of
   the same shape. A baseline that cannot be had is a "missing" row, not a failure.
3. The fused forward kernel's candidate configurations (num_warps 4 / 8; tf32x3 and tf32 for
   fp32 inputs) timed, forward only, so kernels/linear_logprob.py's FWD_CONFIG can be chosen.
4. Rows of gpu_rows(device) from benchmarks/bench_bilevel.py, bench_saliency.py,
   bench_importance.py, rl_step.py (the full RL step, OAR vs GRPO) and bench_trainer.py
   (OARGRPOTrainer vs TRL's GRPOTrainer per step) when those modules exist.

Sized for one H100/H200 in under 8 minutes (--budget-s 450: later rows are skipped, and said
so, past it). Every row is printed as it comes and --out is rewritten after each, so a run
cut short still leaves its table.
Prints one table and writes it as markdown to --out. Without a GPU it says so and exits 0.
Exit status 1 when a correctness check fails (missed speed/memory targets do not change it).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def _row(op, shape, metric, value, target, ok, kind="check"):
    return {"op": op, "shape": shape, "metric": metric, "value": value, "target": target, "ok": bool(ok), "kind": kind}


def _err_row(op, shape, metric, exc, kind="check"):
    msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return _row(op, shape, f"{metric} (error: {msg})", None, "", False, kind)


# ----------------------------------------------------------------------------- measurement


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats=5, warmup=1):
    """Median seconds of fn() (CUDA events on a GPU)."""
    import torch

    for _ in range(warmup):
        out = fn()
        del out
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            out = fn()
            e.record()
            torch.cuda.synchronize(device)
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def peak_bytes(fn, device):
    """Peak memory fn() allocates above what is allocated before it (CUDA); None on CPU."""
    import torch

    if device.type != "cuda":
        out = fn()
        del out
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def _max_rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ----------------------------------------------------------------------------- spot checks


def correctness_rows(device, dry: bool):
    import torch

    import oar_kernels as oar
    from oar_kernels.ops import fused_linear_logprob as lp_mod
    from oar_kernels.reference.logprob import linear_logprob_reference

    backend = "triton"  # the kernels, on the GPU or (dry run) in the interpreter
    rows = []
    gen = torch.Generator().manual_seed(0)
    N, D, V = (37, 40, 301) if dry else (300, 192, 1037)

    def make(n, d, v, dtype):
        h = torch.randn(n, d, generator=gen).to(device, dtype).requires_grad_(True)
        w = (torch.randn(v, d, generator=gen) * (3 / math.sqrt(d))).to(device, dtype).requires_grad_(True)
        b = torch.randn(v, generator=gen).to(device, dtype).requires_grad_(True)
        t = torch.randint(0, v, (n,), generator=gen).to(device)
        return h, w, b, t

    if device.type == "cuda":
        try:
            ok = lp_mod._f32_gemm_ok(device, torch.bfloat16)
            rows.append(_row("lm_head", "-", "cuBLAS fp32-output GEMM for bf16 (else bf16 product upcast)", int(ok), "info", True, "info"))
        except Exception as e:  # noqa: BLE001
            rows.append(_err_row("lm_head", "-", "fp32-output GEMM probe", e))

    # fused_linear_logprob, both Triton forward modes
    for dtype, tol_f, tol_g in ((torch.float32, 1e-4, 1e-4), (torch.bfloat16, 1e-3, 3e-2)):
        for mode in ("fused", "chunked"):
            shp = f"[{N}, {D}] x [{V}, {D}] {str(dtype)[6:]} fwd={mode}"
            try:
                lp_mod.TRITON_FORWARD = mode
                h, w, b, t = make(N, D, V, dtype)
                lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.7, return_entropy=True, backend=backend)
                rlp, rent = linear_logprob_reference(h, w, t, bias=b, temperature=0.7, return_entropy=True)
                fe = max(_max_rel(lp, rlp), _max_rel(ent, rent))
                rows.append(_row("fused_linear_logprob", shp, "fwd max rel err (logp, entropy)", fe, f"<= {tol_f:g}", fe <= tol_f))
                g1 = torch.randn(N, generator=gen).to(device)
                g2 = torch.randn(N, generator=gen).to(device)
                gs = torch.autograd.grad((lp * g1).sum() + (ent * g2).sum(), (h, w, b))
                rs = torch.autograd.grad((rlp * g1).sum() + (rent * g2).sum(), (h, w, b))
                ge = max(_max_rel(x, y) for x, y in zip(gs, rs))
                rows.append(_row("fused_linear_logprob", shp, "grad max rel err (hidden, weight, bias)", ge, f"<= {tol_g:g}", ge <= tol_g))
            except Exception as e:  # noqa: BLE001
                rows.append(_err_row("fused_linear_logprob", shp, "fwd/bwd vs reference", e))
            finally:
                lp_mod.TRITON_FORWARD = "fused"
    # one long row: split vocabulary, big V
    try:
        v_big = 5000 if dry else 151936
        h, w, b, t = make(3, 32, v_big, torch.bfloat16)
        with torch.no_grad():
            lp = oar.fused_linear_logprob(h, w, t, bias=b, backend=backend)
            rlp = linear_logprob_reference(h, w, t, bias=b)
        err = _max_rel(lp, rlp)
        rows.append(_row("fused_linear_logprob", f"[3, 32] x [{v_big}, 32] bf16", "fwd max rel err (split vocabulary)", err, "<= 1e-3", err <= 1e-3))
    except Exception as e:  # noqa: BLE001
        rows.append(_err_row("fused_linear_logprob", "N=3 big V", "fwd vs reference", e))

    # fused_linear_grpo_loss vs grpo_loss on reference log-probs (OAR weights)
    B, T = (3, 7) if dry else (6, 50)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        for loss_type in ("grpo", "bnpo", "dapo", "dr_grpo"):
            shp = f"[{B}, {T}, {D}] x [{V}, {D}] {str(dtype)[6:]} {loss_type}"
            try:
                h, w, b, t = make(B * T, D, V, dtype)
                h3 = h.detach().view(B, T, D).requires_grad_(True)
                t2 = t.view(B, T)
                mask = (torch.rand(B, T, generator=gen) > 0.2).to(device)
                mask[-1] = False
                with torch.no_grad():
                    base = linear_logprob_reference(h3.view(-1, D), w, t, b, 0.9).view(B, T)
                old = base + 0.2 * torch.randn(B, T, generator=gen).to(device)
                ref = base + 0.1 * torch.randn(B, T, generator=gen).to(device)
                adv = torch.randn(B, generator=gen).to(device)
                wts = (torch.rand(B, T, generator=gen) * 2).to(device)
                kw = dict(weights=wts, ref_logp=ref, beta=0.04, loss_type=loss_type, max_completion_length=T)
                loss, m = oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, temperature=0.9, bias=b, backend=backend, **kw)
                rlp = linear_logprob_reference(h3.view(-1, D), w, t, b, 0.9).view(B, T)
                rl, rm = oar.grpo_loss(rlp, old, adv, mask, **kw)
                le = abs(loss.item() - rl.item()) / max(abs(rl.item()), 1e-6)
                me = max(abs(float(m[k]) - float(rm[k])) for k in rm)
                gs = torch.autograd.grad(loss, (h3, w, b))
                rs = torch.autograd.grad(rl, (h3, w, b))
                ge = max(_max_rel(x, y) for x, y in zip(gs, rs))
                err = max(le, me, ge)
                rows.append(_row("fused_linear_grpo_loss", shp, "max rel err vs grpo_loss(reference logp): loss, metrics, grads", err, f"<= {tol:g}", err <= tol))
            except Exception as e:  # noqa: BLE001
                rows.append(_err_row("fused_linear_grpo_loss", shp, "vs grpo_loss(reference logp)", e))

    # vs liger, uniform weights, fp32
    try:
        from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss

        for loss_type in ("grpo", "dapo"):
            shp = f"[{B}, {T}, {D}] x [{V}, {D}] fp32 {loss_type}"
            try:
                h, w, b, t = make(B * T, D, V, torch.float32)
                h3 = h.detach().view(B, T, D).requires_grad_(True)
                t2 = t.view(B, T)
                mask = (torch.rand(B, T, generator=gen) > 0.2).to(device)
                with torch.no_grad():
                    old = linear_logprob_reference(h3.view(-1, D), w, t, b).view(B, T) + 0.2 * torch.randn(B, T, generator=gen).to(device)
                adv = torch.randn(B, generator=gen).to(device)
                liger = LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False, loss_type=loss_type)
                ll, _ = liger(h3, w, t2, mask.float(), adv, bias=b, old_per_token_logps=old)
                loss, _ = oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, loss_type=loss_type, bias=b, backend=backend)
                gs = torch.autograd.grad(loss, (h3, w, b))
                rs = torch.autograd.grad(ll, (h3, w, b))
                err = max([abs(loss.item() - ll.item()) / max(abs(ll.item()), 1e-6)] + [_max_rel(x, y) for x, y in zip(gs, rs)])
                rows.append(_row("fused_linear_grpo_loss", shp, "max rel err vs liger (loss, grads)", err, "<= 1e-4", err <= 1e-4))
            except Exception as e:  # noqa: BLE001
                rows.append(_err_row("fused_linear_grpo_loss", shp, "vs liger", e))
    except Exception as e:  # noqa: BLE001
        rows.append(_err_row("fused_linear_grpo_loss", "-", "liger import", e))
    return rows


# ----------------------------------------------------------------------------- benchmarks


class Budget:
    """Wall-clock budget of the whole check: sections skip what no longer fits."""

    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


def _free(device):
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


BENCH_SHAPES = [  # (B, T, D, V): the gpu_check shape and liger's published Hopper shape
    (16, 1024, 2048, 151936),
    (8, 1024, 4096, 131072),
]
DRY_SHAPES = [(2, 16, 32, 500)]


def bench_rows(device, dry: bool, repeats: int, emit, budget: Budget):
    """fused_linear_logprob (with and without entropy) and fused_linear_grpo_loss fwd+bwd against
    every baseline of benchmarks/lm_head_baselines.py, at each shape: time, peak memory, achieved
    TFLOP/s of the useful LM-head GEMMs (3 x 2NDV: logits, d hidden, d weight) and their
    fraction of the measured rate of one plain GEMM of the same shape and dtype."""
    import torch

    import lm_head_baselines as lb
    import oar_kernels as oar

    dtype = torch.float32 if dry else torch.bfloat16
    backend = "triton"  # GPU, or the interpreter in a dry run
    shapes = DRY_SHAPES if dry else BENCH_SHAPES
    for B, T, D, V in shapes:
        N = B * T
        shape = f"N={N} D={D} V={V} {str(dtype)[6:]}"
        if budget.left() < 60:
            emit(_row("lm_head", shape, "skipped: time budget spent", None, "", False, "bench"))
            continue
        gen = torch.Generator().manual_seed(1)
        h = (torch.randn(N, D, generator=gen) * 0.5).to(device, dtype).requires_grad_(True)
        w = (torch.randn(V, D, generator=gen) / math.sqrt(D)).to(device, dtype).requires_grad_(True)
        t = torch.randint(0, V, (N,), generator=gen).to(device)
        g = torch.randn(N, generator=gen).to(device)
        g2 = torch.randn(N, generator=gen).to(device)
        h3 = h.detach().view(B, T, D).requires_grad_(True)
        t2 = t.view(B, T)
        mask = torch.ones(B, T, dtype=torch.bool, device=device)
        mask[:, T * 3 // 4:] = (torch.rand(B, T - T * 3 // 4, generator=gen) > 0.5).to(device)
        with torch.no_grad():
            old = oar.fused_linear_logprob(h, w, t, backend=backend).view(B, T) + 0.05 * torch.randn(B, T, generator=gen).to(device)
        adv = torch.randn(B, generator=gen).to(device)
        flops = 3 * 2 * N * D * V
        mm_rate = None
        try:
            with torch.no_grad():
                tm = time_call(lambda: torch.matmul(h, w.t()), device, repeats)
            mm_rate = 2 * N * D * V / tm / 1e12
            emit(_row("matmul", shape, f"torch.matmul [N,D]x[D,V] TFLOP/s ({tm * 1e3:.2f} ms)", mm_rate, "info", True, "bench"))
        except Exception as e:  # noqa: BLE001
            emit(_err_row("matmul", shape, "GEMM rate", e, "bench"))
        _free(device)

        groups = []
        # torch.compile'd eager at the first shape only: each shape is a fresh compile (~1 min)
        first = (B, T, D, V) == shapes[0]
        lp_names = lb.LOGPROB if first else tuple(n for n in lb.LOGPROB if n != "compiled")
        grpo_names = lb.GRPO if first else tuple(n for n in lb.GRPO if n != "compiled")
        for ent in (False, True):
            fns, missing = lb.make_logprob(h, w, t, g, g2, entropy=ent, backend=backend, names=lp_names)
            groups.append((f"logprob{' +entropy' if ent else ''}", fns, missing))
        fns, missing = lb.make_grpo(h3, w, t2, old, adv, mask, backend=backend, names=grpo_names)
        groups.append(("grpo_loss", fns, missing))
        for op, fns, missing in groups:
            for name, why in missing.items():
                emit(_row(op, shape, f"{name}: missing ({why})", None, "", True, "missing"))
            results = {}
            for name, fn in fns.items():
                if budget.left() < 30:
                    emit(_row(op, shape, f"{name}: skipped (time budget)", None, "", False, "bench"))
                    continue
                try:
                    mem = peak_bytes(fn, device)  # also the warm-up (and torch.compile's compile)
                    sec = time_call(fn, device, repeats, warmup=0 if dry else 1)
                    results[name] = (sec, mem)
                    tf = flops / sec / 1e12
                    frac = f", {tf / mm_rate:.2f}x GEMM rate" if mm_rate else ""
                    mem_s = "n/a" if mem is None else f"{mem / 2**30:.2f} GiB"
                    emit(_row(op, shape, f"{name}: fwd+bwd {sec * 1e3:.1f} ms, peak +{mem_s}, {tf:.0f} TFLOP/s{frac}",
                              sec * 1e3, "ms", True, "bench"))
                except Exception as e:  # noqa: BLE001 - a baseline that fails here is reported
                    emit(_err_row(op, shape, f"{name} fwd+bwd", e, "bench"))
                finally:
                    _free(device)
            ours = results.get("oar")
            if ours:
                others = {k: v for k, v in results.items() if k != "oar"}
                for k, (sec, mem) in others.items():
                    ms = "" if (mem is None or not ours[1]) else f", memory {ours[1] / max(mem, 1):.2f}x"
                    emit(_row(op, shape, f"oar / {k}: time {ours[0] / sec:.2f}x{ms}", ours[0] / sec, "info", True, "ratio"))
                fastest = min(others.items(), key=lambda kv: kv[1][0]) if others else None
                if fastest:
                    r = ours[0] / fastest[1][0]
                    emit(_row(op, shape, f"oar time / fastest baseline ({fastest[0]})", r, "<= 1", r <= 1.0, "target"))
        del h, w, h3, old
        _free(device)


def fwd_config_rows(device, dry: bool, repeats: int, emit, budget: Budget):
    """The fused forward kernel's candidate configurations, forward only, at the gpu_check shape:
    16-bit at num_warps 4 and 8 (same blocks), fp32 at num_warps 4 / 8 and with tf32x3 / tf32
    input precision (with their error against ieee), so FWD_CONFIG can be chosen from data."""
    import torch

    from oar_kernels.kernels import linear_logprob as kl

    N, D, V = (40, 32, 300) if dry else (16384, 2048, 151936)
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.bfloat16, torch.float32):
        shape = f"N={N} D={D} V={V} {str(dtype)[6:]}"
        key = "fp32" if dtype == torch.float32 else "16bit"
        base = kl.FWD_CONFIG[key]
        h = torch.randn(N, D, generator=gen).to(device, dtype)
        w = (torch.randn(V, D, generator=gen) / math.sqrt(D)).to(device, dtype)
        t = torch.randint(0, V, (N,), generator=gen).to(device)
        cands = [("default", base, None), ("num_warps=4", base[:3] + (4,) + base[4:5] + (None,), None),
                 ("num_warps=8", base[:3] + (8,) + base[4:], None)]
        if dtype == torch.float32:
            cands += [("tf32x3", base, "tf32x3"), ("tf32", base, "tf32")]
        ref = None
        for name, cfg, prec in cands:
            if budget.left() < 20:
                emit(_row("fused fwd config", shape, f"{name}: skipped (time budget)", None, "", False, "bench"))
                continue
            try:
                with torch.no_grad():
                    fn = lambda: kl.fused_forward(h, w, t, None, 1.0, True, config=None if dry else cfg,  # noqa: E731
                                                  input_precision=prec)
                    zt, lse, _ = fn()
                    lp = zt - lse
                    ref = lp if ref is None else ref
                    err = float((lp - ref).abs().max())
                    sec = time_call(fn, device, repeats)
                tf = 2 * N * D * V / sec / 1e12
                emit(_row("fused fwd config", shape, f"{name} {cfg} prec={prec or 'default'}: fwd+entropy {sec * 1e3:.1f} ms, "
                          f"{tf:.0f} TFLOP/s, max |dlogp| vs default {err:.1e}", sec * 1e3, "ms", True, "bench"))
            except Exception as e:  # noqa: BLE001
                emit(_err_row("fused fwd config", shape, name, e, "bench"))
        del h, w
        _free(device)


def test_suite_rows(dry: bool, emit, budget: Budget, timeout_s: int):
    """The kernel tests compiled on the GPU (tests/conftest.py --gpu), before any benchmark; a
    dry run only collects them (the interpreter run is CI's)."""
    import subprocess

    root = os.path.dirname(HERE)
    if not os.path.isdir(os.path.join(root, "tests")):
        emit(_row("tests", "-", "no tests/ folder next to benchmarks/", None, "", False, "check"))
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "kernels", "tests/"]
    cmd += ["--co"] if dry else ["--gpu", "-rf"]
    env = dict(os.environ)
    if not dry:
        env.pop("TRITON_INTERPRET", None)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                           timeout=min(timeout_s, max(30, budget.left() - 240)))
        tail = [ln for ln in r.stdout.strip().splitlines() if ln.strip()][-1:] or [r.stderr.strip()[-200:]]
        for ln in r.stdout.splitlines():
            if ln.startswith("FAILED"):
                emit(_row("tests", "--gpu -m kernels", ln[:200], None, "", False, "check"))
        emit(_row("tests", "pytest --gpu -m kernels" if not dry else "pytest --co -m kernels",
                  f"{tail[0][:160]} ({time.time() - t0:.0f} s)", r.returncode, "rc 0", r.returncode == 0, "check"))
    except subprocess.TimeoutExpired as e:
        emit(_row("tests", "pytest --gpu -m kernels", f"timed out after {e.timeout:.0f} s", None, "", False, "check"))


# ----------------------------------------------------------------------------- other engineers' rows


def foreign_rows(device, dry: bool, budget=None):
    rows = []
    for name in ("bench_bilevel", "bench_saliency", "bench_importance", "rl_step", "bench_trainer"):
        path = os.path.join(HERE, f"{name}.py")
        if not os.path.exists(path):
            continue
        if budget is not None and budget.left() < 60 and not dry:
            rows.append(_row(name, "-", "skipped: time budget spent", None, "", False, "foreign"))
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            fn = getattr(mod, "gpu_rows", None)
            if fn is None:
                rows.append(_row(name, "-", "no gpu_rows(device) in module", None, "", False, "foreign"))
                continue
            if dry:
                rows.append(_row(name, "-", "gpu_rows found (not run in a CPU dry run)", None, "", True, "foreign"))
                continue
            for r in fn(device):
                r = dict(r)
                r.setdefault("kind", "foreign")
                r.setdefault("ok", True)
                rows.append(r)
        except Exception as e:  # noqa: BLE001
            rows.append(_err_row(name, "-", "gpu_rows", e, "foreign"))
    return rows


# ----------------------------------------------------------------------------- output


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def render(rows, header_lines):
    cols = ["op", "shape", "metric", "value", "target", "ok"]
    out = list(header_lines) + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r.get(c)) if c != "ok" else ("yes" if r.get("ok") else "**NO**") for c in cols]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="GPU correctness spot checks and benchmarks of the fused ops")
    p.add_argument("--out", default=None, help="markdown file to write the table to (rewritten after every row)")
    p.add_argument("--dry-run-cpu", action="store_true", help="run every code path on CPU at tiny sizes (Triton interpreter)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=450, help="wall-clock budget; later rows are skipped past it")
    p.add_argument("--tests-timeout-s", type=int, default=200)
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--skip-foreign", action="store_true")
    args = p.parse_args(argv)

    if args.dry_run_cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    import torch

    if not args.dry_run_cpu and not torch.cuda.is_available():
        print("no GPU: torch.cuda.is_available() is False on this machine; nothing was checked "
              "(run with --dry-run-cpu to exercise this script on CPU).")
        return 0
    if HERE not in sys.path:
        sys.path.insert(0, HERE)  # lm_head_baselines, bench_trainer
    device = torch.device("cpu") if args.dry_run_cpu else torch.device("cuda")
    if args.dry_run_cpu:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, Triton interpreter)"
    header = [
        f"# gpu_check: {name}",
        "",
        f"torch {torch.__version__}, triton {triton.__version__}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
    ]
    t0 = time.time()
    budget = Budget(args.budget_s)
    rows = []

    def emit(row):
        rows.append(row)
        print("[gpu_check]", " | ".join(_fmt(row.get(c)) for c in ("op", "shape", "metric", "value")), flush=True)
        if args.out:  # the table so far, so a run cut short still leaves its rows
            with open(args.out, "w") as fh:
                fh.write(render(rows, header + [f"(in progress, {time.time() - t0:.0f} s)"]))

    dry, reps = args.dry_run_cpu, (1 if args.dry_run_cpu else args.repeats)
    sections = (
        ("tests", None if args.skip_tests else (lambda: test_suite_rows(dry, emit, budget, args.tests_timeout_s))),
        ("correctness", lambda: [emit(r) for r in correctness_rows(device, dry)]),
        ("bench", None if args.skip_bench else (lambda: bench_rows(device, dry, reps, emit, budget))),
        ("fwd configs", None if args.skip_bench else (lambda: fwd_config_rows(device, dry, reps, emit, budget))),
        ("foreign", None if args.skip_foreign else (lambda: [emit(r) for r in foreign_rows(device, dry, budget)])),
    )
    for label, fn in sections:
        if fn is None:
            continue
        s = time.time()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - keep going: one broken section must not hide the rest
            traceback.print_exc()
            emit(_err_row(label, "-", "section", e, label))
        print(f"[gpu_check] {label}: {time.time() - s:.1f} s", flush=True)
    failed_checks = [r for r in rows if not r.get("ok") and r.get("kind") == "check"]
    missed = [r for r in rows if not r.get("ok") and r.get("kind") != "check"]
    header.append(f"total {time.time() - t0:.0f} s; correctness failures: {len(failed_checks)}; "
                  f"missed targets / errors elsewhere: {len(missed)}")
    text = render(rows, header)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
