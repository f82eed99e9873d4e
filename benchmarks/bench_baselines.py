"""CPU side by side: our ops against the strongest public alternatives that run on a CPU.

    python benchmarks/bench_baselines.py --out baselines.md          # all parts (~15 min, 2 cores)
    python benchmarks/bench_baselines.py --parts lm_head,bilevel --threads 1

Parts (each a table; ratios are taken within this one run):
  lm_head   fused_linear_logprob (with and without entropy) and fused_linear_grpo_loss,
            fwd+bwd, fp32, against benchmarks/lm_head_baselines.py: TRL's
            ChunkedLogProbFunction, liger's LigerFusedLinearScaledCrossEntropyFunction and
            LigerFusedLinearGRPOLoss (compiled=True, as its users run it), Cut Cross-Entropy
            exact (its torch.compile path: its kernels need a GPU), eager and torch.compile'd
            eager. Peak memory: each variant alone in a fresh subprocess, growth of the peak RSS
            during its second fwd+bwd (the first compiles where torch.compile is used). Time: all variants of an op in one process, warmed up once, then
            --reps rounds of one call each, round-robin (load changes on a shared machine hit
            every variant alike); the median per variant.
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


def _inputs(op: str, small: bool):
    import torch

    import oar_kernels as oar

    torch.manual_seed(0)
    if op == "grpo":
        B, T, D, V = (2, 16, 32, 300) if small else GRPO_SHAPE
        N = B * T
    else:
        N, D, V = (64, 32, 300) if small else LOGPROB_SHAPE
    h = torch.randn(N, D).mul_(0.5).requires_grad_(True)
    w = (torch.randn(V, D) / D**0.5).requires_grad_(True)
    t = torch.randint(0, V, (N,))
    g, g2 = torch.randn(N), torch.randn(N)
    x = dict(N=N, D=D, V=V, h=h, w=w, t=t, g=g, g2=g2)
    if op == "grpo":
        h3 = h.detach().view(B, T, D).requires_grad_(True)
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[:, T * 3 // 4:] = torch.rand(B, T - T * 3 // 4) > 0.5
        with torch.no_grad():
            old = oar.fused_linear_logprob(h, w, t, backend="torch").view(B, T) + 0.05 * torch.randn(B, T)
        x.update(h3=h3, t2=t.view(B, T), mask=mask, old=old, adv=torch.randn(B))
    return x


def _make(op: str, names, x):
    import lm_head_baselines as lb

    if op == "grpo":
        return lb.make_grpo(x["h3"], x["w"], x["t2"], x["old"], x["adv"], x["mask"], names=names)
    return lb.make_logprob(x["h"], x["w"], x["t"], x["g"], x["g2"], entropy=op.endswith("entropy"), names=names)


def _child(op: str, name: str, threads: int, small: bool) -> dict:
    """Peak memory of one fwd+bwd of one variant in a fresh process (and its first-call time)."""
    import torch

    from bench_linear_logprob import _peak_mb, _reset_peak, _rss_mb

    torch.set_num_threads(threads)
    x = _inputs(op, small)
    fns, missing = _make(op, (name,), x)
    if name in missing:
        return {"missing": missing[name]}
    import gc

    t0 = time.perf_counter()
    out = fns[name]()  # compiles where torch.compile is used (the compiler's memory is not counted)
    first = time.perf_counter() - t0
    del out
    gc.collect()
    base = _rss_mb()
    if not _reset_peak():
        base = _peak_mb()
    out = fns[name]()
    return {"first_s": first, "peak_mb": _peak_mb() - base, "N": x["N"], "D": x["D"], "V": x["V"]}


def _interleaved(op: str, names, reps: int, threads: int, small: bool, log) -> dict:
    """Median seconds per fwd+bwd, all variants in this process, timed round-robin (one call of
    each per round) so that a load change on the shared machine hits every variant alike."""
    import torch

    torch.set_num_threads(threads)
    x = _inputs(op, small)
    fns, missing = _make(op, names, x)
    for fn in fns.values():  # warm-up (and torch.compile's compile)
        del_ = fn()
        del del_
    times = {n: [] for n in fns}
    for r in range(reps):
        for n, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            times[n].append(time.perf_counter() - t0)
            del out
        log(f"{op} round {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f}s" for n, v in times.items()))
    return {n: statistics.median(v) for n, v in times.items()}


def lm_head_table(reps: int, threads: int, small: bool, log) -> list[str]:
    lines = ["| op | shape (fp32) | variant | time (s) | peak MB | time vs oar | memory vs oar |",
             "|---|---|---|---:|---:|---:|---:|"]
    for op, names in PLAN:
        mem = {}
        for name in names:  # memory: each variant alone in a fresh process
            cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{op}:{name}",
                   "--threads", str(threads)] + (["--small"] if small else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                mem[name] = {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:150]}
            else:
                mem[name] = json.loads(r.stdout.strip().splitlines()[-1])
            log(f"{op} {name}: {mem[name]}")
        have = tuple(n for n in names if "peak_mb" in mem[n])
        sec = _interleaved(op, have, reps, threads, small, log)
        ours_t, ours_m = sec.get("oar"), mem.get("oar", {}).get("peak_mb")
        shape = next((f"N={m['N']} D={m['D']} V={m['V']}" for m in mem.values() if "N" in m), "-")
        for name in names:
            m = mem[name]
            if name not in sec:
                lines.append(f"| {op} | {shape} | {name} | {m.get('missing') or m.get('error')} | | | |")
                continue
            tr = f"{sec[name] / ours_t:.2f}x" if ours_t else "-"
            mr = f"{m['peak_mb'] / max(ours_m, 1e-9):.2f}x" if ours_m else "-"
            lines.append(f"| {op} | {shape} | {name} | {sec[name]:.3f} | {m['peak_mb']:.0f} | {tr} | {mr} |")
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
        print(json.dumps(_child(op, name, args.threads, args.small)))
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
