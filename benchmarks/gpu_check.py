"""One command for a GPU machine lent for minutes: the most valuable rows first, each on disk as it comes.

    bash scripts/gpu_carry.sh                     # here, once: the baselines' wheels into .whl/ (git-ignored)
    timeout 480 python3 benchmarks/gpu_check.py --out gpu_check.md    # there, .whl/ carried along
    python benchmarks/gpu_check.py --dry-run-cpu --out gc.md          # every code path, tiny sizes, on CPU

Sections in order of value, each with its own budget in seconds (SECTIONS; the run's --budget-s,
default 400, caps them all, so the default run ends within 7 minutes and a rerun fits 15):

  preflight    (-) device, compute capability, SMs, free memory, torch / Triton / CUDA versions,
               the C compiler and Python.h Triton needs to build its launcher, the wheels
               installed from .whl/, which optional baselines import (liger_kernel, trl,
               cut_cross_entropy) or why not.
  published    (60) liger's published Hopper shape M=8192 H=4096 V=131072 bf16, our ops against
               eager: fused_linear_logprob with forward_mode "fused" and "chunked", forward only
               and fwd+bwd, and fused_linear_grpo_loss: time, peak memory, TFLOP/s against the
               measured GEMM rate; the modes' log-probs checked against each other and eager;
               traffic_model's bytes and FLOPs of each pass next to its measured time.
  spot checks  (30) the ops against the references at small awkward shapes, fp32 and bf16.
  kernel tests (90) `pytest --gpu -m kernels tests/` (tests/conftest.py) in a subprocess, its
               lines streamed; a dry run only collects.
  baselines    (150) the other shape N=16384 D=2048 V=151936 and the other baselines at both
               shapes (baselines.py: TRL, liger, Cut Cross-Entropy, torch.compile'd eager),
               what compiles last; then a row per group: our best over the fastest. On sm_90
               without cutlass, liger is its Triton path (the row says which; see
               baselines.liger_logprob).
  fwd configs  (40) each distinct candidate configuration of the fused forward kernel.
  foreign      (the rest) bilevel_rows, saliency_rows, the gpu_rows of bench_importance.py and
               rl_step.py, trainer_rows, each with its own budget (FOREIGN), rows streamed as
               they come.

Timing, peak memory, the child processes, rows and the table: harness.py; shapes, inputs and
baselines: baselines.py.

Every row is printed and flushed as it comes and --out rewritten after each; SIGTERM (timeout)
ends the run like Ctrl-C, with the table written. Exit status 1 only when one of our own
correctness checks fails (spot checks, kernel tests, the published shape's agreement, our op
raising); a baseline absent or failing for a reason outside this project is a "missing: why"
row, a missed speed target a NO. Without a GPU (and without --dry-run-cpu) it says so, exit 0.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import glob
import importlib
import importlib.metadata
import math
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import harness
from harness import ROOT, Budget, Row, free, why

OURS = ("oar:fused", "oar:chunked")  # fused_linear_logprob's two forward modes
OPTIONAL = ("liger_kernel", "trl", "cut_cross_entropy")


def _err_row(op, shape, metric, exc, kind="check"):
    return Row(op, shape, f"{metric} (error: {why(exc)})", None, "", False, kind)


def _missing_row(op, shape, name, reason):
    return Row(op, shape, f"{name}: missing ({reason})", None, "", True, "missing")


@dataclass
class Ctx:
    """What every section needs."""

    device: object
    dry: bool
    repeats: int
    emit: Callable[[Row], None]
    store: dict = field(default_factory=dict)  # (op, shape label) -> {name: (seconds, peak bytes)}
    rates: dict = field(default_factory=dict)  # shape label -> (GEMM FLOP/s, HBM bytes/s)

    def shape(self, s):
        from baselines import DRY_SHAPES

        return DRY_SHAPES[s] if self.dry else s


# ----------------------------------------------------------------------------- carried wheels


def install_wheels(wheel_dir: str) -> str:
    """Installs the wheels scripts/gpu_carry.sh put in wheel_dir, offline and without
    dependencies, into a fresh folder put first on sys.path and on the PYTHONPATH of every
    subprocess. Wheels not built for this interpreter are left out (one pip call installs all or
    none). Returns what the preflight row says."""
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "*.whl"))) if wheel_dir else []
    if not wheels:
        return f"none (no wheels in {wheel_dir})" if wheel_dir else "none (--wheels '')"
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename

        here = set(sys_tags())
        fit = [w for w in wheels if parse_wheel_filename(os.path.basename(w))[3] & here]
    except ImportError:
        fit = wheels
    target = tempfile.mkdtemp(prefix="oar_site_")
    atexit.register(shutil.rmtree, target, True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", target]
    r = subprocess.run(cmd + fit, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return f"pip install of {len(fit)} wheels failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    sys.path.insert(0, target)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (target, os.environ.get("PYTHONPATH")) if p)
    names = ", ".join("-".join(os.path.basename(w).split("-")[:2]) for w in fit)
    skipped = sorted(set(wheels) - set(fit))
    return f"{len(fit)} installed into a temporary folder (removed at exit): {names}" + (
        f"; not for this Python: {', '.join(os.path.basename(w) for w in skipped)}" if skipped else "")


# ----------------------------------------------------------------------------- measurement


def time_call(fn, device, repeats=5, warmup=1):
    """Median seconds of fn() (harness.time_fn: CUDA events on a GPU)."""
    return harness.time_fn(fn, device, repeats, warmup).median


def peak_bytes(fn, device):
    """Peak memory fn() allocates above what is allocated before it (CUDA); None on CPU.
    Also the warm-up call (and torch.compile's / Triton's compile)."""
    if device.type != "cuda":
        fn()
        return None
    return harness.peak_memory(fn, device)[1]


def _max_rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _mib(n):
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


# ----------------------------------------------------------------------------- a. preflight


def _import_note(module: str) -> str:
    try:
        importlib.import_module(module)
        return f"{module} {importlib.metadata.version(module)}"
    except Exception as e:  # noqa: BLE001 - any reason it cannot be had is the answer
        return f"{module}: missing ({why(e)})"


def preflight_rows(ctx, wheels_note):
    """What the machine is and what can run on it, before anything is timed."""
    import torch
    import triton

    dev, emit = ctx.device, ctx.emit
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        free, total = torch.cuda.mem_get_info(dev)
        emit(Row("preflight", "device", f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                  f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"))
    else:
        emit(Row("preflight", "device", "CPU (dry run, Triton interpreter)"))
    emit(Row("preflight", "versions", f"python {sys.version.split()[0]}, torch {torch.__version__}, "
              f"triton {triton.__version__}, CUDA {torch.version.cuda}"))
    # Triton builds its CUDA launcher (C, including Python.h) with $CC / gcc / clang at the first launch
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or shutil.which("cc")
    py_h = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    lacks = ([] if cc else ["no C compiler ($CC, gcc, clang, cc)"]) + ([] if os.path.exists(py_h) else [f"no {py_h}"])
    emit(Row("preflight", "triton launcher build",
              f"C compiler {cc}, {py_h}" if not lacks else
              f"NO Triton kernel can launch: Triton compiles its launcher at the first launch and needs a C "
              f"compiler and the Python headers; {'; '.join(lacks)}", ok=not lacks))
    emit(Row("preflight", "carried wheels", wheels_note))
    for mod in OPTIONAL:
        note = _import_note(mod)
        emit(Row("preflight", "optional baseline", note, kind="missing" if "missing" in note else "info"))
    if dev.type == "cuda":
        from oar_kernels.ops._lm_head_chunks import f32_gemm_ok

        emit(Row("preflight", "cuBLAS", "fp32-output GEMM for bf16 operands: "
                  + ("yes" if f32_gemm_ok(dev, torch.bfloat16) else "no (chunked mode upcasts the bf16 product)")))


# ----------------------------------------------------------------------------- b. published shape


def traffic_model(N, D, V, dtype_bytes, chunk_bytes, block_n=64, block_v=128, sms=132):
    """FLOPs and HBM bytes of fused_linear_logprob's passes at one shape: {pass: {...}} with
    passes "fused fwd", "chunked fwd", "bwd", each {"flops", "bytes"} (+ "l2_bytes" for fused).

    A model to read next to measured times, not a measurement. Assumptions:
    - a [N, D] x [D, V] GEMM is 2NDV FLOPs; the softmax arithmetic (~5NV) is left out;
    - each tensor a pass touches moves through HBM once, except where said;
    - fused forward (one Triton kernel, tl.dot + online log-sum-exp, no logits in memory):
      hidden read once; the weight once per wave of `sms` resident programs, since the programs
      of one wave stream the same weight tiles through L2 (programs = row blocks of block_n x
      vocabulary splits, split as kernels/linear_logprob.fused_forward does). Its operand
      traffic from L2 is far larger: every program re-reads its [block_n, D] hidden tile for each
      block_v columns and its [block_v, D] weight tile: "l2_bytes";
    - chunked forward: per row chunk of chunk_bytes / 4V rows, a cuBLAS GEMM reads the whole
      weight and writes fp32 logits; the row-stats kernel reads them once;
    - backward (ops/_lm_head_chunks.gradients), per block of at most chunk_bytes of fp32 logits,
      over vocabulary blocks when N <= V, else over row chunks: recompute the logits (GEMM,
      fp32 written), the d-logits pass (fp32 read, d logits written in the input dtype), then
      d hidden = dz W and d weight = dz^T hidden (2 GEMMs reading dz). The side walked (weight
      when N <= V) is read twice and its gradient written once; the other side is re-read twice
      per block and its fp32 gradient read and written per block. 3 GEMMs: 6NDV FLOPs, of
      which the gradients proper are 4NDV (the first recomputes the logits).
    """
    b, gemm = dtype_bytes, 2 * N * D * V
    hidden, weight, logits32 = N * D * b, V * D * b, N * V * 4
    row_blocks = math.ceil(N / block_n)
    splits = max(1, min(math.ceil(V / block_v), math.ceil(2 * sms / row_blocks)))
    waves = max(1, math.ceil(row_blocks * splits / sms))
    chunks = math.ceil(N / max(1, min(N, chunk_bytes // (4 * V))))
    # backward: `acc` is the side accumulated per block (N rows when walking the vocabulary)
    acc, walked = (N, V) if N <= V else (V, N)
    blocks = math.ceil(walked / max(1, min(walked, chunk_bytes // (4 * acc))))
    bwd_bytes = blocks * acc * D * (2 * b + 2 * 4) + 3 * walked * D * b + N * V * (2 * 4 + 3 * b)
    return {
        "fused fwd": {"flops": gemm, "bytes": hidden + waves * weight,
                      "l2_bytes": hidden * math.ceil(V / block_v) + weight * row_blocks},
        "chunked fwd": {"flops": gemm, "bytes": hidden + chunks * weight + 2 * logits32},
        "bwd": {"flops": 3 * gemm, "bytes": bwd_bytes},
    }


def lm_inputs(ctx, shape, seed=1):
    """Random LM-head inputs at shape (B, T, D, V) (a tiny one in a dry run), made on the device."""
    import torch

    from baselines import lm_inputs

    return lm_inputs(ctx.shape(shape), ctx.device, torch.float32 if ctx.dry else torch.bfloat16, seed, backend="triton")


def closures(x, op, names):
    """{name: fn}, {name: why missing} of one group: "logprob" / "logprob +entropy" (fwd+bwd),
    "logprob fwd" (forward only), "grpo_loss" (fwd+bwd)."""
    import baselines as lb

    if op == "grpo_loss":
        return lb.make_grpo(x.h3, x.w, x.t2, x.old, x.adv, x.mask, names=names, backend="triton")
    return lb.make_logprob(x.h, x.w, x.t, x.g, x.g2, entropy="entropy" in op, names=names, backend="triton",
                           grad=op != "logprob fwd")


def measure(ctx, budget, x, op, names, need_s=10):
    """Times each closure of the group: a row each with time, peak memory, TFLOP/s and its
    fraction of the measured GEMM rate; for a baseline, how our ops compare with it. A baseline
    that raises is missing (its library's failure); our op raising fails a check."""
    fns, missing = closures(x, op, names)
    flops = (1 if op == "logprob fwd" else 3) * 2 * x.N * x.D * x.V
    gemm = ctx.rates.get(x.label, (None,))[0]
    results = ctx.store.setdefault((op, x.label), {})
    for name, reason in missing.items():
        ctx.emit(_missing_row(op, x.label, name, reason))
    for name, fn in fns.items():
        label = name + (f" [{fn.note}]" if getattr(fn, "note", "") else "")
        if budget.left() < need_s:
            ctx.emit(Row(op, x.label, f"{label}: skipped (section budget spent)", ok=False, kind="skip"))
            continue
        try:
            mem = peak_bytes(fn, ctx.device)
            sec = time_call(fn, ctx.device, ctx.repeats, warmup=0 if ctx.dry else 1)
        except Exception as e:  # noqa: BLE001
            ctx.emit(_err_row(op, x.label, name, e) if name.startswith("oar")
                     else _missing_row(op, x.label, label, f"fails here: {why(e)}"))
            continue
        finally:
            free(ctx.device)
        results[name] = (sec, mem)
        frac = f", {flops / sec / gemm:.2f}x GEMM rate" if gemm else ""
        what = "fwd" if op == "logprob fwd" else "fwd+bwd"
        ctx.emit(Row(op, x.label, f"{label}: {what} {sec * 1e3:.2f} ms, peak +{_mib(mem)}, "
                      f"{flops / sec / 1e12:.1f} TFLOP/s{frac}", sec * 1e3, "ms", kind="bench"))
        ours = {k: v for k, v in results.items() if k.startswith("oar")}
        if ours and not name.startswith("oar"):
            ctx.emit(Row(op, x.label, f"ours / {name}: " + "; ".join(
                f"{k} time {s / sec:.2f}x" + ("" if not (m and mem) else f", memory {m / mem:.2f}x")
                for k, (s, m) in ours.items()), min(s for s, _ in ours.values()) / sec, "info", kind="ratio"))
    return fns


def rate_rows(ctx, x):
    """The measured GEMM rate at the shape's [N, D] x [D, V] and the device copy bandwidth."""
    import torch

    with torch.no_grad():
        t_mm = time_call(lambda: torch.matmul(x.h, x.w.t()), ctx.device, ctx.repeats)
        buf = torch.empty((1 << 28) if not ctx.dry else (1 << 20), dtype=torch.uint8, device=ctx.device)
        dst = torch.empty_like(buf)
        t_cp = time_call(lambda: dst.copy_(buf), ctx.device, ctx.repeats)
    gemm, bw = 2 * x.N * x.D * x.V / t_mm, 2 * buf.numel() / t_cp
    ctx.rates[x.label] = (gemm, bw)
    ctx.emit(Row("rates", x.label, f"torch.matmul {gemm / 1e12:.1f} TFLOP/s ({t_mm * 1e3:.2f} ms); "
                  f"copy {bw / 1e9:.0f} GB/s", gemm / 1e12, "TFLOP/s", kind="bench"))


def model_rows(ctx, x):
    """The traffic model of each pass next to its measured time (bwd: fwd+bwd minus fwd)."""
    from oar_kernels.kernels.linear_logprob import FWD_CONFIG, _num_sms
    from oar_kernels.ops._lm_head_chunks import CHUNK_BYTES

    gemm, bw = ctx.rates[x.label]
    m = traffic_model(x.N, x.D, x.V, x.dtype.itemsize, CHUNK_BYTES.get(ctx.device.type, CHUNK_BYTES["cpu"]),
                      *FWD_CONFIG["fp32" if x.dtype.itemsize == 4 else "16bit"][:2], sms=_num_sms(ctx.device))
    fwd = ctx.store.get(("logprob fwd", x.label), {})
    both = ctx.store.get(("logprob", x.label), {})
    measured = {"fused fwd": {"oar:fused": fwd.get("oar:fused")}, "chunked fwd": {"oar:chunked": fwd.get("oar:chunked")},
                "bwd": {k: (both[k][0] - fwd[k][0], None) for k in OURS if k in both and k in fwd}}
    for name, p in m.items():
        bound = max(p["flops"] / gemm, p["bytes"] / bw)
        l2 = f" (L2 operand traffic {p['l2_bytes'] / 1e9:.1f} GB)" if "l2_bytes" in p else ""
        got = "; ".join(f"{k} measured {v[0] * 1e3:.2f} ms = {v[0] / bound:.2f}x" for k, v in measured[name].items() if v)
        ctx.emit(Row("traffic model", x.label, f"{name}: {p['flops'] / 1e12:.2f} TFLOP, HBM {p['bytes'] / 1e9:.2f} GB{l2} "
                      f"-> >= {bound * 1e3:.2f} ms at the measured rates; {got or 'not measured'}",
                      bound * 1e3, "ms", kind="model"))


def agreement_rows(ctx, x, fwd_fns):
    """Our forward modes against each other and against eager at the benchmark shape: the
    chunked mode's cuBLAS logits are fp32 like the fused kernel's (unless cuBLAS cannot write
    fp32 from bf16 here); eager's logits are rounded to the input dtype."""
    import torch

    from oar_kernels.ops._lm_head_chunks import f32_gemm_ok

    loose = 3e-2 if x.dtype != torch.float32 else 1e-4
    tol = {"oar:chunked": 1e-3 if (x.dtype == torch.float32 or f32_gemm_ok(ctx.device, x.dtype)) else loose,
           "eager": loose}
    try:
        ref = fwd_fns["oar:fused"]()[0]
        for name, t in tol.items():
            err = float((fwd_fns[name]()[0].float() - ref).abs().max())
            ctx.emit(Row("fused_linear_logprob", x.label, f"max |logp({name}) - logp(oar:fused)|", err, f"<= {t:g}",
                          err <= t, "check"))
    except Exception as e:  # noqa: BLE001
        ctx.emit(_err_row("fused_linear_logprob", x.label, "forward modes vs eager", e))
    finally:
        free(ctx.device)


def backward_axis_rows(ctx, budget, x):
    """fused_linear_logprob fwd+bwd (default forward) with its backward over vocabulary blocks
    (the default when N <= V: d weight written once) and forced over row chunks (d weight
    accumulated in fp32 chunk after chunk, the backward before), same inputs, back to back."""
    import torch

    import oar_kernels as oar
    from oar_kernels.ops import _lm_head_chunks as chunks

    def run():
        lp = oar.fused_linear_logprob(x.h, x.w, x.t, backend="triton")
        return torch.autograd.grad((lp * x.g).sum(), (x.h, x.w))

    got, default_axis = {}, chunks.grad_axis
    for axis in ("vocab", "rows"):
        if budget.left() < 10:
            ctx.emit(Row("logprob bwd axis", x.label, f"{axis}: skipped (section budget spent)", ok=False, kind="skip"))
            continue
        chunks.grad_axis = lambda n, v, a=axis: a
        try:
            got[axis] = (time_call(run, ctx.device, ctx.repeats), peak_bytes(run, ctx.device))
        except Exception as e:  # noqa: BLE001
            ctx.emit(_err_row("logprob bwd axis", x.label, axis, e))
            continue
        finally:
            chunks.grad_axis = default_axis
            free(ctx.device)
        sec, mem = got[axis]
        ctx.emit(Row("logprob bwd axis", x.label, f"backward over {axis}: fwd+bwd {sec * 1e3:.2f} ms, peak +{_mib(mem)}",
                      sec * 1e3, "ms", kind="bench"))
    if len(got) == 2:
        (tv, mv), (tr, mr) = got["vocab"], got["rows"]
        mem = "" if not (mv and mr) else f", memory {mv / mr:.2f}x"
        ctx.emit(Row("logprob bwd axis", x.label, f"vocab / rows: time {tv / tr:.2f}x{mem}", tv / tr, "info", kind="ratio"))


def published_rows(ctx, budget):
    """Our ops against eager at liger's published Hopper shape, before anything else is timed."""
    from baselines import PUBLISHED

    x = lm_inputs(ctx, PUBLISHED)
    rate_rows(ctx, x)
    fwd_fns = measure(ctx, budget, x, "logprob fwd", OURS + ("eager",))
    agreement_rows(ctx, x, fwd_fns)
    del fwd_fns
    measure(ctx, budget, x, "logprob", OURS + ("eager",))
    model_rows(ctx, x)
    backward_axis_rows(ctx, budget, x)
    measure(ctx, budget, x, "grpo_loss", ("oar", "eager"))


# ----------------------------------------------------------------------------- spot checks


def spot_check_rows(ctx, budget):
    """The ops on the device against the references, small non-power-of-two shapes, fp32 and
    bf16: fused_linear_logprob in both forward modes (entropy, temperature, bias), a few rows
    of a long vocabulary (split across programs), fused_linear_grpo_loss against grpo_loss on
    reference log-probs (each loss_type, OAR weights) and against liger's
    LigerFusedLinearGRPOLoss (uniform weights; liger absent or failing: missing)."""
    import torch

    import oar_kernels as oar
    from oar_kernels.reference.logprob import linear_logprob_reference as ref_logprob

    device, emit, dry = ctx.device, ctx.emit, ctx.dry
    gen = torch.Generator().manual_seed(0)
    N, D, V = (37, 40, 301) if dry else (300, 192, 1037)
    B, T = (3, 7) if dry else (6, 50)
    kw = dict(backend="triton")  # the kernels, on the GPU or (dry run) in the interpreter

    def rnd(*size, scale=1.0, dtype=torch.float32):
        return (torch.randn(*size, generator=gen) * scale).to(device, dtype)

    def make(n, d, v, dtype):
        h, w, b = (rnd(*sz, scale=sc, dtype=dtype).requires_grad_(True) for sz, sc in (((n, d), 1), ((v, d), 3 / math.sqrt(d)), ((v,), 1)))
        return h, w, b, torch.randint(0, v, (n,), generator=gen).to(device)

    def check(op, shp, metric, err, tol):
        emit(Row(op, shp, metric, err, f"<= {tol:g}", err <= tol, "check"))

    def grads_err(a, b, wrt):
        return max(_max_rel(x, y) for x, y in zip(torch.autograd.grad(a, wrt), torch.autograd.grad(b, wrt)))

    def loss_err(loss, ref, adv):  # the loss cancels between advantages: scaled by theirs
        return abs(loss.item() - ref.item()) / max(abs(ref.item()), float(adv.abs().max()))

    def logprob(shp, dtype, mode, tol_f, tol_g):
        h, w, b, t = make(N, D, V, dtype)
        lp, ent = oar.fused_linear_logprob(h, w, t, bias=b, temperature=0.7, return_entropy=True, forward_mode=mode, **kw)
        rlp, rent = ref_logprob(h, w, t, bias=b, temperature=0.7, return_entropy=True)
        check("fused_linear_logprob", shp, "fwd max rel err (logp, entropy)", max(_max_rel(lp, rlp), _max_rel(ent, rent)), tol_f)
        g1, g2 = rnd(N), rnd(N)
        check("fused_linear_logprob", shp, "grad max rel err (hidden, weight, bias)",
              grads_err((lp * g1).sum() + (ent * g2).sum(), (rlp * g1).sum() + (rent * g2).sum(), (h, w, b)), tol_g)

    def long_vocab(shp, v):
        h, w, b, t = make(3, 32, v, torch.bfloat16)
        with torch.no_grad():
            err = _max_rel(oar.fused_linear_logprob(h, w, t, bias=b, **kw), ref_logprob(h, w, t, bias=b))
        check("fused_linear_logprob", shp, "fwd max rel err (split vocabulary)", err, 1e-3)

    def grpo_inputs(dtype):
        h, w, b, t = make(B * T, D, V, dtype)
        h3, t2 = h.detach().view(B, T, D).requires_grad_(True), t.view(B, T)
        mask = (torch.rand(B, T, generator=gen) > 0.2).to(device)
        with torch.no_grad():
            base = ref_logprob(h3.view(-1, D), w, t, b, 0.9).view(B, T)
        return h3, w, b, t, t2, mask, base + 0.2 * rnd(B, T), base, rnd(B)

    def grpo(shp, dtype, loss_type, tol):
        h3, w, b, t, t2, mask, old, base, adv = grpo_inputs(dtype)
        mask[-1] = False
        args = dict(weights=(torch.rand(B, T, generator=gen) * 2).to(device), ref_logp=base + 0.1 * rnd(B, T), beta=0.04,
                    loss_type=loss_type, max_completion_length=T)
        loss, m = oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, temperature=0.9, bias=b, **kw, **args)
        rl, rm = oar.grpo_loss(ref_logprob(h3.view(-1, D), w, t, b, 0.9).view(B, T), old, adv, mask, **args)
        err = max(loss_err(loss, rl, adv), max(abs(float(m[k]) - float(rm[k])) for k in rm), grads_err(loss, rl, (h3, w, b)))
        check("fused_linear_grpo_loss", shp, "max rel err vs grpo_loss(reference logp): loss, metrics, grads", err, tol)

    def vs_liger(shp, loss_type):
        h3, w, b, t, t2, mask, old, base, adv = grpo_inputs(torch.float32)
        try:  # liger is a baseline: absent, or failing on its own, it is missing
            from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss

            liger = LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False, loss_type=loss_type)
            ll = liger(h3, w, t2, mask.float(), adv, bias=b, old_per_token_logps=old)[0]
        except Exception as e:  # noqa: BLE001
            return emit(_missing_row("fused_linear_grpo_loss", shp, "liger (comparison)", why(e)))
        loss = oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, loss_type=loss_type, bias=b, **kw)[0]
        err = max(loss_err(loss, ll, adv), grads_err(loss, ll, (h3, w, b)))
        check("fused_linear_grpo_loss", shp, "max rel err vs liger (loss, grads)", err, 1e-4)

    f32, bf16 = torch.float32, torch.bfloat16
    v_big = 5000 if dry else 151936
    checks = [(logprob, f"[{N}, {D}] x [{V}, {D}] {str(dt)[6:]} forward_mode={mode}", (dt, mode, tf, tg))
              for dt, tf, tg in ((f32, 1e-4, 1e-4), (bf16, 1e-3, 3e-2)) for mode in ("fused", "chunked")]
    checks += [(long_vocab, f"[3, 32] x [{v_big}, 32] bf16", (v_big,))]
    checks += [(grpo, f"[{B}, {T}, {D}] x [{V}, {D}] {str(dt)[6:]} {lt}", (dt, lt, tol))
               for dt, tol in ((f32, 1e-4), (bf16, 3e-2)) for lt in ("grpo", "bnpo", "dapo", "dr_grpo")]
    checks += [(vs_liger, f"[{B}, {T}, {D}] x [{V}, {D}] float32 {lt} vs liger", (lt,)) for lt in ("grpo", "dapo")]
    for fn, shp, args in checks:
        op = "fused_linear_logprob" if fn in (logprob, long_vocab) else "fused_linear_grpo_loss"
        if budget.left() < 3:
            emit(Row(op, shp, "skipped (section budget spent)", ok=False, kind="skip"))
            continue
        try:
            fn(shp, *args)
        except Exception as e:  # noqa: BLE001 - our op raising: a failed check
            emit(_err_row(op, shp, fn.__name__, e))


# ----------------------------------------------------------------------------- c. kernel tests


def kernel_test_rows(ctx, budget):
    """`pytest --gpu -m kernels tests/` in a subprocess (the Triton kernels compiled on the
    GPU; tests/conftest.py), its lines printed as they come: a row per FAILED / ERROR line and
    one for the summary. A dry run only collects (the interpreter run is CI's)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "kernels", "tests/"]
    cmd += ["--co"] if ctx.dry else ["--gpu", "-rfE"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # else pytest's lines come in 8 KB blocks
    if not ctx.dry:
        env.pop("TRITON_INTERPRET", None)
    label = "pytest " + " ".join(cmd[3:])
    lines, t0 = [], time.monotonic()

    def on_line(line):
        print("    " + line, flush=True)
        if line.strip():
            lines.append(line)
        if line.startswith(("FAILED", "ERROR")):
            ctx.emit(Row("kernel tests", label, line[:240], ok=False, kind="check"))

    rc = harness.stream(cmd, budget.left(), on_line, cwd=ROOT, env=env)
    took = f"({time.monotonic() - t0:.0f} s)"
    if rc is None:
        ctx.emit(Row("kernel tests", label, f"killed after the section budget {took}; last line: "
                      f"{(lines or ['-'])[-1][:160]}", ok=False, kind="skip"))
    else:
        ctx.emit(Row("kernel tests", label, f"{(lines or ['no output'])[-1][:200]} {took}", rc, "rc 0", rc == 0, "check"))


# ----------------------------------------------------------------------------- d. baselines, configs


def baseline_plan(dry):
    """(shape, group, names) in the order they are timed: the cheap baselines at the published
    shape, the other shape whole, then what compiles (liger's GRPO loss runs under
    torch.compile; the eager function under torch.compile: a compile per shape and group).
    The shapes: baselines.PUBLISHED (liger's published Hopper shape), baselines.QWEN."""
    from baselines import PUBLISHED, QWEN

    extra = ("liger:triton", "liger:fallback") if dry else ()  # the paths "auto" takes on sm_90
    every = OURS + ("eager", "trl", "liger", "cce")
    return [
        (PUBLISHED, "logprob", ("trl", "liger", "cce") + extra),
        (PUBLISHED, "grpo_loss", ("trl+oar",)),
        (PUBLISHED, "logprob +entropy", every),
        (QWEN, "logprob", every),
        (QWEN, "grpo_loss", ("oar", "eager", "trl+oar")),
        (QWEN, "logprob +entropy", every),
        (PUBLISHED, "grpo_loss", ("liger",)),
        (QWEN, "grpo_loss", ("liger",)),
        (PUBLISHED, "logprob", ("compiled",)),
        (PUBLISHED, "grpo_loss", ("compiled",)),
        (QWEN, "logprob", ("compiled",)),
        (QWEN, "grpo_loss", ("compiled",)),
    ]


def baseline_rows(ctx, budget):
    """Every group of baseline_plan, then per group our best time over the fastest baseline's."""
    for shape, op, names in baseline_plan(ctx.dry):
        compiles = "compiled" in names or (op == "grpo_loss" and "liger" in names)
        need = 45 if compiles else 10
        if budget.left() < need:
            ctx.emit(Row(op, str(ctx.shape(shape)), f"{', '.join(names)}: skipped (section budget spent)", ok=False, kind="skip"))
            continue
        x = lm_inputs(ctx, shape)
        if x.label not in ctx.rates:
            rate_rows(ctx, x)
        measure(ctx, budget, x, op, names, need_s=need)
        del x
        free(ctx.device)
    for (op, label), res in ctx.store.items():
        ours = {k: v for k, v in res.items() if k.startswith("oar")}
        others = {k: v for k, v in res.items() if not k.startswith("oar")}
        if ours and others:
            (o, (so, _)), (b, (sb, _)) = min(ours.items(), key=lambda kv: kv[1][0]), min(others.items(), key=lambda kv: kv[1][0])
            ctx.emit(Row(op, label, f"our best ({o}) time / fastest baseline ({b})", so / sb, "<= 1", so <= sb, "target"))


def fwd_config_rows(ctx, budget):
    """Each distinct candidate configuration of the fused forward kernel (16-bit at num_warps
    4 and 8, fp32 also at tf32x3 / tf32 input precision, with their error against the default),
    forward only at the other shape, so kernels/linear_logprob.py's FWD_CONFIG can be chosen."""
    import torch

    from oar_kernels.kernels import linear_logprob as kl

    from baselines import QWEN

    B, T, D, V = ctx.shape(QWEN)
    N = B * T
    gen = torch.Generator(device=ctx.device).manual_seed(2)
    for dtype in (torch.bfloat16, torch.float32):
        shape = f"N={N} D={D} V={V} {str(dtype)[6:]}"
        base = kl.FWD_CONFIG["fp32" if dtype == torch.float32 else "16bit"]
        cands = [("default", base, None), ("num_warps=4", base[:3] + (4,) + base[4:5] + (None,), None),
                 ("num_warps=8", base[:3] + (8,) + base[4:], None)]
        if dtype == torch.float32:
            cands += [("tf32x3", base, "tf32x3"), ("tf32", base, "tf32")]
        else:  # the tiles measured on the H200 of 2026-12-04 (benchmarks/RESULTS.md)
            cands += [("128x128", (128, 128, 64, 8, 3, None), None), ("64x128", (64, 128, 64, 8, 3, None), None)]
        distinct = {}
        for name, cfg, prec in cands:  # one run per distinct (config, precision)
            distinct.setdefault((cfg, prec), name)
        h = torch.randn(N, D, generator=gen, device=ctx.device).to(dtype)
        w = (torch.randn(V, D, generator=gen, device=ctx.device) / math.sqrt(D)).to(dtype)
        t = torch.randint(0, V, (N,), generator=gen, device=ctx.device)
        ref = None
        for (cfg, prec), name in distinct.items():
            if budget.left() < 10:
                ctx.emit(Row("fused fwd config", shape, f"{name}: skipped (section budget spent)", ok=False, kind="skip"))
                continue
            try:
                with torch.no_grad():
                    def fn(cfg=cfg, prec=prec):
                        return kl.fused_forward(h, w, t, None, 1.0, True, config=None if ctx.dry else cfg, input_precision=prec)
                    zt, lse, _ = fn()
                    ref = zt - lse if ref is None else ref
                    err = float((zt - lse - ref).abs().max())
                    sec = time_call(fn, ctx.device, ctx.repeats)
                ctx.emit(Row("fused fwd config", shape, f"{name} {cfg} prec={prec or 'default'}: fwd+entropy {sec * 1e3:.2f} ms, "
                              f"{2 * N * D * V / sec / 1e12:.1f} TFLOP/s, max |dlogp| vs default {err:.1e}", sec * 1e3, "ms", kind="bench"))
            except Exception as e:  # noqa: BLE001
                ctx.emit(_err_row("fused fwd config", shape, name, e, "bench"))
        del h, w
        free(ctx.device)


# ----------------------------------------------------------------------------- e. other scripts' rows


def bilevel_rows(device, batch: int = 256, seq: int = 2048, long_shape=(64, 32768), repeats: int = 20,
                 emit=None, budget_s: float = float("inf")) -> list:
    """bilevel_reshape (Triton) speed-up over the numpy loop at [batch, seq], target >= 100x;
    max |Triton - torch reference| at [batch, seq] and at long_shape (the blocked path for long
    rows), target <= 1e-5. Failures become rows with ok=False; past budget_s what is left is
    skipped (a row says so); emit(row) gets each row as it is made."""
    import torch

    import oar_kernels as oar
    from baselines import BILEVEL, bilevel_inputs, numpy_loop
    from oar_kernels.reference.bilevel import bilevel_reshape_reference

    rows, end, op, target = harness.Rows(emit), Budget(budget_s), "bilevel_reshape", ">= 100"
    shape = f"[{batch}, {seq}]"
    try:
        scores, mask = bilevel_inputs(batch, seq, device=device)
        s_np, m_np = scores.cpu().numpy(), mask.cpu().numpy()
        t_np = time_call(lambda: numpy_loop(s_np, m_np, **BILEVEL), "cpu", repeats=3, warmup=1)
        t_tr = time_call(lambda: oar.bilevel_reshape(scores, mask, backend="triton", **BILEVEL), device, repeats, warmup=2)
        rows.add(op, shape, f"speed-up vs numpy loop (triton {t_tr * 1e6:.0f} us, numpy {t_np * 1e3:.1f} ms)",
                 t_np / t_tr, target, t_np / t_tr >= 100)
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a crash
        rows.add(op, shape, f"speed-up vs numpy loop (error: {e!r})", None, target, False)
    for b, t in ((batch, seq), tuple(long_shape)):
        shp = f"[{b}, {t}]"
        if end.spent():
            rows.add(op, shp, "max |triton - reference|: skipped (time budget spent)", None, "", False)
            continue
        try:
            scores, mask = bilevel_inputs(b, t, seed=1, device=device)
            for tau, stl in ((0.25, True), (1.0, False)):
                kw = dict(tau=tau, beta=1.0, floor=0.1, sum_to_len=stl)
                w = oar.bilevel_reshape(scores, mask, backend="triton", **kw)
                err = float((w - bilevel_reshape_reference(scores, mask, **kw)).abs().max())
                rows.add(op, shp, f"max |triton - reference| (tau={tau}, sum_to_len={stl})", err, "<= 1e-05",
                         err <= 1e-5 and bool(torch.isfinite(w).all()))
        except Exception as e:  # noqa: BLE001
            rows.add(op, shp, f"max |triton - reference| (error: {e!r})", None, "<= 1e-05", False)
    return rows


def saliency_rows(device, shape=(8, 1024, 4096), dtype=None, repeats: int = 20, hidden_mult: int = 4,
                  emit=None, budget_s: float = float("inf")) -> list:
    """The backward with oar.SaliencyProbe / without (bf16, through a hidden_mult-wide MLP
    block, target <= 1.05); the probe kernel against a per-token dot product reading the same
    bytes (target <= 1.5); the kernel against the float64 reference. Rows as bilevel_rows'."""
    import torch

    from baselines import saliency_backward
    from oar_kernels.reference.saliency import saliency_reference

    dtype = dtype or torch.bfloat16
    rows, end, op = harness.Rows(emit), Budget(budget_s), "saliency_probe"
    b, t, d = shape
    shp = f"[{b}, {t}, {d}] {str(dtype).replace('torch.', '')}"
    try:
        t0, t1 = (harness.time_fn(run, device, repeats, warmup=2, setup=setup).median
                  for setup, run, _ in (saliency_backward(b, t, d, device, dtype, hidden_mult, p) for p in (False, True)))
        rows.add(op, shp, f"backward with probe / without ({hidden_mult}x MLP block; {t1 * 1e3:.2f} vs {t0 * 1e3:.2f} ms)",
                 t1 / t0, "<= 1.05", t1 / t0 <= 1.05)
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a crash
        rows.add(op, shp, f"backward with probe / without (error: {e!r})", None, "<= 1.05", False)
    if end.spent():
        rows.add(op, shp, "probe kernel: skipped (time budget spent)", None, "", False)
        return rows
    try:
        from oar_kernels.kernels.saliency import saliency_reduce_triton

        gen = torch.Generator().manual_seed(2)
        x = torch.randn(b, t, d, generator=gen).to(device, dtype)
        gr = torch.randn(b, t, d, generator=gen).to(device, dtype)
        o1, o2 = torch.empty(b, t, device=device), torch.empty(b, t, device=device)
        t_k = time_call(lambda: saliency_reduce_triton(gr, x, o1, o2), device, repeats, warmup=2)
        t_dot = time_call(lambda: torch.linalg.vecdot(gr, x, dim=-1), device, repeats, warmup=2)
        gbps = 2 * x.numel() * x.element_size() / t_k / 1e9
        rows.add(op, shp, f"probe kernel / torch vecdot, same bytes read ({t_k * 1e6:.0f} us, {gbps:.0f} GB/s)",
                 t_k / t_dot, "<= 1.5", t_k / t_dot <= 1.5)
        # |<g, x>| cancels, so errors are scaled by each output's largest value
        err = max(float((o - r).abs().max() / r.abs().max().clamp_min(1e-30))
                  for o, r in zip((o1, o2), saliency_reference(gr, x)))
        rows.add(op, shp, "max |kernel - float64 reference| / max |reference|", err, "<= 1e-05", err <= 1e-5)
    except Exception as e:  # noqa: BLE001
        rows.add(op, shp, f"probe kernel (error: {e!r})", None, "<= 1.5", False)
    return rows


def trainer_rows(device, steps=5, hidden=512, layers=8, gens=8, prompts=4, completion=128, threads=4,
                 emit=None, budget_s=float("inf")) -> list:
    """OARGRPOTrainer (oar-g, oar-p) against TRL's GRPOTrainer, seconds per step, each trainer in
    its own process (baselines.trainer_step), killed past what is left of budget_s; a row per
    trainer with its ratio to GRPOTrainer. Without TRL or datasets the rows say they are missing."""
    from baselines import TRAINERS, in_child

    rows, end = harness.Rows(emit), Budget(budget_s)
    shape = f"Llama {hidden}x{layers}, {gens * prompts} completions <= {completion} tokens"

    def add(metric, value=None, ok=True, kind="bench"):
        rows.add("trainer step", shape, metric, value, "info" if value is not None else "", ok, kind)

    try:  # what the children need beyond this project
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except Exception as e:  # noqa: BLE001 - absent, or one of their own requirements is
        add(f"missing ({type(e).__name__}: {e})"[:200], kind="missing")
        return rows
    kw = dict(steps=steps, threads=threads, hidden=hidden, layers=layers, gens=gens, prompts=prompts,
              completion=completion, device=str(device).split(":")[0])
    base = None
    for which in TRAINERS:
        if end.left() <= 5:
            add(f"{which}: skipped (time budget spent)", ok=False, kind="skip")
            continue
        try:
            sec = in_child({"job": "trainer", "args": dict(kw, which=which)}, end.left())["step_s"]
            base = base or (sec if which == "GRPOTrainer" else None)
            add(f"{which}: {sec:.3f} s per step" + (f", {sec / base:.2f}x GRPOTrainer" if base else ""),
                sec / base if base else sec)
        except harness.ChildFailed as e:
            killed = str(e).startswith("killed")
            add(f"{which}: {'' if killed else 'error: '}{e}"[:200], ok=False, kind="skip" if killed else "bench")
    return rows


def _script_rows(name):
    def gpu_rows(device, **kw):
        return importlib.import_module(name).gpu_rows(device, **kw)
    return gpu_rows


# label, seconds of its budget, its rows, keyword arguments of those in a dry run (tiny sizes)
FOREIGN = (
    ("bench_bilevel", 15, bilevel_rows, dict(batch=3, seq=40, long_shape=(1, 70), repeats=1)),
    ("bench_saliency", 15, saliency_rows, dict(shape=(2, 3, 24), repeats=1, hidden_mult=1)),
    ("bench_importance", 60, _script_rows("bench_importance"),
     dict(prompt=8, reasoning=12, conclude=2, answer=2, responses=2, naive_forwards=2, budget=256, repeats=1,
          model_kwargs=dict(hidden=32, layers=2, heads=4, kv_heads=2, vocab=97))),
    ("rl_step", 90, _script_rows("rl_step"), dict(prompts=2, num_generations=2, max_completion_length=12, steps=1,
                                                   synthetic="tiny", synthetic_prompts=2, naive_budget=0.5, large_s=0)),
    ("bench_trainer", 90, trainer_rows, dict(steps=2, hidden=32, layers=1, gens=2, prompts=2, completion=8, threads=1)),
)


def foreign_rows(ctx, budget):
    """The rows of bilevel_rows, saliency_rows, bench_importance.py's and rl_step.py's gpu_rows
    and trainer_rows, each given the smaller of its own seconds and what the run has left, and
    not started with less than a third of its own (a measurement once started runs to its end);
    rows stream through emit."""
    def emit(r):
        ctx.emit(dataclasses.replace(r, kind="foreign") if r.kind == "info" else r)

    for name, seconds, rows_fn, dry_kw in FOREIGN:
        own = Budget(seconds, budget)
        if own.left() < seconds / 3:
            ctx.emit(Row(name, "-", f"skipped ({max(0, own.left()):.0f} s of the time budget left)", ok=False, kind="skip"))
            continue
        try:
            rows_fn(ctx.device, emit=emit, budget_s=own.left(), **(dry_kw if ctx.dry else {}))
        except Exception as e:  # noqa: BLE001 - the rows guard their measurements; this is an import or a bad call
            ctx.emit(_err_row(name, "-", "gpu_rows", e, "foreign"))
        free(ctx.device)


# (name, seconds of its budget, function), after the preflight rows (no budget: a few seconds)
# Budgets from the H200 run of 2026-12-04 (benchmarks/RESULTS.md): published 11 s, spot checks
# 4 s, kernel tests 46 s, baselines 51 s with liger's GRPO loss and the torch.compile'd rows
# still to go (their compiles take tens of seconds each), fwd configs 14 s with the fp32
# candidates still to go, the other scripts 250 s.
SECTIONS = (
    ("published", 60, published_rows),
    ("spot checks", 30, spot_check_rows),
    ("kernel tests", 90, kernel_test_rows),
    ("baselines", 150, baseline_rows),
    ("fwd configs", 40, fwd_config_rows),
    ("foreign", 400, foreign_rows),
)


# ----------------------------------------------------------------------------- output


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="GPU checks and benchmarks of the fused ops, most valuable first")
    p.add_argument("--out", default=None, help="markdown file to write the table to (rewritten after every row)")
    p.add_argument("--dry-run-cpu", action="store_true", help="run every code path on CPU at tiny sizes (Triton interpreter)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=400, help="wall-clock budget of the whole run (sections skip past it)")
    p.add_argument("--wheels", default=os.path.join(ROOT, ".whl"),
                   help="folder of wheels to install offline first (scripts/gpu_carry.sh); '' for none")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out: " + ", ".join(s[0] for s in SECTIONS))
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {s[0] for s in SECTIONS}:
        p.error(f"--skip: unknown sections {sorted(skip - {s[0] for s in SECTIONS})}")

    t0, total = time.monotonic(), Budget(args.budget_s)  # the budget counts the start-up too
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the GPU machine: fail at once, not after retries
    wheels_note = install_wheels(args.wheels)  # before any optional package is imported
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, Triton interpreter)"
    env = harness.environment(device)  # commit, versions, threads, load average at the start
    header = [f"# gpu_check: {name}", "", f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; commit "
              f"{env['commit']}; torch {env['torch']}, triton {env['triton']}, transformers {env['transformers']}; "
              f"load average {env['load_average']}"]
    rows = []

    def emit(row):
        rows.append(row)
        print("[gpu_check]", " | ".join(harness.fmt(getattr(row, c)) for c in ("op", "shape", "metric", "value")), flush=True)
        if args.out:  # the table so far: a run cut short still leaves its rows
            with open(args.out, "w") as fh:
                fh.write(harness.render(rows, header + [f"(in progress, {time.monotonic() - t0:.0f} s)"]))

    ctx = Ctx(device, args.dry_run_cpu, 1 if args.dry_run_cpu else args.repeats, emit)
    try:
        preflight_rows(ctx, wheels_note)
        for label, seconds, fn in SECTIONS:
            if label in skip:
                continue
            budget = Budget(seconds, total)
            if budget.left() < 5:
                emit(Row(label, "-", "skipped (time budget spent)", ok=False, kind="skip"))
                continue
            s = time.monotonic()
            try:
                fn(ctx, budget)
            except Exception as e:  # noqa: BLE001 - one broken section must not hide the rest
                traceback.print_exc()
                emit(_err_row(label, "-", "section", e))
            free(device)
            print(f"[gpu_check] {label}: {time.monotonic() - s:.1f} s (budget {seconds} s)", flush=True)
    except KeyboardInterrupt as e:  # SIGTERM (timeout) or Ctrl-C: the rows so far still make the table
        emit(Row("gpu_check", "-", f"interrupted ({e or 'SIGINT'}) after {time.monotonic() - t0:.0f} s", ok=False, kind="skip"))
    failed = [r for r in rows if not r.ok and r.kind == "check"]
    other = [r for r in rows if not r.ok and r.kind != "check"]
    header.append(f"total {time.monotonic() - t0:.0f} s; correctness failures: {len(failed)}; "
                  f"missed targets, skips, errors elsewhere: {len(other)}")
    text = harness.render(rows, header)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
