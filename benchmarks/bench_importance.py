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
* Memory (CPU): each measured call runs in a fresh child process; a sampler thread reads the
  resident set size every 2 ms, and we report peak RSS during the call minus RSS just before
  it. The budget reference is one no-grad body forward of max_batch_tokens tokens, the most a
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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import oar_kernels as oar
from oar_kernels.importance import OARGStep
from oar_kernels.reference import gradient_importance_naive, perturbation_importance_naive
from oar_kernels.segments import Segments

MODES = ("last", "answer_mean", "answer_joint")
P_TARGET = 2.5  # OAR-P speed-up over the naive oracle
G_TARGET = 1.45  # OAR-G step time / GRPO step time
FLOOR = "lower bound, exact KL modes (GRPO step + chunk forward + input backward)"


# ------------------------------------------------------------------------------ setup


def build_model(arch="llama", hidden=512, layers=4, heads=8, kv_heads=4, intermediate=None, vocab=32000,
                max_pos=4096, dtype=torch.float32, device="cpu", seed=0, path=None):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if path:  # a pretrained model from a local folder (e.g. scripts/export_smollm2.py's output)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
        return model.to(device).eval()

    cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    cfg = cfg_cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 3 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_pos, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    )
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(cfg)
    return model.to(device=device, dtype=dtype).eval()


def make_segments(n, prompt, reasoning, conclude, answer, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, vocab, (k,), generator=g)  # noqa: E731 - no special ids
    concl = ids(conclude)  # one fixed conclude text for all
    return [Segments(ids(prompt), ids(reasoning), concl, ids(answer)) for _ in range(n)]


def responses_of(segs, tail=1):
    """Sampled responses: reasoning + the answer statement (answer ids) + EOS."""
    return [torch.cat([s.reasoning_ids, s.answer_ids, torch.ones(tail, dtype=torch.long)]) for s in segs]


def probe_segment(s: Segments, k: int) -> Segments:
    """s with only its last k reasoning tokens scored (the others moved into the prompt)."""
    cut = s.num_reasoning - k
    return Segments(torch.cat([s.prompt_ids, s.reasoning_ids[:cut]]), s.reasoning_ids[cut:], s.conclude_ids, s.answer_ids)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def median_time(fn, device="cpu", repeats=3, warmup=1):
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device)[0] for _ in range(repeats))


# ------------------------------------------------------------------------------ memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn, device="cpu"):
    """(seconds, peak bytes above the level just before the call, fn's result)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t, out = timed(fn, device)
        return t, torch.cuda.max_memory_allocated(device) - before, out
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        t, out = timed(fn)
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return t, peak[0] - before, out


# ------------------------------------------------------------------------------ child jobs


def _child(job: dict) -> dict:
    """One measured call in a fresh process (clean allocator, honest peak RSS)."""
    torch.set_num_threads(job["threads"])
    a = job["shape"]
    model = build_model(**job["model"])
    segs = make_segments(a["n"], a["prompt"], a["reasoning"], a["conclude"], a["answer"], job["model"]["vocab"])
    kind = job["kind"]
    if kind == "oarp":
        fn = lambda: oar.perturbation_importance(model, segs, job["mode"], max_batch_tokens=job["budget"])  # noqa: E731
    elif kind in ("naive_probe", "plain_probe"):
        # Same total length as a real row, only `k` reasoning tokens: k + 1 sequences of that
        # shape, each costing what one sequence of the real run costs.
        probe = probe_segment(segs[0], job["k"])
        if kind == "naive_probe":
            fn = lambda: perturbation_importance_naive(model, [probe], job["mode"])  # noqa: E731
        else:
            fn = lambda: oar.perturbation_importance(  # noqa: E731
                model, [probe], job["mode"], max_batch_tokens=job["budget"], prefix_reuse=False)
    elif kind == "naive_full":
        fn = lambda: perturbation_importance_naive(model, segs, job["mode"])  # noqa: E731
    elif kind == "budget_forward":
        le = a["prompt"] + a["reasoning"] + a["conclude"] + a["answer"]
        g = max(1, job["budget"] // le)
        ids = torch.randint(3, job["model"]["vocab"], (g, le))

        def fn():
            with torch.no_grad():
                return model.get_decoder()(input_ids=ids).last_hidden_state.sum()
    else:
        raise ValueError(kind)
    t, mem, out = peak_extra_memory(fn)
    res = {"seconds": t, "peak_extra_bytes": mem}
    if job.get("save") and isinstance(out, tuple):
        torch.save(out, job["save"])
    return res


def run_child(job: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {job['kind']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ OAR-G step


def _grpo_inputs(segs, resps, device):
    B = len(segs)
    P = [s.prompt_ids.numel() for s in segs]
    N = [r.numel() for r in resps]
    T, Nm = max(p + n for p, n in zip(P, N)), max(N)
    ids = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        ids[b, : P[b] + N[b]] = torch.cat([segs[b].prompt_ids, resps[b]])
    mask = torch.arange(Nm)[None, :] < torch.tensor(N)[:, None]
    pred = torch.where(mask, torch.tensor(P)[:, None] - 1 + torch.arange(Nm)[None, :], 0)
    targets = torch.where(mask, ids.gather(1, (pred + 1).clamp_max(T - 1)), 0)
    return ids.to(device), pred.to(device), targets.to(device), mask.to(device)


def grpo_step(model, inputs, adv, weights=None):
    """The plain GRPO step the OAR-G step is compared with: body forward, LM head at the
    response positions, log-probs, oar.grpo_loss, backward (same code path as OARGStep)."""
    ids, pred, targets, mask = inputs
    h = model.get_decoder()(input_ids=ids).last_hidden_state
    h = h.gather(1, pred[:, :, None].expand(*pred.shape, h.shape[-1]))
    logits = model.get_output_embeddings()(h)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, :, None]).squeeze(-1)
    loss, _ = oar.grpo_loss(logp, None, adv, mask, weights=weights)
    loss.backward()
    model.zero_grad(set_to_none=True)


def chunk_pass(model, segs, device, mode="answer_mean"):
    """The least work any exact KL-mode (answer_mean, last) OAR-G step adds to the GRPO step:
    one forward of reasoning + conclude (+ answer) of every response and a backward to those
    input embeddings only, LM head at the positions P_final reads; without the prompts (fewer
    keys than the real noisy pass sees) and with ragged chunks packed into rows of the longest
    chunk's length, as OARGStep packs them (block-diagonal causal mask). KL(P_clean ||
    P_noisy) has zero gradient at zero noise, so its gradient needs a forward at the noisy
    embeddings: the policy forward cannot serve it exactly."""
    from oar_kernels.importance._common import pack_first_fit

    body, head = model.get_decoder(), model.get_output_embeddings()
    if mode == "last":
        chunks, need = [torch.cat([s.reasoning_ids, s.conclude_ids]) for s in segs], [1] * len(segs)
    else:
        chunks = [torch.cat([s.reasoning_ids, s.conclude_ids, s.answer_ids[:-1]]) for s in segs]
        need = [s.answer_ids.numel() for s in segs]
    q = max(c.numel() for c in chunks)
    bins = pack_first_fit({i: c.numel() for i, c in enumerate(chunks)}, q)
    ids = torch.zeros(len(bins), q, dtype=torch.long)
    pos = torch.zeros(len(bins), q, dtype=torch.long)
    owner = torch.full((len(bins), q), -1, dtype=torch.long)
    rows, cols = [], []
    for k, members in enumerate(bins):
        o = 0
        for i in members:
            n = chunks[i].numel()
            ids[k, o : o + n], pos[k, o : o + n], owner[k, o : o + n] = chunks[i], torch.arange(n), i
            rows += [k] * need[i]
            cols += range(o + n - need[i], o + n)
            o += n
    qi = torch.arange(q)
    allowed = (owner[:, None, :] == owner[:, :, None]) & (qi[None, None, :] <= qi[None, :, None])
    dtype = model.get_input_embeddings().weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    with torch.no_grad():
        x = model.get_input_embeddings()(ids.to(device))
    x.requires_grad_(True)
    h = body(inputs_embeds=x, attention_mask=mask.to(device), position_ids=pos.to(device)).last_hidden_state
    obj = torch.log_softmax(head(h[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]).float(), -1).mean()
    torch.autograd.grad(obj, [x])


def step_rows(model, segs, device, repeats, modes=("answer_mean", "answer_joint", "last"), three_pass=True,
              floor=False):
    """Seconds per step (median over `repeats` rounds; each round times every method once, in
    turn, so that load drifting on a shared machine hits all of them alike) and ratios.
    floor: also time the GRPO step plus chunk_pass, a lower bound for the exact KL modes."""
    resps = responses_of(segs)
    inputs = _grpo_inputs(segs, resps, device)
    adv = torch.linspace(-1, 1, len(segs), device=device)
    model.train()
    methods = {"GRPO step (forward + loss backward)": lambda: grpo_step(model, inputs, adv)}
    variants = [(m, "exact") for m in modes] + [(m, "linearized") for m in modes if m != "answer_joint"]
    for mode, kl in variants:
        step = OARGStep(model, mode=mode, kl_grad=kl)

        def oarg(step=step):
            out = step(segs, resps)
            loss, _ = out.loss(adv)
            loss.backward()
            model.zero_grad(set_to_none=True)

        methods[f"OAR-G step ({mode})" if kl == "exact" else f"OAR-G step ({mode}, linearized)"] = oarg
    if three_pass:
        def three():
            s, m = gradient_importance_naive(model, segs, "answer_mean")
            w = oar.bilevel_reshape(s, m)
            full = torch.ones(inputs[3].shape, device=device)
            full[:, : w.shape[1]] = w
            grpo_step(model, inputs, adv, full)

        methods["three-pass (naive OAR-G + GRPO step), answer_mean"] = three
    if floor:
        def bound():
            grpo_step(model, inputs, adv)
            chunk_pass(model, segs, device)

        methods[FLOOR] = bound
    times = {k: [] for k in methods}
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in methods.items():
            times[k].append(timed(fn, device)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    t_grpo = med["GRPO step (forward + loss backward)"]
    rows = []
    for k, t in med.items():
        if k.startswith("GRPO"):
            rows.append((k, t, None, None))
        else:
            rows.append((k, t, t / t_grpo, G_TARGET if k == "OAR-G step (answer_mean)" else None))
    if three_pass:
        rows.append(("three-pass / OAR-G step (answer_mean)", None,
                     med["three-pass (naive OAR-G + GRPO step), answer_mean"] / med["OAR-G step (answer_mean)"], None))
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


# ------------------------------------------------------------------------------ main


def cpu_report(args):
    shape = dict(n=args.responses, prompt=args.prompt, reasoning=args.reasoning, conclude=args.conclude, answer=args.answer)
    mcfg = dict(arch=args.arch, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads, vocab=args.vocab)
    if args.model:
        from transformers import AutoConfig

        args.vocab = AutoConfig.from_pretrained(args.model).vocab_size
        mcfg = dict(path=args.model, vocab=args.vocab)
    base = dict(threads=args.threads, shape=shape, model=mcfg, budget=args.max_batch_tokens)
    table = []  # (section, metric, value, target, ok)
    tmp = Path(tempfile.mkdtemp())
    B, R = args.responses, args.reasoning

    # OAR-P at the full shape, mode last (the OAR-P default): time, memory, scores
    res = run_child({**base, "kind": "oarp", "mode": "last", "save": str(tmp / "last.pt")})
    t_ours = res["seconds"]
    k = args.naive_forwards - 1
    if args.full:
        naive = run_child({**base, "kind": "naive_full", "mode": "last"})
        t_naive, how = naive["seconds"], "measured"
    else:
        naive = run_child({**base, "kind": "naive_probe", "mode": "last", "k": k})
        t_naive, how = naive["seconds"] / (k + 1) * B * (R + 1), f"extrapolated from {k + 1} forwards"
    plain = run_child({**base, "kind": "plain_probe", "mode": "last", "k": k})
    t_plain = plain["seconds"] / (k + 1) * B * (R + 1)
    budget = run_child({**base, "kind": "budget_forward"})
    mb = lambda x: x / 2**20  # noqa: E731
    table.append(("OAR-P", "prefix reuse, last: seconds", t_ours, "", None))
    table.append(("OAR-P", f"naive oracle, last: seconds ({how})", t_naive, "", None))
    table.append(("OAR-P", f"plain batched path (prefix_reuse=False): seconds (extrapolated from {k + 1} sequences)", t_plain, "", None))
    sp = t_naive / t_ours
    table.append(("OAR-P", "speed-up prefix reuse vs naive (last)", sp, f">= {P_TARGET}", sp >= P_TARGET))
    table.append(("OAR-P", "speed-up prefix reuse vs plain batched (last)", t_plain / t_ours, "", None))
    table.append(("OAR-P", "peak extra memory, prefix reuse (MiB)", mb(res["peak_extra_bytes"]), "", None))
    table.append(("OAR-P", f"peak extra memory, one body forward of {args.max_batch_tokens} tokens (MiB)", mb(budget["peak_extra_bytes"]), "", None))
    table.append(("OAR-P", "peak extra memory, naive oracle (MiB)", mb(naive["peak_extra_bytes"]), "", None))
    ratio = res["peak_extra_bytes"] / max(budget["peak_extra_bytes"], 1)
    table.append(("OAR-P", "prefix-reuse peak / budget-forward peak", ratio, "<= 2", ratio <= 2))
    oarp_last = torch.load(tmp / "last.pt")

    # OAR-G step (in this process)
    model = build_model(**mcfg)
    segs = make_segments(**shape, vocab=args.vocab)
    for name, t, r, target in step_rows(model, segs, "cpu", args.repeats, three_pass=not args.no_three_pass, floor=True):
        if t is not None:
            table.append(("OAR-G", f"{name}: seconds", t, "", None))
        if r is not None:
            table.append(("OAR-G", f"{name}: ratio to GRPO step" if t is not None else name, r,
                          f"<= {target}" if target else "", (r <= target) if target else None))
    F = min(args.fidelity_responses, B)
    fsegs = segs[:F]
    oarp = {"last": (oarp_last[0][:F], oarp_last[1][:F])}
    for mode in MODES[1:]:
        oarp[mode] = oar.perturbation_importance(model, fsegs, mode, max_batch_tokens=args.max_batch_tokens)
    for name, v in fidelity_rows(model, fsegs, oarp):
        table.append(("fidelity", f"{name}, {F} responses", v, "", None))
    return table


def format_table(table, fmt="md"):
    if fmt == "csv":
        lines = ["section,metric,value,target,ok"]
        for s, m, v, t, ok in table:
            lines.append(f"{s},\"{m}\",{v:.6g},{t},{'' if ok is None else ok}")
        return "\n".join(lines) + "\n"
    lines = ["| section | metric | value | target | ok |", "|---|---|---|---|---|"]
    for s, m, v, t, ok in table:
        lines.append(f"| {s} | {m} | {v:.4g} | {t} | {'' if ok is None else ('yes' if ok else 'NO')} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ GPU


def _row(op, shape, metric, value, target, ok):
    return {"op": op, "shape": shape, "metric": metric, "value": value, "target": target, "ok": bool(ok)}


QWEN_05B = dict(arch="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936,
                max_pos=32768, dtype=torch.bfloat16)


def gpu_rows(device, prompt=512, reasoning=2048, conclude=12, answer=4, responses=4, naive_forwards=32,
             budget=16384, repeats=3, model_kwargs=None, emit=None, budget_s=float("inf")) -> list[dict]:
    """Rows for benchmarks/gpu_check.py on a Qwen2-0.5B-shaped model from a config (bf16).

    OAR-P prefix reuse vs the naive oracle (extrapolated from `naive_forwards` forwards of the
    real shape) and vs the plain batched path (one response, times `responses`); peak extra
    CUDA memory of OAR-P vs one forward of `budget` tokens; OAR-G step vs GRPO step.
    Failures become rows with ok=False, never exceptions. emit(row) is called with each row as
    it is made; past budget_s seconds the measurements left are skipped (a row says so).
    """
    rows, end = [], time.monotonic() + budget_s

    def add(row):
        rows.append(row)
        if emit:
            emit(row)

    def spent(op, what):
        if time.monotonic() > end:
            add(_row(op, shp, f"{what}: skipped (time budget spent)", None, "", False))
        return time.monotonic() > end

    shp = f"B={responses} P={prompt} R={reasoning} C+A={conclude + answer}"
    try:
        mk = dict(QWEN_05B if model_kwargs is None else model_kwargs)
        model = build_model(**mk, device=device)
        nparams = sum(p.numel() for p in model.parameters())
        vocab = mk["vocab"]
        segs = make_segments(responses, prompt, reasoning, conclude, answer, vocab)
    except Exception as e:  # noqa: BLE001
        add(_row("importance", shp, f"model build failed: {e!r}", None, "", False))
        return rows
    try:
        if not spent("perturbation_importance", "speed-up vs naive"):
            t_ours, mem_ours, _ = peak_extra_memory(lambda: oar.perturbation_importance(model, segs, "last", max_batch_tokens=budget), device)
            probe = probe_segment(segs[0], naive_forwards)
            t_probe, mem_naive, _ = peak_extra_memory(lambda: perturbation_importance_naive(model, [probe], "last"), device)
            t_naive = t_probe / (naive_forwards + 1) * responses * (reasoning + 1)  # same-shape forwards
            add(_row("perturbation_importance", shp, f"speed-up vs naive, last ({nparams / 1e6:.0f}M params; ours {t_ours:.1f} s, naive {t_naive:.0f} s extrapolated)",
                     t_naive / t_ours, f">= {P_TARGET}", t_naive / t_ours >= P_TARGET))
        if not spent("perturbation_importance", "speed-up vs plain batched path"):
            t_pp, _, _ = peak_extra_memory(lambda: oar.perturbation_importance(model, [probe], "last", max_batch_tokens=budget, prefix_reuse=False), device)
            t_plain = t_pp / (naive_forwards + 1) * responses * (reasoning + 1)
            add(_row("perturbation_importance", shp, f"speed-up vs plain batched path (prefix_reuse=False, {t_plain:.0f} s extrapolated)", t_plain / t_ours, "", True))
        if not spent("perturbation_importance", "peak extra memory"):
            ids = torch.randint(3, vocab, (max(1, budget // (prompt + reasoning + conclude + answer)), prompt + reasoning + conclude + answer), device=device)
            with torch.no_grad():
                _, mem_budget, _ = peak_extra_memory(lambda: model.get_decoder()(input_ids=ids).last_hidden_state.sum(), device)
            add(_row("perturbation_importance", shp, f"peak extra memory / one {budget}-token forward ({mem_ours / 2**20:.0f} vs {mem_budget / 2**20:.0f} MiB; naive {mem_naive / 2**20:.0f} MiB)",
                     mem_ours / max(mem_budget, 1), "<= 2", mem_ours <= 2 * mem_budget))
    except Exception as e:  # noqa: BLE001
        add(_row("perturbation_importance", shp, f"error: {e!r}", None, "", False))
    try:
        if not spent("OARGStep", "OAR-G step vs GRPO step"):
            for name, t, r, target in step_rows(model, segs, device, repeats, modes=("answer_mean", "answer_joint", "last"), three_pass=False, floor=True):
                if r is not None:
                    add(_row("OARGStep", shp, f"{name} / GRPO step ({t * 1e3:.0f} ms)", r, f"<= {target}" if target else "", (r <= target) if target else True))
    except Exception as e:  # noqa: BLE001
        add(_row("OARGStep", shp, f"error: {e!r}", None, "", False))
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
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    torch.set_num_threads(args.threads)
    if args.gpu:
        for row in gpu_rows("cuda"):
            print(row)
        return
    t0 = time.time()
    table = cpu_report(args)
    text = format_table(table)
    print(text)
    print(f"total {time.time() - t0:.0f} s, {args.threads} thread(s)")
    if args.out:
        Path(args.out).write_text(format_table(table, "csv" if args.out.endswith(".csv") else "md"))


if __name__ == "__main__":
    main()
