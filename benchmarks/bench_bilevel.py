"""Bi-Level reshaping speed: oar.bilevel_reshape vs a per-row numpy loop (np.quantile per row).

    python benchmarks/bench_bilevel.py [--batch 256] [--seq 2048] [--repeats 7] [--threads N]

CPU (this script): the op's default CPU path (the C kernel of oar_kernels/native, row ranges
on torch's thread count), the C kernel on one thread and the torch path, each against the
numpy loop on the same inputs, in one run (target >= 20x at B=256, T=2048). gpu_rows(device) is the GPU part, called by
benchmarks/gpu_check.py: the Triton kernel against the same numpy loop (target >= 100x),
plus correctness rows that compare the kernel with the torch reference on the device.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import oar_kernels as oar
from oar_kernels.reference.bilevel import bilevel_reshape_reference

CPU_TARGET = 20.0
GPU_TARGET = 100.0
PARAMS = dict(tau=0.25, beta=1.0, floor=0.1, sum_to_len=True)


def numpy_loop(scores: np.ndarray, mask: np.ndarray, tau=0.25, beta=1.0, floor=0.1, sum_to_len=True):
    """The baseline: docs/algorithm.md section 5 written row by row with numpy."""
    out = np.ones(scores.shape, dtype=np.float32)
    for b in range(scores.shape[0]):
        keep = mask[b]
        if not keep.any():
            continue
        s = np.log1p(np.maximum(scores[b, keep].astype(np.float32), 0))
        lo, hi = s.min(), s.max()
        n = (s - lo) / (hi - lo if hi > lo else 1.0)
        q = np.quantile(n, tau)
        w = np.where(n < q, np.maximum(n / (q + 1e-8), floor), 1 + beta * (n - q) / (1 - q + 1e-8))
        if sum_to_len:
            total = w.sum()
            w = w * len(w) / (total + 1e-8) if total > 0 else np.ones_like(w)
        out[b, keep] = w
    return out


def make_inputs(batch: int, seq: int, seed: int = 0, device="cpu"):
    """Scores with a heavy tail and ragged masks: a random-length span per row, at a random
    offset, with a few holes (masks need not be contiguous), plus one empty row."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, seq, generator=g).exp() * torch.rand(batch, 1, generator=g) * 5
    lengths = torch.randint(0, seq + 1, (batch,), generator=g)
    starts = (torch.rand(batch, generator=g) * (seq - lengths + 1)).long()
    pos = torch.arange(seq)
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    mask &= torch.rand(batch, seq, generator=g) > 0.05
    mask[0] = False
    return scores.to(device), mask.to(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device="cpu", repeats: int = 7, warmup: int = 2) -> float:
    """Median seconds per call (CUDA events on GPU, perf_counter elsewhere)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    if torch.device(device).type == "cuda":
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_comparison(batch=256, seq=2048, repeats=7):
    """Seconds per call of the numpy loop, the op's default CPU path (auto: the C kernel where
    it builds), the op's torch path and the C kernel on one thread; max |auto - numpy|."""
    from oar_kernels.native.bilevel import available

    scores, mask = make_inputs(batch, seq)
    s_np, m_np = scores.numpy(), mask.numpy()
    t_np = time_call(lambda: numpy_loop(s_np, m_np, **PARAMS), repeats=max(3, repeats // 2))
    t_auto = time_call(lambda: oar.bilevel_reshape(scores, mask, **PARAMS), repeats=repeats)
    t_torch = time_call(lambda: oar.bilevel_reshape(scores, mask, backend="torch", **PARAMS), repeats=repeats)
    t_one = None
    if available():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t_one = time_call(lambda: oar.bilevel_reshape(scores, mask, backend="native", **PARAMS), repeats=repeats)
        finally:
            torch.set_num_threads(threads)
    diff = np.abs(oar.bilevel_reshape(scores, mask, **PARAMS).numpy() - numpy_loop(s_np, m_np, **PARAMS)).max()
    return dict(numpy=t_np, auto=t_auto, torch=t_torch, native_1thread=t_one, native=available(), diff=float(diff))


def _row(op, shape, metric, value, target, ok):
    return {"op": op, "shape": shape, "metric": metric, "value": value, "target": target, "ok": bool(ok)}


def gpu_rows(device, batch: int = 256, seq: int = 2048, long_shape=(64, 32768), repeats: int = 20,
             emit=None, budget_s: float = float("inf")) -> list[dict]:
    """Rows for benchmarks/gpu_check.py. Each measurement is guarded: a failure becomes a row
    with ok=False and the error in `metric`, never an exception. emit(row) is called with each
    row as it is made; past budget_s seconds the measurements left are skipped (a row says so).

    - bilevel_reshape (Triton) speed-up over the numpy loop at [batch, seq], target >= 100x;
    - max |Triton - torch reference| on the device at [batch, seq] and at long_shape (the
      blocked path for long rows), target <= 1e-5.
    """
    rows, end = [], time.monotonic() + budget_s

    def add(row):
        rows.append(row)
        if emit:
            emit(row)

    shape = f"[{batch}, {seq}]"
    try:
        scores, mask = make_inputs(batch, seq, device=device)
        s_np, m_np = scores.cpu().numpy(), mask.cpu().numpy()
        t_np = time_call(lambda: numpy_loop(s_np, m_np, **PARAMS), repeats=3, warmup=1)
        t_tr = time_call(lambda: oar.bilevel_reshape(scores, mask, backend="triton", **PARAMS), device, repeats)
        ratio = t_np / t_tr
        add(_row("bilevel_reshape", shape, f"speed-up vs numpy loop (triton {t_tr * 1e6:.0f} us, numpy {t_np * 1e3:.1f} ms)",
                 ratio, f">= {GPU_TARGET:g}", ratio >= GPU_TARGET))
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a crash
        add(_row("bilevel_reshape", shape, f"speed-up vs numpy loop (error: {e!r})", None, f">= {GPU_TARGET:g}", False))
    for b, t in ((batch, seq), tuple(long_shape)):
        shp = f"[{b}, {t}]"
        if time.monotonic() > end:
            add(_row("bilevel_reshape", shp, "max |triton - reference|: skipped (time budget spent)", None, "", False))
            continue
        try:
            scores, mask = make_inputs(b, t, seed=1, device=device)
            for tau, stl in ((0.25, True), (1.0, False)):
                kw = dict(tau=tau, beta=1.0, floor=0.1, sum_to_len=stl)
                w = oar.bilevel_reshape(scores, mask, backend="triton", **kw)
                ref = bilevel_reshape_reference(scores, mask, **kw)
                err = float((w - ref).abs().max())
                ok = err <= 1e-5 and bool(torch.isfinite(w).all())
                add(_row("bilevel_reshape", shp, f"max |triton - reference| (tau={tau}, sum_to_len={stl})", err, "<= 1e-05", ok))
        except Exception as e:  # noqa: BLE001
            add(_row("bilevel_reshape", shp, f"max |triton - reference| (error: {e!r})", None, "<= 1e-05", False))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = cpu_comparison(args.batch, args.seq, args.repeats)
    ratio = r["numpy"] / r["auto"]
    path = "C kernel (oar_kernels/native)" if r["native"] else "torch (no C compiler: native kernel unavailable)"
    print(f"bilevel_reshape CPU [{args.batch}, {args.seq}], threads={torch.get_num_threads()}, default path: {path}")
    print(f"  numpy per-row loop      : {r['numpy'] * 1e3:9.2f} ms")
    print(f"  oar.bilevel_reshape     : {r['auto'] * 1e3:9.2f} ms   {ratio:6.1f}x   (target >= {CPU_TARGET:g}x: {'ok' if ratio >= CPU_TARGET else 'MISSED'})")
    if r["native_1thread"] is not None:
        print(f"  C kernel, 1 thread      : {r['native_1thread'] * 1e3:9.2f} ms   {r['numpy'] / r['native_1thread']:6.1f}x")
    print(f"  torch path (backend=torch): {r['torch'] * 1e3:7.2f} ms   {r['numpy'] / r['torch']:6.1f}x")
    print(f"  max |oar - numpy|       : {r['diff']:.2e}")

if __name__ == "__main__":
    main()
