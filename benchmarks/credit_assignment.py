"""Does OAR find the tokens that decide the answer? A credit-assignment benchmark with ground truth.

    python benchmarks/credit_assignment.py                      # the trained default policy
    python benchmarks/credit_assignment.py --model models/smollm2-135m --responses 32
    python benchmarks/credit_assignment.py --out results.md --threads 1

Responses are built, not sampled, so which tokens decide the final answer is known by
construction. Each is a worked solution of a two-step problem of the built-in arithmetic task,

    prompt:     What is 17 + 8 - 12?\\n
    reasoning:  17 + 8 = 25\\n25 - 12 = 13\\n
    conclude:   The answer is             answer: 13

and the final answer is a copy of the last line's result. Token classes of the reasoning:

* deciding (D): the characters of the last line's result ("13"). Change one and the answer a
  reader copies changes with it.
* last-step inputs (C): the last line's operands and operator ("25", "-", "12"). The answer
  depends on them only for a reader who recomputes instead of copying: excluded from the main
  AUC, counted as deciding in the second one (AUC D+C).
* non-deciding (N): the digits and operators of the first line ("17", "+", "8", "25"). Once
  the last line is written, the answer does not depend on them (the last line restates the
  first line's result).
* format (F): spaces, "=", newlines. Not in any AUC; they compete for the top-k.

Wrong responses (last result off by one, own answer = that wrong result) measure the two
readings of the answer modes: conditioned on the response's own answer or on the reference.

Estimators: OAR-P (each P_final mode), OAR-G (each mode, both scores, noise 1e-4 / 1e-3 /
1e-2, two noise draws), and baselines a user might try instead: uniform, random, the entropy
of the policy's next-token distribution at each token, and the plain input-gradient norm of
the answer's log-likelihood at the clean embeddings (no noise; equal to OAR-G answer_joint
grad_norm at noise 0).

Metrics, averaged over responses: AUC of D vs N (ties count half), AUC of D+C vs N, recall of
D in the top-|D| reasoning tokens (ties broken by a fixed random order), the Bi-Level weight
ratio mean w(D) / mean w(N) (defaults tau 0.25, beta 1, floor 0.1), Spearman's rho with OAR-P
(OAR rows: OAR-P of the same mode; baselines: OAR-P last), Spearman's rho between two OAR-G
noise draws, and wall time per response of one batched call.
"""

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import harness
import torch

import oar_kernels as oar
from oar_kernels.segments import Segments

D, C, N, F = "D", "C", "N", "F"
OAR_MODES = ("last", "answer_mean", "answer_joint", "last_after_answer")
CONCLUDE = "The answer is "


# ------------------------------------------------------------------------------------------
# Ground-truth cases
# ------------------------------------------------------------------------------------------


@dataclass
class Case:
    prompt: str
    reasoning: str
    labels: List[str]  # one class per reasoning character
    own: str  # the answer the response states (its last result)
    reference: str  # the true result
    segments: Optional[Segments] = None
    token_labels: List[str] = field(default_factory=list)


def _line(a: int, op: str, b: int, r: int, first: bool) -> Tuple[str, List[str]]:
    """'a op b = r\\n' and its character classes."""
    text, labels = "", []
    for part, cls in ((str(a), N if first else C), (" ", F), (op, N if first else C), (" ", F), (str(b), N if first else C),
                      (" = ", F), (str(r), N if first else D), ("\n", F)):
        text += part
        labels += [cls] * len(part)
    return text, labels


def make_cases(n: int, seed: int = 0, wrong: bool = False) -> List[Case]:
    """n two-step problems of the built-in task's kind (operands 1..20, results 0..99),
    deterministic in seed; wrong=True: the last line's result is off by one (and so is the
    response's own answer)."""
    rng = random.Random(f"credit:{seed}:{wrong}")
    out = []
    while len(out) < n:
        a, b, d = rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 20)
        o1, o2 = rng.choice("+-"), rng.choice("+-")
        c = a + b if o1 == "+" else a - b
        e = c + d if o2 == "+" else c - d
        if not (0 <= c <= 99 and 1 <= e <= 98):
            continue
        shown = e + rng.choice((-1, 1)) if wrong else e
        l1, lab1 = _line(a, o1, b, c, True)
        l2, lab2 = _line(c, o2, d, shown, False)
        out.append(Case(f"What is {a} {o1} {b} {o2} {d}?\n", l1 + l2, lab1 + lab2, str(shown), str(e)))
    return out


def _token_spans(tokenizer, text: str) -> List[Tuple[int, int]]:
    """Character span of each token of tokenizer(text) (offsets, else prefix decodes)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(s) for s in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError):  # pragma: no cover - slow tokenizers
        ids = tokenizer.encode(text, add_special_tokens=False)
        spans, prev = [], 0
        for k in range(1, len(ids) + 1):
            end = len(tokenizer.decode(ids[:k]))
            spans.append((prev, end))
            prev = end
        return spans


def attach_segments(cases: Sequence[Case], tokenizer, answer: str = "own", prompt_prefix: str = "",
                    conclude: str = CONCLUDE) -> List[Segments]:
    """Segments of each case (answer "own" or "reference") and each reasoning token's class:
    the class of the characters it covers, X where it covers more than one class (spaces
    glued to digits by a BPE tokenizer count as the digit's class)."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    lead = conclude.endswith(" ") is False  # BPE-style: the answer carries its own leading space
    segs = []
    for case in cases:
        ids = enc(case.reasoning)
        spans = _token_spans(tokenizer, case.reasoning)
        labels = []
        for s, e in spans:
            cls = {case.labels[i] for i in range(s, e)} - ({F} if e - s > 1 else set())
            labels.append(cls.pop() if len(cls) == 1 else (F if not cls else "X"))
        ans = case.own if answer == "own" else case.reference
        seg = Segments(enc(prompt_prefix + case.prompt), ids, enc(conclude), enc((" " if lead else "") + ans))
        case.token_labels = labels
        segs.append(seg)
    return segs


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


def ranks(x: Sequence[float]) -> List[float]:
    """Average ranks (ties share the mean of their positions), 0-based."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's rho with average ranks; None when either side is constant."""
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / (sxx * syy) ** 0.5


def auc(pos: Sequence[float], neg: Sequence[float]) -> Optional[float]:
    """P(score of a positive > score of a negative), ties counting half."""
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def topk_recall(scores: Sequence[float], labels: Sequence[str], seed: int = 0) -> Optional[float]:
    """Share of the D tokens among the top-|D| scores (ties broken by a fixed random order)."""
    k = sum(1 for c in labels if c == D)
    if k == 0:
        return None
    tiebreak = list(range(len(scores)))
    random.Random(seed).shuffle(tiebreak)
    top = sorted(range(len(scores)), key=lambda i: (-scores[i], tiebreak[i]))[:k]
    return sum(1 for i in top if labels[i] == D) / k


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def metrics(scores: torch.Tensor, mask: torch.Tensor, cases: Sequence[Case],
            ref: Optional[torch.Tensor] = None, draw2: Optional[torch.Tensor] = None) -> Dict[str, Optional[float]]:
    """Per-response metrics averaged over the responses (see the module docstring)."""
    w = oar.bilevel_reshape(scores.float(), mask)
    out = {"auc": [], "auc_dc": [], "recall": [], "w_ratio": [], "rho_oarp": [], "rho_draws": []}
    for b, case in enumerate(cases):
        R = len(case.token_labels)
        if not bool(mask[b, :R].all()):
            continue
        s = scores[b, :R].tolist()
        lab = case.token_labels
        pos = [v for v, c in zip(s, lab) if c == D]
        neg = [v for v, c in zip(s, lab) if c == N]
        out["auc"].append(auc(pos, neg))
        out["auc_dc"].append(auc([v for v, c in zip(s, lab) if c in (D, C)], neg))
        out["recall"].append(topk_recall(s, lab, seed=b))
        wd = [float(w[b, i]) for i, c in enumerate(lab) if c == D]
        wn = [float(w[b, i]) for i, c in enumerate(lab) if c == N]
        out["w_ratio"].append((sum(wd) / len(wd)) / (sum(wn) / len(wn)) if wd and wn and sum(wn) > 0 else None)
        if ref is not None:
            out["rho_oarp"].append(spearman(s, ref[b, :R].tolist()))
        if draw2 is not None:
            out["rho_draws"].append(spearman(s, draw2[b, :R].tolist()))
    return {k: _mean(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------


def _scored_mask(segs: Sequence[Segments]) -> Tuple[torch.Tensor, torch.Tensor]:
    R = max(s.num_reasoning for s in segs)
    mask = torch.zeros(len(segs), R, dtype=torch.bool)
    for b, s in enumerate(segs):
        mask[b, : s.num_reasoning] = True
    return torch.zeros(len(segs), R), mask


def uniform_scores(model, segs, **_):
    scores, mask = _scored_mask(segs)
    return scores + 1.0, mask


def random_scores(model, segs, seed: int = 0, **_):
    scores, mask = _scored_mask(segs)
    return torch.rand(scores.shape, generator=torch.Generator().manual_seed(seed)), mask


@torch.no_grad()
def entropy_scores(model, segs, **_):
    """Entropy of the policy's next-token distribution at the position predicting each
    reasoning token (high-entropy "forking" tokens)."""
    scores, mask = _scored_mask(segs)
    dev = model.get_input_embeddings().weight.device
    for b, s in enumerate(segs):
        ids = torch.cat([s.prompt_ids, s.reasoning_ids]).to(dev)[None]
        logits = model(input_ids=ids).logits[0].float()
        P = s.reasoning_start
        logp = torch.log_softmax(logits[P - 1 : P - 1 + s.num_reasoning], -1)
        scores[b, : s.num_reasoning] = -(logp.exp() * logp).sum(-1).cpu()
    return scores, mask


def input_grad_norm_scores(model, segs, **_):
    """||d phi / d e_t||, phi = mean log-prob of the answer tokens, at the clean embeddings."""
    scores, mask = _scored_mask(segs)
    emb = model.get_input_embeddings()
    dev = emb.weight.device
    for b, s in enumerate(segs):
        ids = s.sequence(True).to(dev)[None]
        with torch.no_grad():
            e = emb(ids)
        e.requires_grad_(True)
        with torch.enable_grad():
            logits = model(inputs_embeds=e).logits[0].float()
            a0, A = s.answer_start, int(s.answer_ids.numel())
            logp = torch.log_softmax(logits[a0 - 1 : a0 - 1 + A], -1)
            phi = logp.gather(-1, s.answer_ids.to(dev)[:, None]).mean()
            (g,) = torch.autograd.grad(phi, e)
        P = s.reasoning_start
        scores[b, : s.num_reasoning] = g[0, P : P + s.num_reasoning].norm(dim=-1).float().cpu()
    return scores, mask


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclass
class Estimator:
    name: str
    fn: Callable
    oarp_mode: str = "last"  # the OAR-P row it is compared with
    draws: bool = False  # OAR-G: a second noise draw


def estimators(noise_scales=(1e-4, 1e-3, 1e-2)) -> List[Estimator]:
    out = []
    for mode in OAR_MODES:
        out.append(Estimator(f"OAR-P {mode}", lambda m, s, mode=mode, **k: oar.perturbation_importance(m, s, mode=mode), mode))
    for mode in OAR_MODES:
        for score in ("grad_x_input", "grad_norm"):
            scales = noise_scales if (mode == "answer_mean" and score == "grad_x_input") else (1e-3,)
            for std in scales:
                out.append(Estimator(
                    f"OAR-G {mode} {score} noise {std:g}",
                    lambda m, s, mode=mode, score=score, std=std, seed=0, **k: oar.gradient_importance(
                        m, s, mode=mode, score=score, noise_std=std, generator=torch.Generator().manual_seed(seed)),
                    mode, draws=mode != "answer_joint" or std > 0))
    out.append(Estimator("OAR-G answer_joint grad_x_input noise 0 (the step's form)",
                         lambda m, s, **k: oar.gradient_importance(m, s, mode="answer_joint", noise_std=0.0), "answer_joint"))
    out += [Estimator("uniform", uniform_scores), Estimator("random", random_scores),
            Estimator("token entropy", entropy_scores), Estimator("input-gradient norm (no noise)", input_grad_norm_scores)]
    return out


def run(model, tokenizer, n: int = 48, seed: int = 0, prompt_prefix: str = "", conclude: str = CONCLUDE,
        noise_scales=(1e-4, 1e-3, 1e-2), only: Optional[Sequence[str]] = None, readings: bool = True,
        log=print) -> Tuple[List[dict], List[dict]]:
    """(rows of the main table, rows of the readings table). only: estimator names to run (by
    prefix; the OAR-P rows others are compared with are run anyway)."""
    model.eval()
    cases = make_cases(n, seed)
    segs = attach_segments(cases, tokenizer, "own", prompt_prefix, conclude)
    ests = estimators(noise_scales)
    if only is not None:
        ests = [e for e in ests if e.name.startswith("OAR-P") or any(e.name.startswith(o) for o in only)]
    oarp = {}
    rows = []
    for est in ests:
        est.fn(model, segs[:1], seed=0)  # warm-up (first-call allocations), not timed
        dt, (scores, mask) = harness.timed(lambda: est.fn(model, segs, seed=0))
        if est.name.startswith("OAR-P"):
            oarp[est.oarp_mode] = scores
        draw2 = est.fn(model, segs, seed=1)[0] if est.draws else None
        ref = None if est.name == f"OAR-P {est.oarp_mode}" else oarp.get(est.oarp_mode)
        m = metrics(scores, mask, cases, ref, draw2)
        m.update(name=est.name, ms=1000 * dt / n)
        rows.append(m)
        log(f"  {est.name:55s} AUC {_fmt(m['auc'])}  recall {_fmt(m['recall'])}  {m['ms']:.1f} ms/resp")

    if not readings:
        return rows, []
    out = bilevel_readings(oarp, segs)
    # the readings: own vs reference answer (wrong responses), last vs last_after_answer
    wrong = make_cases(n, seed, wrong=True)
    own = attach_segments(wrong, tokenizer, "own", prompt_prefix, conclude)
    refs = attach_segments(wrong, tokenizer, "reference", prompt_prefix, conclude)
    for name, fn in (("OAR-P", lambda s, mode: oar.perturbation_importance(model, s, mode=mode)),
                     ("OAR-G", lambda s, mode: oar.gradient_importance(model, s, mode=mode,
                                                                        generator=torch.Generator().manual_seed(0)))):
        for mode in ("answer_mean", "answer_joint"):
            a, am = fn(own, mode)
            b, _ = fn(refs, mode)
            rho = _mean(spearman(a[i, : s.num_reasoning].tolist(), b[i, : s.num_reasoning].tolist())
                        for i, s in enumerate(own) if bool(am[i].any()))
            out.append({"what": f"{name} {mode}: own answer vs reference answer (wrong responses)", "rho": rho})
        a, _ = fn(segs, "last")
        b, _ = fn(segs, "last_after_answer")
        rho = _mean(spearman(a[i, : s.num_reasoning].tolist(), b[i, : s.num_reasoning].tolist()) for i, s in enumerate(segs))
        out.append({"what": f"{name}: last vs last_after_answer", "rho": rho})
    return rows, out


def _bilevel_row(x: List[float], tau: float, clamp: bool, beta=1.0, floor=0.1) -> Tuple[List[float], float]:
    """Bi-Level weights of one response written out (section 5), with or without the clamp at 0;
    returns (weights, the quantile value q)."""
    import math

    s = [math.log1p(max(v, 0.0) if clamp else v) if (clamp or v > -1) else float("nan") for v in x]
    lo, hi = min(s), max(s)
    rng = hi - lo if hi > lo else 1.0
    n = [(v - lo) / rng for v in s]
    srt = sorted(n)
    pos = tau * (len(srt) - 1)
    i = int(math.floor(pos))
    q = srt[i] + (srt[min(i + 1, len(srt) - 1)] - srt[i]) * (pos - i)
    w = [max(v / (q + 1e-8), floor) if v < q else 1 + beta * (v - q) / (1 - q + 1e-8) for v in n]
    tot = sum(w)
    return ([v * len(w) / (tot + 1e-8) for v in w] if tot > 0 else [1.0] * len(w)), q


def bilevel_readings(oarp: Dict[str, torch.Tensor], segs: Sequence[Segments], tau: float = 0.25) -> List[dict]:
    """Effect sizes of two Bi-Level differences on this run's OAR-P scores: the authors' loop,
    which overwrites tau with the first response's quantile value, and log1p without the clamp
    at 0 (answer_joint has negative deltas; below -1 it is NaN)."""
    out = []
    for mode in ("last", "answer_joint"):
        if mode not in oarp:
            continue
        rows = [oarp[mode][b, : s.num_reasoning].double().tolist() for b, s in enumerate(segs)]
        ours = [_bilevel_row(r, tau, True)[0] for r in rows]
        level, theirs = tau, []
        for r in rows:  # the authors' loop: the level becomes the previous response's quantile value
            w, level = _bilevel_row(r, level, True)
            theirs.append(w)
        d = [max(abs(a - b) for a, b in zip(x, y)) for x, y in zip(ours, theirs)]
        out.append({"what": f"Bi-Level, OAR-P {mode}: tau overwritten after the first response (theirs) vs tau per "
                            f"response: max |w diff| per response, mean over responses (max)", "rho": sum(d) / len(d),
                    "extra": max(d)})
        neg = sum(v < 0 for r in rows for v in r) / max(1, sum(len(r) for r in rows))
        noclamp = [_bilevel_row(r, tau, False)[0] for r in rows]
        d = [max(abs(a - b) for a, b in zip(x, y)) for x, y in zip(ours, noclamp)]
        out.append({"what": f"Bi-Level, OAR-P {mode}: no clamp at 0 (theirs) vs clamp: max |w diff| per response, mean "
                            f"(max); share of negative scores {neg:.2f}", "rho": sum(d) / len(d), "extra": max(d)})
    return out


@torch.no_grad()
def answer_probability(model, segs) -> float:
    """Mean over responses of exp(phi): how surely the model writes the answer the reasoning gives."""
    out = []
    for s in segs:
        logits = model(input_ids=s.sequence(True)[None]).logits[0].float()
        a0, A = s.answer_start, int(s.answer_ids.numel())
        logp = torch.log_softmax(logits[a0 - 1 : a0 - 1 + A], -1).gather(-1, s.answer_ids[:, None])
        out.append(float(logp.mean().exp()))
    return sum(out) / len(out)


def _fmt(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table(rows: List[dict], readings: List[dict]) -> str:
    lines = ["| estimator | AUC D vs N | AUC D+C vs N | top-k recall of D | w(D) / w(N) | Spearman vs OAR-P | Spearman, two draws | ms / response |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_fmt(r['auc'])} | {_fmt(r['auc_dc'])} | {_fmt(r['recall'])} | {_fmt(r['w_ratio'], 2)} | "
                     f"{_fmt(r['rho_oarp'])} | {_fmt(r['rho_draws'])} | {r['ms']:.1f} |")
    lines += ["", "| reading | mean Spearman per response (Bi-Level rows: as stated) |", "|---|---|"]
    lines += [f"| {r['what']} | {_fmt(r['rho'])}" + (f" ({_fmt(r['extra'])})" if r.get("extra") is not None else "") + " |"
              for r in readings]
    return "\n".join(lines)


def load_model(name: str):
    if name == "default":
        from oar_kernels.default_job import load_default_policy

        model, tok, _ = load_default_policy(progress=False)
        return model.float(), tok
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32), AutoTokenizer.from_pretrained(name)


def pick_conclude(tokenizer) -> str:
    """'The answer is ' + '13' where that splits the way the tokenizer reads 'The answer is 13';
    else 'The answer is' + ' 13' (BPE tokenizers glue the space to the number)."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    if enc(CONCLUDE + "13") == enc(CONCLUDE) + enc("13"):
        return CONCLUDE
    return CONCLUDE.rstrip()


ONE_SHOT = "What is 5 + 3 - 2?\n5 + 3 = 8\n8 - 2 = 6\nThe answer is 6.\n\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' (the trained default policy) or a transformers folder")
    ap.add_argument("--responses", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="problem seed (OAR-G draws use seeds 0 and 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one-shot", action="store_true",
                    help="prefix every prompt with one worked example (for pretrained models that do not know the format)")
    ap.add_argument("--out", default="", help="write the markdown tables here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load_model(args.model)
    load_s = time.time() - t0
    # BPE tokenizers: the answer carries its leading space ("The answer is" + " 13")
    conclude = pick_conclude(tok)
    print(f"[credit] model {args.model} loaded in {load_s:.0f}s; {args.responses} responses, seed {args.seed}")
    prefix = ONE_SHOT if args.one_shot else ""
    p_answer = answer_probability(model, attach_segments(make_cases(args.responses, args.seed), tok, "own", prefix, conclude))
    rows, readings = run(model, tok, args.responses, args.seed, prefix, conclude)
    env = harness.environment()
    head = (f"Command: `python benchmarks/credit_assignment.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
            f"model {args.model}; {args.responses} responses (problem seed {args.seed}; OAR-G draws 0 and 1); "
            f"commit {env['commit']}, torch {env['torch']}, {args.threads} thread(s), {env['device']}, "
            f"load average at the end {env['load_average']}; {time.time() - t0:.0f} s in all. "
            f"The model's mean probability of the (correct) answer tokens given the reasoning: {p_answer:.3f}.")
    text = head + "\n\n" + table(rows, readings) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
