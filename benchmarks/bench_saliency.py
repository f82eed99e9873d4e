"""Cost of oar.SaliencyProbe inside a backward pass.

    python benchmarks/bench_saliency.py [--batch 4] [--seq 512] [--dim 1024] [--repeats 7]

CPU (this script): time of one backward through a small MLP block fed by an embedding-sized
tensor x [B, T, D], with the probe on x and without it (same graph otherwise), and their
ratio. The probe's backward reads g and x once and writes two [B, T] float32 tensors.
gpu_rows(device) is the GPU part, called by benchmarks/gpu_check.py: the same ratio at a
realistic size (bf16, [8, 1024, 4096] through a 4x-wide MLP block, target <= 1.05), the
probe kernel against a plain per-token dot product reading the same bytes (target <= 1.5),
and the kernel's results against the float64 reference.
"""
from __future__ import annotations

import argparse
import time

import torch

import oar_kernels as oar
from oar_kernels.reference.saliency import saliency_reference

try:  # run as a script (python benchmarks/bench_saliency.py) or imported as benchmarks.bench_saliency
    from bench_bilevel import time_call
except ImportError:  # pragma: no cover
    from benchmarks.bench_bilevel import time_call

OVERHEAD_TARGET = 1.05
KERNEL_TARGET = 1.5


def _block(dim: int, device, dtype, hidden_mult: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(hidden_mult * dim, dim, generator=g) / dim**0.5).to(device, dtype)
    w2 = (torch.randn(dim, hidden_mult * dim, generator=g) / (hidden_mult * dim) ** 0.5).to(device, dtype)
    return w1, w2


def backward_times(batch, seq, dim, device="cpu", dtype=torch.float32, repeats=7, hidden_mult=4):
    """(seconds without the probe, seconds with it) for one backward of J = sum(mlp(x)^2),
    gradient taken w.r.t. x only (as OAR-G does). The forward is rebuilt outside the timing."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(batch, seq, dim, generator=g)).to(device, dtype).requires_grad_(True)
    w1, w2 = _block(dim, device, dtype, hidden_mult)
    probe = oar.SaliencyProbe()

    def objective(use_probe):
        y = probe(x) if use_probe else x
        h = torch.nn.functional.gelu(y @ w1.t()) @ w2.t()
        return h.float().pow(2).sum()

    def timed(use_probe):
        def fn():
            torch.autograd.grad(state["J"], [x])

        def setup():
            state["J"] = objective(use_probe)

        total = []
        for _ in range(repeats):
            setup()
            total.append(time_call(fn, device, repeats=1, warmup=0))
        total.sort()
        return total[len(total) // 2]

    state = {}
    timed(False), timed(True)  # warm-up (allocator, kernel compilation)
    return timed(False), timed(True), probe


def _row(op, shape, metric, value, target, ok):
    return {"op": op, "shape": shape, "metric": metric, "value": value, "target": target, "ok": bool(ok)}


def gpu_rows(device, shape=(8, 1024, 4096), dtype=torch.bfloat16, repeats: int = 20, hidden_mult: int = 4,
             emit=None, budget_s: float = float("inf")) -> list[dict]:
    """Rows for benchmarks/gpu_check.py; failures become rows with ok=False, not exceptions.
    emit(row) is called with each row as it is made; past budget_s seconds the measurements
    left are skipped (a row says so)."""
    rows, end = [], time.monotonic() + budget_s

    def add(row):
        rows.append(row)
        if emit:
            emit(row)

    b, t, d = shape
    shp = f"[{b}, {t}, {d}] {str(dtype).replace('torch.', '')}"
    try:
        t0, t1, probe = backward_times(b, t, d, device, dtype, repeats, hidden_mult)
        ratio = t1 / t0
        add(_row("saliency_probe", shp,
                 f"backward with probe / without ({hidden_mult}x MLP block; {t1 * 1e3:.2f} vs {t0 * 1e3:.2f} ms)",
                 ratio, f"<= {OVERHEAD_TARGET}", ratio <= OVERHEAD_TARGET))
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a crash
        add(_row("saliency_probe", shp, f"backward with probe / without (error: {e!r})", None, f"<= {OVERHEAD_TARGET}", False))
    if time.monotonic() > end:
        add(_row("saliency_probe", shp, "probe kernel: skipped (time budget spent)", None, "", False))
        return rows
    try:
        from oar_kernels.kernels.saliency import saliency_reduce_triton

        gen = torch.Generator().manual_seed(2)
        x = torch.randn(b, t, d, generator=gen).to(device, dtype)
        gr = torch.randn(b, t, d, generator=gen).to(device, dtype)
        o1 = torch.empty(b, t, device=device)
        o2 = torch.empty(b, t, device=device)
        t_k = time_call(lambda: saliency_reduce_triton(gr, x, o1, o2), device, repeats)
        t_dot = time_call(lambda: torch.linalg.vecdot(gr, x, dim=-1), device, repeats)
        ratio = t_k / t_dot
        gbps = 2 * x.numel() * x.element_size() / t_k / 1e9
        add(_row("saliency_probe", shp, f"probe kernel / torch vecdot, same bytes read ({t_k * 1e6:.0f} us, {gbps:.0f} GB/s)",
                 ratio, f"<= {KERNEL_TARGET}", ratio <= KERNEL_TARGET))
        ref = saliency_reference(gr, x)
        # |<g, x>| cancels, so errors are scaled by each output's largest value
        err = max(float((o - r).abs().max() / r.abs().max().clamp_min(1e-30)) for o, r in zip((o1, o2), ref))
        add(_row("saliency_probe", shp, "max |kernel - float64 reference| / max |reference|", err, "<= 1e-05", err <= 1e-5))
    except Exception as e:  # noqa: BLE001
        add(_row("saliency_probe", shp, f"probe kernel (error: {e!r})", None, f"<= {KERNEL_TARGET}", False))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--hidden-mult", type=int, default=1, help="MLP width multiple (1: two D x D linears)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0, t1, probe = backward_times(args.batch, args.seq, args.dim, "cpu", torch.float32, args.repeats, args.hidden_mult)
    x_mb = args.batch * args.seq * args.dim * 4 / 2**20
    print(f"saliency probe CPU: x [{args.batch}, {args.seq}, {args.dim}] fp32 ({x_mb:.0f} MiB), "
          f"MLP {args.hidden_mult}x, torch threads={torch.get_num_threads()}")
    print(f"  backward without probe : {t0 * 1e3:8.2f} ms")
    print(f"  backward with probe    : {t1 * 1e3:8.2f} ms")
    print(f"  ratio                  : {t1 / t0:8.3f}   (overhead {100 * (t1 / t0 - 1):+.1f}%)")
    assert probe.grad_x_input is not None and probe.grad_x_input.shape == (args.batch, args.seq)


if __name__ == "__main__":
    main()
