"""A task where credit assignment matters by construction, for the learning benchmark.

    python benchmarks/credit_task.py build --out runs/plan-policy        # warm start (minutes)
    python benchmarks/learning.py --seeds 0 1 2 3 4 --out runs/learning-plan -- \\
        --model runs/plan-policy --dataset arithmetic_plan --conclude_text "The answer is "
    python benchmarks/credit_task.py drift --policy runs/plan-policy --runs runs/learning-plan

`arithmetic_plan` is the built-in task with a plan line opening every solution:
"Steps: 2\\n17 + 8 = 25\\n25 - 12 = 13\\nThe answer is 13.". The policy is warm-started like the
default one (same recipe, task arithmetic_plan), so half of its warm-start solutions of
two-step problems are shortcuts "Steps: 1\\n17 + 8 = 25\\nThe answer is 25.": the plan digit,
one early *reasoning* token, decides whether the solution stops after the first step, and the
first step's tokens are the same in right and wrong solutions. (In the built-in task the
deciding token is the "T" of "The answer is" after the first step, which belongs to the answer
statement that OAR leaves at weight 1.)

`drift` measures, for the final checkpoint of every run, how far the log-probabilities of
teacher-forced correct held-out solutions moved from the warm-started policy, per token class:
the plan digit (deciding), the first step's tokens (identical in right and wrong solutions:
non-deciding), and the rest.
"""
import argparse
import glob
import os
import statistics

import torch


def build(out: str) -> None:
    from oar_kernels.default_job import WarmStartRecipe, build_default_policy

    build_default_policy(out, WarmStartRecipe(task="arithmetic_plan"), progress=False)


def _classes(tok, prompt: str, solution: str):
    """(ids, per-token class of the solution part): P plan digit, N first step line, O other."""
    first_nl = solution.index("\n")
    second_nl = solution.index("\n", first_nl + 1)
    labels = []
    for i, ch in enumerate(solution):
        if i == first_nl - 1:
            labels.append("P")
        elif first_nl < i <= second_nl:
            labels.append("N")
        else:
            labels.append("O")
    p_ids = tok.encode(prompt, add_special_tokens=False)
    s_ids = tok.encode(solution, add_special_tokens=False)
    assert len(s_ids) == len(solution), "drift expects the character-level default tokenizer"
    return p_ids, s_ids, labels


@torch.no_grad()
def _logps(model, items):
    out = []
    for p_ids, s_ids, _ in items:
        ids = torch.tensor([p_ids + s_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        P = len(p_ids)
        out.append(logp[P - 1 : P - 1 + len(s_ids)].gather(-1, torch.tensor(s_ids)[:, None])[:, 0])
    return out


def drift(policy: str, runs: str, n: int = 200) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oar_kernels.data import load_task

    tok = AutoTokenizer.from_pretrained(policy)
    base = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    task = load_task("arithmetic_plan:3-3")  # two-step problems: the plan digit decides
    items = [_classes(tok, f"{e.question}\n", e.solution) for e in task.eval_examples(n)]
    ref = _logps(base, items)
    lines = ["| algo | seeds | mean abs dlogp: plan digit (deciding) | first step (non-deciding) | other | "
             "p(plan digit 2) after |", "|---|---|---|---|---|---|"]
    by_algo = {}
    for d in sorted(glob.glob(os.path.join(runs, "*-seed*"))):
        algo = os.path.basename(d).rsplit("-seed", 1)[0]
        ckpts = sorted(glob.glob(os.path.join(d, "checkpoints", "*")))
        if not ckpts:
            continue
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
        model.load_state_dict(state["model"])
        new = _logps(model, items)
        acc = {"P": [], "N": [], "O": [], "p": []}
        for (_, _, lab), a, b in zip(items, ref, new):
            diff = (b - a).abs().tolist()
            for c in "PNO":
                acc[c] += [x for x, l in zip(diff, lab) if l == c]
            acc["p"].append(float(b[lab.index("P")].exp()))
        by_algo.setdefault(algo, []).append({k: statistics.mean(v) for k, v in acc.items()})
    for algo, rs in by_algo.items():
        cells = []
        for k in ("P", "N", "O", "p"):
            vals = [r[k] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} +- {sd:.3f}")
        lines.append(f"| {algo} | {len(rs)} | " + " | ".join(cells) + " |")
    base_p = statistics.mean(float(r[lab.index('P')].exp()) for (_, _, lab), r in zip(items, ref))
    return "\n".join(lines) + f"\n\nWarm-started policy: p(plan digit 2) = {base_p:.3f} on the same {n} problems.\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    d = sub.add_parser("drift")
    d.add_argument("--policy", required=True)
    d.add_argument("--runs", required=True)
    d.add_argument("--n", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "build":
        build(args.out)
    else:
        print(drift(args.policy, args.runs, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
