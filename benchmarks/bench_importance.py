"""OAR-P / OAR-G speed, memory and fidelity on a model built from a config (no hub).

    python benchmarks/bench_importance.py [--threads 1] [--out results.md|.csv] [--full]

CPU (default; about 5 minutes with one thread): a 4-layer Llama-style model, hidden 256
(--hidden 512 works, ~4x slower), 8 heads / 4 KV heads, vocab 32000, float32, sdpa attention;
8 responses of prompt 128, reasoning 256, conclude 12 + answer 4 tokens.

* OAR-P: oar.perturbation_importance (prefix reuse, max_batch_tokens 8192, mode last) against
  the naive oracle (one full forward per reasoning token). The oracle's forwards all have the
  same shape, so by default its time is measured on --naive-forwards forwards of that exact
  shape (a probe row of the same length with that many reasoning tokens) and multiplied up to
  B * (R + 1) forwards (labelled "extrapolated"); --full runs it whole. The plain batched
  path (prefix_reuse=False) is extrapolated the same way.
* Memory (harness.peak_memory): each measured CPU call runs in a fresh child process
  (baselines.in_child); a sampler thread reads the resident set size every 2 ms, and we report
  peak RSS during the call minus RSS just before it. The budget reference is one no-grad body forward of max_batch_tokens tokens, the most a
  chunk may hold. On CUDA: torch.cuda.max_memory_allocated minus allocated before the call.
* OAR-G training step (OARGStep: one policy forward, partial backward to the embeddings,
  weighted GRPO loss backward) against a plain GRPO step (same forward and loss, no OAR) and
  against the authors' three-pass procedure (the naive OAR-G oracle per response, then the
  GRPO step). Median of --repeats. A "lower bound" row times the GRPO step plus chunk_pass,
  the least work any exact KL-mode step adds (see chunk_pass).
* Fidelity (on --fidelity-responses responses, OAR-P being the slow part): mean over
  responses of Spearman's rho between OAR-G and OAR-P scores, per mode;
  also OAR-G step form vs batched OAR-G under the same noise draw, and batched OAR-G under two
  different noise draws (how much the noise alone moves the ranking).

Threads: on a shared machine one thread is far faster and steadier than two (OpenMP barriers
stall when another process holds a core), hence --threads 1 by default.

gpu_rows(device) is the GPU part (called by benchmarks/gpu_check.py): a Qwen2-0.5B-shaped
model (24 layers, hidden 896, vocab 151936, bf16) at prompt 512, reasoning 2048.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import harness
import torch
from baselines import (GRPO_STEP, QWEN_05B, THREE_PASS, build_model, in_child, make_segments, probe_segment,
                       responses_of, step_fns)
from harness import Row

import oar_kernels as oar
from oar_kernels.importance import OARGStep
from oar_kernels.reference import perturbation_importance_naive

MODES = ("last", "answer_mean", "answer_joint")
P_TARGET = 2.5  # OAR-P speed-up over the naive oracle
G_TARGET = 1.45  # OAR-G step time / GRPO step time


def step_rows(model, segs, device, repeats, modes=("answer_mean", "answer_joint", "last"), three_pass=True,
              floor=False):
    """(name, seconds, ratio to the GRPO step, target) of each step of baselines.step_fns:
    median over `repeats` rounds, each round timing every method once, in turn, so that load
    drifting on a shared machine hits all of them alike. floor: also the GRPO step plus
    chunk_pass, a lower bound for the exact KL modes."""
    model.train()
    med = {k: t.median for k, t in harness.interleaved(step_fns(model, segs, device, modes, three_pass, floor),
                                                       device, repeats).items()}
    t_grpo = med[GRPO_STEP]
    rows = [(k, t, None if k == GRPO_STEP else t / t_grpo, G_TARGET if k == "OAR-G step (answer_mean)" else None)
            for k, t in med.items()]
    if three_pass:
        rows.append(("three-pass / OAR-G step (answer_mean)", None, med[THREE_PASS] / med["OAR-G step (answer_mean)"], None))
    model.eval()
    return rows


# ------------------------------------------------------------------------------ fidelity


def spearman_mean(a, b, mask):
    from scipy.stats import spearmanr

    vals = []
    for i in range(a.shape[0]):
        m = mask[i]
        if int(m.sum()) > 2:
            r = spearmanr(a[i][m].double().cpu().numpy(), b[i][m].double().cpu().numpy()).statistic
            if r == r:
                vals.append(float(r))
    return sum(vals) / len(vals) if vals else float("nan")


def fidelity_rows(model, segs, oarp_scores: dict):
    rows = []
    resps = responses_of(segs)
    for mode in MODES:
        g1, m1 = oar.gradient_importance(model, segs, mode, generator=torch.Generator().manual_seed(1))
        g2, _ = oar.gradient_importance(model, segs, mode, generator=torch.Generator().manual_seed(2))
        out = OARGStep(model, mode=mode)(segs, resps, generator=torch.Generator().manual_seed(1))
        sp, smask = oarp_scores[mode]
        rows.append((f"Spearman OAR-G vs OAR-P ({mode})", spearman_mean(g1, sp, smask)))
        rows.append((f"Spearman OAR-G step form vs OAR-P ({mode})", spearman_mean(out.scores.detach(), sp, smask)))
        rows.append((f"Spearman OAR-G step form vs OAR-G, same draw ({mode})", spearman_mean(out.scores.detach(), g1, m1)))
        if mode != "answer_joint":
            lin = OARGStep(model, mode=mode, kl_grad="linearized")(segs, resps, generator=torch.Generator().manual_seed(1))
            rows.append((f"Spearman OAR-G step form (linearized) vs OAR-G, same draw ({mode})", spearman_mean(lin.scores.detach(), g1, m1)))
        if mode != "answer_joint":
            rows.append((f"Spearman OAR-G draw 1 vs draw 2 ({mode})", spearman_mean(g1, g2, m1)))
        model.zero_grad(set_to_none=True)
    return rows


def cpu_report(args):
    shape = dict(n=args.responses, prompt=args.prompt, reasoning=args.reasoning, conclude=args.conclude, answer=args.answer)
    mcfg = dict(arch=args.arch, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads, vocab=args.vocab)
    if args.model:
        from transformers import AutoConfig

        args.vocab = AutoConfig.from_pretrained(args.model).vocab_size
        mcfg = dict(path=args.model, vocab=args.vocab)
    base = dict(job="importance", threads=args.threads, shape=shape, model=mcfg, budget=args.max_batch_tokens)
    table = []
    tmp = Path(tempfile.mkdtemp())
    B, R = args.responses, args.reasoning

    def add(section, metric, value, target="", ok=True):
        table.append(Row(section, "", metric, value, target, ok))

    # OAR-P at the full shape, mode last (the OAR-P default): time, memory, scores
    res = in_child({**base, "kind": "oarp", "mode": "last", "save": str(tmp / "last.pt")})
    t_ours = res["seconds"]
    k = args.naive_forwards - 1
    if args.full:
        naive = in_child({**base, "kind": "naive_full", "mode": "last"})
        t_naive, how = naive["seconds"], "measured"
    else:
        naive = in_child({**base, "kind": "naive_probe", "mode": "last", "k": k})
        t_naive, how = naive["seconds"] / (k + 1) * B * (R + 1), f"extrapolated from {k + 1} forwards"
    plain = in_child({**base, "kind": "plain_probe", "mode": "last", "k": k})
    t_plain = plain["seconds"] / (k + 1) * B * (R + 1)
    budget = in_child({**base, "kind": "budget_forward"})
    mb = lambda x: x / 2**20  # noqa: E731
    add("OAR-P", "prefix reuse, last: seconds", t_ours)
    add("OAR-P", f"naive oracle, last: seconds ({how})", t_naive)
    add("OAR-P", f"plain batched path (prefix_reuse=False): seconds (extrapolated from {k + 1} sequences)", t_plain)
    add("OAR-P", "speed-up prefix reuse vs naive (last)", t_naive / t_ours, f">= {P_TARGET}", t_naive / t_ours >= P_TARGET)
    add("OAR-P", "speed-up prefix reuse vs plain batched (last)", t_plain / t_ours)
    add("OAR-P", "peak extra memory, prefix reuse (MiB)", mb(res["peak_extra_bytes"]))
    add("OAR-P", f"peak extra memory, one body forward of {args.max_batch_tokens} tokens (MiB)", mb(budget["peak_extra_bytes"]))
    add("OAR-P", "peak extra memory, naive oracle (MiB)", mb(naive["peak_extra_bytes"]))
    ratio = res["peak_extra_bytes"] / max(budget["peak_extra_bytes"], 1)
    add("OAR-P", "prefix-reuse peak / budget-forward peak", ratio, "<= 2", ratio <= 2)
    oarp_last = torch.load(tmp / "last.pt")

    # OAR-G step (in this process)
    model = build_model(**mcfg)
    segs = make_segments(**shape, vocab=args.vocab)
    for name, t, r, target in step_rows(model, segs, "cpu", args.repeats, three_pass=not args.no_three_pass, floor=True):
        if t is not None:
            add("OAR-G", f"{name}: seconds", t)
        if r is not None:
            add("OAR-G", f"{name}: ratio to GRPO step" if t is not None else name, r,
                f"<= {target}" if target else "", (r <= target) if target else True)
    F = min(args.fidelity_responses, B)
    fsegs = segs[:F]
    oarp = {"last": (oarp_last[0][:F], oarp_last[1][:F])}
    for mode in MODES[1:]:
        oarp[mode] = oar.perturbation_importance(model, fsegs, mode, max_batch_tokens=args.max_batch_tokens)
    for name, v in fidelity_rows(model, fsegs, oarp):
        add("fidelity", f"{name}, {F} responses", v)
    return table


# ------------------------------------------------------------------------------ GPU


def gpu_rows(device, prompt=512, reasoning=2048, conclude=12, answer=4, responses=4, naive_forwards=32,
             budget=16384, repeats=3, model_kwargs=None, emit=None, budget_s=float("inf")) -> list:
    """Rows for benchmarks/gpu_check.py on a Qwen2-0.5B-shaped model from a config (bf16).

    OAR-P prefix reuse vs the naive oracle (extrapolated from `naive_forwards` forwards of the
    real shape) and vs the plain batched path (one response, times `responses`); peak extra
    CUDA memory of OAR-P vs one forward of `budget` tokens; OAR-G step vs GRPO step.
    Failures become rows with ok=False, never exceptions. emit(row) is called with each row as
    it is made; past budget_s seconds the measurements left are skipped (a row says so).
    """
    rows, end = harness.Rows(emit), harness.Budget(budget_s)

    def spent(op, what):
        if end.spent():
            rows.add(op, shp, f"{what}: skipped (time budget spent)", None, "", False)
        return end.spent()

    shp = f"B={responses} P={prompt} R={reasoning} C+A={conclude + answer}"
    try:
        mk = dict(QWEN_05B if model_kwargs is None else model_kwargs)
        model = build_model(**mk, device=device)
        nparams = sum(p.numel() for p in model.parameters())
        vocab = mk["vocab"]
        segs = make_segments(responses, prompt, reasoning, conclude, answer, vocab)
    except Exception as e:  # noqa: BLE001
        rows.add("importance", shp, f"model build failed: {e!r}", None, "", False)
        return rows
    try:
        if not spent("perturbation_importance", "speed-up vs naive"):
            t_ours, mem_ours, _ = harness.peak_memory(lambda: oar.perturbation_importance(model, segs, "last", max_batch_tokens=budget), device)
            probe = probe_segment(segs[0], naive_forwards)
            t_probe, mem_naive, _ = harness.peak_memory(lambda: perturbation_importance_naive(model, [probe], "last"), device)
            t_naive = t_probe / (naive_forwards + 1) * responses * (reasoning + 1)  # same-shape forwards
            rows.add("perturbation_importance", shp, f"speed-up vs naive, last ({nparams / 1e6:.0f}M params; ours {t_ours:.1f} s, naive {t_naive:.0f} s extrapolated)",
                     t_naive / t_ours, f">= {P_TARGET}", t_naive / t_ours >= P_TARGET)
        if not spent("perturbation_importance", "speed-up vs plain batched path"):
            t_pp, _, _ = harness.peak_memory(lambda: oar.perturbation_importance(model, [probe], "last", max_batch_tokens=budget, prefix_reuse=False), device)
            t_plain = t_pp / (naive_forwards + 1) * responses * (reasoning + 1)
            rows.add("perturbation_importance", shp, f"speed-up vs plain batched path (prefix_reuse=False, {t_plain:.0f} s extrapolated)", t_plain / t_ours, "", True)
        if not spent("perturbation_importance", "peak extra memory"):
            ids = torch.randint(3, vocab, (max(1, budget // (prompt + reasoning + conclude + answer)), prompt + reasoning + conclude + answer), device=device)
            with torch.no_grad():
                _, mem_budget, _ = harness.peak_memory(lambda: model.get_decoder()(input_ids=ids).last_hidden_state.sum(), device)
            rows.add("perturbation_importance", shp, f"peak extra memory / one {budget}-token forward ({mem_ours / 2**20:.0f} vs {mem_budget / 2**20:.0f} MiB; naive {mem_naive / 2**20:.0f} MiB)",
                     mem_ours / max(mem_budget, 1), "<= 2", mem_ours <= 2 * mem_budget)
    except Exception as e:  # noqa: BLE001
        rows.add("perturbation_importance", shp, f"error: {e!r}", None, "", False)
    try:
        if not spent("OARGStep", "OAR-G step vs GRPO step"):
            for name, t, r, target in step_rows(model, segs, device, repeats, modes=("answer_mean", "answer_joint", "last"), three_pass=False, floor=True):
                if r is not None:
                    rows.add("OARGStep", shp, f"{name} / GRPO step ({t * 1e3:.0f} ms)", r, f"<= {target}" if target else "", (r <= target) if target else True)
    except Exception as e:  # noqa: BLE001
        rows.add("OARGStep", shp, f"error: {e!r}", None, "", False)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--model", help="local transformers folder to use instead of a model built from a config")
    ap.add_argument("--responses", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--reasoning", type=int, default=256)
    ap.add_argument("--conclude", type=int, default=12)
    ap.add_argument("--answer", type=int, default=4)
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    ap.add_argument("--naive-forwards", type=int, default=16, help="forwards timed for the naive extrapolation")
    ap.add_argument("--fidelity-responses", type=int, default=2, help="responses scored by OAR-P in every mode")
    ap.add_argument("--full", action="store_true", help="run the naive oracle whole (slow)")
    ap.add_argument("--no-three-pass", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gpu", action="store_true", help="print gpu_rows('cuda') instead")
    ap.add_argument("--out", help="write the table to this .md or .csv file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.gpu:
        for row in gpu_rows("cuda"):
            print(row)
        return
    t0 = time.time()
    table = cpu_report(args)
    env = harness.environment("cpu")
    head = [f"python benchmarks/bench_importance.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(),
            ", ".join(f"{k} {v}" for k, v in env.items()), f"total {time.time() - t0:.0f} s"]
    text = harness.render(table, head, cols=("op", "metric", "value", "target", "ok"))
    print(text)
    if args.out and args.out.endswith(".csv"):
        harness.write_csv(table, args.out, env)
    elif args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
