"""CPU side by side: our ops against the strongest public alternatives that run on a CPU.

    python benchmarks/bench_baselines.py --out baselines.md          # all parts (~15 min, 2 cores)
    python benchmarks/bench_baselines.py --parts lm_head,bilevel --threads 1

Parts (each a table; ratios are taken within this one run):
  lm_head   fused_linear_logprob (with and without entropy) and fused_linear_grpo_loss,
            fwd+bwd, fp32, against benchmarks/lm_head_baselines.py: TRL's
            ChunkedLogProbFunction, liger's LigerFusedLinearScaledCrossEntropyFunction and
            LigerFusedLinearGRPOLoss (compiled=True, as its users run it), Cut Cross-Entropy
            exact (its torch.compile path: its kernels need a GPU), eager and torch.compile'd
            eager. Each variant in a fresh subprocess: time = median of --reps after one warm-up
            call (torch.compile's compile happens there), peak memory = growth of the process's
            peak RSS during the warm-up call.
  bilevel   oar.bilevel_reshape's C kernel against its vectorized torch path (the strongest
            torch baseline) and the per-row numpy loop, B=256 T=2048 (bench_bilevel.cpu_comparison).
  trainer   oar_kernels.integrations.trl.OARGRPOTrainer (OAR-G, and OAR-P) against TRL's
            GRPOTrainer: seconds per training step on the same tiny model, data, seed and
            config (benchmarks/bench_trainer.py).

OAR-P against a batched naive (every perturbed sequence of a response batched into
full-length forwards, no prefix reuse) is bench_importance.py's "plain batched path" row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

LOGPROB_SHAPE = (4096, 512, 32768)  # N, D, V
GRPO_SHAPE = (8, 128, 256, 32768)  # B, T, D, V
PLAN = [
    ("logprob", ("oar", "trl", "liger", "cce", "eager", "compiled")),
    ("logprob+entropy", ("oar", "trl", "liger", "eager", "compiled")),
    ("grpo", ("oar", "liger", "trl+oar", "eager", "compiled")),
]


def _child(op: str, name: str, reps: int, threads: int, small: bool) -> dict:
    import torch

    from bench_linear_logprob import _peak_mb, _reset_peak, _rss_mb

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    import lm_head_baselines as lb

    import oar_kernels as oar

    if op == "grpo":
        B, T, D, V = (2, 16, 32, 300) if small else GRPO_SHAPE
        N = B * T
    else:
        N, D, V = (64, 32, 300) if small else LOGPROB_SHAPE
    h = torch.randn(N, D).mul_(0.5).requires_grad_(True)
    w = (torch.randn(V, D) / D**0.5).requires_grad_(True)
    t = torch.randint(0, V, (N,))
    g, g2 = torch.randn(N), torch.randn(N)
    if op == "grpo":
        h3 = h.detach().view(B, T, D).requires_grad_(True)
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[:, T * 3 // 4:] = torch.rand(B, T - T * 3 // 4) > 0.5
        with torch.no_grad():
            old = oar.fused_linear_logprob(h, w, t, backend="torch").view(B, T) + 0.05 * torch.randn(B, T)
        fns, missing = lb.make_grpo(h3, w, t.view(B, T), old, torch.randn(B), mask, names=(name,))
    else:
        fns, missing = lb.make_logprob(h, w, t, g, g2, entropy=op.endswith("entropy"), names=(name,))
    if name in missing:
        return {"missing": missing[name]}
    fn = fns[name]
    import gc

    gc.collect()
    base = _rss_mb()
    if not _reset_peak():
        base = _peak_mb()
    t0 = time.perf_counter()
    out = fn()  # warm-up (compiles where torch.compile is used) and the memory peak
    first = time.perf_counter() - t0
    peak = _peak_mb() - base
    del out
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return {"time_s": statistics.median(times), "first_s": first, "peak_mb": peak, "N": N, "D": D, "V": V}


def lm_head_table(reps: int, threads: int, small: bool, log) -> list[str]:
    lines = [f"| op | shape (fp32) | variant | time (s) | peak MB | time vs oar | memory vs oar |",
             "|---|---|---|---:|---:|---:|---:|"]
    for op, names in PLAN:
        res = {}
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{op}:{name}", "--reps", str(reps),
                   "--threads", str(threads)] + (["--small"] if small else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                res[name] = {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:150]}
            else:
                res[name] = json.loads(r.stdout.strip().splitlines()[-1])
            log(f"{op} {name}: {res[name]}")
        ours = res.get("oar", {})
        for name in names:
            r = res[name]
            shape = f"N={ours.get('N')} D={ours.get('D')} V={ours.get('V')}"
            if "time_s" not in r:
                lines.append(f"| {op} | {shape} | {name} | {r.get('missing') or r.get('error')} | | | |")
                continue
            tr = r["time_s"] / ours["time_s"] if "time_s" in ours else float("nan")
            mr = r["peak_mb"] / max(ours["peak_mb"], 1e-9) if "peak_mb" in ours else float("nan")
            lines.append(f"| {op} | {shape} | {name} | {r['time_s']:.3f} | {r['peak_mb']:.0f} | {tr:.2f}x | {mr:.2f}x |")
    return lines


def bilevel_table(reps: int, threads: int, small: bool, log) -> list[str]:
    import torch

    torch.set_num_threads(threads)
    import bench_bilevel

    B, T = (16, 128) if small else (256, 2048)
    r = bench_bilevel.cpu_comparison(B, T, repeats=reps)
    log(f"bilevel: {r}")
    lines = [f"| path (B={B}, T={T}, {threads} thread(s)) | ms per call | C kernel faster by |", "|---|---:|---:|"]
    for name, key in (("C kernel (default CPU path)", "auto"), ("vectorized torch path (backend='torch')", "torch"),
                      ("per-row numpy loop", "numpy")):
        lines.append(f"| {name} | {r[key] * 1e3:.2f} | {r[key] / r['auto']:.2f}x |")
    return lines


def trainer_table(threads: int, small: bool, log) -> list[str]:
    import bench_trainer

    rows = bench_trainer.compare(steps=2 if small else 6, threads=threads, log=log)
    lines = ["| trainer | seconds per step (median) | vs GRPOTrainer |", "|---|---:|---:|"]
    base = rows["GRPOTrainer"]
    for name, sec in rows.items():
        lines.append(f"| {name} | {sec:.3f} | {sec / base:.2f}x |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="lm_head,bilevel,trainer")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="tiny sizes (a test of the script)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        op, name = args.child.split(":")
        print(json.dumps(_child(op, name, args.reps, args.threads, args.small)))
        return 0

    def log(msg):
        print(f"[bench_baselines] {msg}", flush=True)

    load = os.getloadavg()
    head = [f"`python benchmarks/bench_baselines.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; {args.threads} thread(s)", ""]
    parts = {"lm_head": lambda: lm_head_table(args.reps, args.threads, args.small, log),
             "bilevel": lambda: bilevel_table(max(args.reps, 7), args.threads, args.small, log),
             "trainer": lambda: trainer_table(args.threads, args.small, log)}
    out = list(head)
    for p in args.parts.split(","):
        out += [f"### {p}", ""] + parts[p]() + [""]
        if args.out:
            with open(args.out, "w") as fh:
                fh.write("\n".join(out) + "\n")
    load = os.getloadavg()
    out.append(f"load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
