"""One command for a GPU machine: correctness spot checks of the fused ops and the GPU benchmarks.

    python benchmarks/gpu_check.py --out gpu_check.md
    python benchmarks/gpu_check.py --dry-run-cpu        # every code path, tiny sizes, on CPU

1. Spot checks on the device (small, non-power-of-two shapes, fp32 and bf16):
   fused_linear_logprob (+ entropy, temperature, bias, split vocabulary) against
   oar.reference.linear_logprob_reference; fused_linear_grpo_loss against oar.grpo_loss on
   reference log-probs (each loss_type, OAR weights) and against liger's
   LigerFusedLinearGRPOLoss (uniform weights).
2. Benchmarks at N=16384, D=2048, V=151936 bf16 (B=16 x T=1024 for the loss), fwd+bwd:
   fused vs eager (materialized logits, fp32 log_softmax, gather) and vs liger (compiled=False):
   peak memory above the inputs (torch.cuda.max_memory_allocated) and time (CUDA events,
   median), with the achieved TFLOP/s of the LM-head GEMMs (3 x 2NDV per fwd+bwd) against
   the measured rate of a plain bf16 torch.matmul of the same shape.
   Targets: memory <= 0.1x eager, time <= 0.7x eager and <= 1.0x liger.
3. Rows of gpu_rows(device) from benchmarks/bench_bilevel.py, bench_saliency.py,
   bench_importance.py and rl_step.py (the full RL step, OAR vs GRPO, including a
   Qwen2-0.5B-shaped model at 256 completion tokens) when those modules exist.

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


def bench_rows(device, dry: bool, repeats: int):
    import torch

    import oar_kernels as oar
    from oar_kernels.ops import fused_linear_logprob as lp_mod

    rows = []
    if dry:
        B, T, D, V = 2, 16, 32, 500
    else:
        B, T, D, V = 16, 1024, 2048, 151936
    N = B * T
    dtype = torch.bfloat16
    shape = f"N={N} D={D} V={V} bf16"
    backend = "triton"
    gen = torch.Generator().manual_seed(1)
    h = (torch.randn(N, D, generator=gen) * 0.5).to(device, dtype).requires_grad_(True)
    w = (torch.randn(V, D, generator=gen) / math.sqrt(D)).to(device, dtype).requires_grad_(True)
    t = torch.randint(0, V, (N,), generator=gen).to(device)
    g = torch.randn(N, generator=gen).to(device)
    h3 = h.detach().view(B, T, D).requires_grad_(True)
    t2 = t.view(B, T)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[:, T * 3 // 4:] = (torch.rand(B, T - T * 3 // 4, generator=gen) > 0.5).to(device)
    with torch.no_grad():
        old = oar.fused_linear_logprob(h, w, t, backend=backend).view(B, T) + 0.05 * torch.randn(B, T, generator=gen).to(device)
    adv = torch.randn(B, generator=gen).to(device)
    flops = 3 * 2 * N * D * V  # logits, d hidden, d weight

    # measured GEMM rate for this shape
    mm_rate = None
    try:
        with torch.no_grad():
            tm = time_call(lambda: torch.matmul(h, w.t()), device, repeats)
        mm_rate = 2 * N * D * V / tm / 1e12
        rows.append(_row("matmul", shape, f"torch.matmul [N,D]x[D,V] TFLOP/s ({tm * 1e3:.2f} ms)", mm_rate, "info", True, "bench"))
    except Exception as e:  # noqa: BLE001
        rows.append(_err_row("matmul", shape, "bf16 GEMM rate", e, "bench"))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def lp_eager():
        lp = torch.log_softmax((h @ w.t()).float(), dim=-1).gather(1, t[:, None]).squeeze(1)
        return torch.autograd.grad((lp * g).sum(), (h, w))

    def lp_fused():
        lp = oar.fused_linear_logprob(h, w, t, backend=backend)
        return torch.autograd.grad((lp * g).sum(), (h, w))

    def lp_fused_chunked():
        lp_mod.TRITON_FORWARD = "chunked"
        try:
            return lp_fused()
        finally:
            lp_mod.TRITON_FORWARD = "fused"

    def grpo_eager():
        lp = torch.log_softmax((h3.reshape(N, D) @ w.t()).float(), dim=-1).gather(1, t[:, None]).view(B, T)
        loss, _ = oar.grpo_loss(lp, old, adv, mask)
        return torch.autograd.grad(loss, (h3, w))

    def grpo_fused():
        loss, _ = oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, backend=backend)
        return torch.autograd.grad(loss, (h3, w))

    liger_mod = None
    try:
        from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss

        liger_mod = LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False, loss_type="grpo")
    except Exception as e:  # noqa: BLE001
        rows.append(_err_row("liger", shape, "import LigerFusedLinearGRPOLoss", e, "bench"))

    def grpo_liger():
        loss, _ = liger_mod(h3, w, t2, mask.float(), adv, old_per_token_logps=old)
        return torch.autograd.grad(loss, (h3, w))

    results = {}
    variants = [
        ("fused_linear_logprob", "eager", lp_eager),
        ("fused_linear_logprob", "fused", lp_fused),
        ("fused_linear_logprob", "fused (chunked cuBLAS fwd)", lp_fused_chunked),
        ("fused_linear_grpo_loss", "eager", grpo_eager),
        ("fused_linear_grpo_loss", "fused", grpo_fused),
    ]
    if liger_mod is not None:
        variants.append(("fused_linear_grpo_loss", "liger", grpo_liger))
    for op, name, fn in variants:
        try:
            mem = peak_bytes(fn, device)
            sec = time_call(fn, device, repeats)
            results[(op, name)] = (sec, mem)
            tf = flops / sec / 1e12
            frac = f", {tf / mm_rate:.2f}x matmul rate" if mm_rate else ""
            mem_s = "n/a" if mem is None else f"{mem / 2**30:.2f} GiB"
            rows.append(_row(op, shape, f"{name}: fwd+bwd {sec * 1e3:.1f} ms, peak +{mem_s}, {tf:.0f} TFLOP/s{frac}", sec * 1e3, "ms", True, "bench"))
        except Exception as e:  # noqa: BLE001
            rows.append(_err_row(op, shape, f"{name} fwd+bwd", e, "bench"))
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def ratio_rows(op, name, ref, what_t, what_m):
        a, r = results.get((op, name)), results.get((op, ref))
        if a is None or r is None:
            return
        tr = a[0] / r[0]
        rows.append(_row(op, shape, f"{name} time / {ref} time", tr, f"<= {what_t:g}", tr <= what_t, "target"))
        if what_m is not None and a[1] is not None and r[1]:
            mr = a[1] / r[1]
            rows.append(_row(op, shape, f"{name} peak memory / {ref} peak memory", mr, f"<= {what_m:g}", mr <= what_m, "target"))

    ratio_rows("fused_linear_logprob", "fused", "eager", 0.7, 0.1)
    ratio_rows("fused_linear_logprob", "fused (chunked cuBLAS fwd)", "eager", 0.7, 0.1)
    ratio_rows("fused_linear_grpo_loss", "fused", "eager", 0.7, 0.1)
    ratio_rows("fused_linear_grpo_loss", "fused", "liger", 1.0, None)
    return rows


# ----------------------------------------------------------------------------- other engineers' rows


def foreign_rows(device, dry: bool):
    rows = []
    for name in ("bench_bilevel", "bench_saliency", "bench_importance", "rl_step"):
        path = os.path.join(HERE, f"{name}.py")
        if not os.path.exists(path):
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
    p.add_argument("--out", default=None, help="markdown file to write the table to")
    p.add_argument("--dry-run-cpu", action="store_true", help="run every code path on CPU at tiny sizes (Triton interpreter)")
    p.add_argument("--repeats", type=int, default=5)
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
    rows = []
    for label, fn in (
        ("correctness", lambda: correctness_rows(device, args.dry_run_cpu)),
        ("bench", None if args.skip_bench else (lambda: bench_rows(device, args.dry_run_cpu, 1 if args.dry_run_cpu else args.repeats))),
        ("foreign", None if args.skip_foreign else (lambda: foreign_rows(device, args.dry_run_cpu))),
    ):
        if fn is None:
            continue
        s = time.time()
        try:
            rows.extend(fn())
        except Exception as e:  # noqa: BLE001 - keep going: one broken section must not hide the rest
            traceback.print_exc()
            rows.append(_err_row(label, "-", "section", e, label))
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
