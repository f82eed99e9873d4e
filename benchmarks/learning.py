"""Learning benchmark: GRPO vs OAR-G vs OAR-P on the trainer's built-in task, several seeds each.

    python benchmarks/learning.py                                   # 3 algos x seeds 0 1 2, 30 steps, eval every 5
    python benchmarks/learning.py --seeds 0 1 2 3 4 --eval_size 1000    # the run in benchmarks/RESULTS.md
    python benchmarks/learning.py --report_only                     # tables/plots from the runs already there
    python benchmarks/learning.py --seeds 0 1 -- --learning_rate 5e-5   # flags after `--` go to every run

Each (algo, seed) is one `python -m oar_kernels.train` subprocess, run one after the other in
seed-major order (grpo s0, oar-g s0, oar-p s0, grpo s1, ...), so that an interrupted benchmark
leaves complete seeds. Every run gets the same configuration apart from --algo and --seed:
same model (the cached default policy, whose warm start does not depend on --seed), same task,
steps, prompts per step and generations per prompt, i.e. the same number of sampled responses;
OAR-G and OAR-P only spend extra compute on importance scores. The held-out set is the same for
every run (the task's fixed evaluation slice), evaluated greedily at step 0, every --eval_every
steps and at the end.

Outputs in --out (default runs/learning):
  <algo>-seed<S>/      the trainer's run directory (metrics.jsonl, summary.json, ...), plus
                       train.log (the trainer's output) and bench.json (wall time, git commit)
  learning.png         held-out accuracy at each evaluation, points per algo: mean over seeds,
                       bar = min..max over seeds, a dot per seed (no line between evaluations)
  learning_reward.png  training reward vs step, one curve per algo: mean over seeds of each
                       seed's moving average, band = min..max over seeds
  learning.md          the final numbers (mean +- sample std over seeds), per-seed finals,
                       the curve as numbers, timings, the command, date and git commit

A run whose directory already holds a finished run with the same configuration is reused; one
with a checkpoint of the same configuration is continued with --resume_from_checkpoint; one with a different
configuration is rerun from scratch. The report is rewritten after every finished run, using the
seeds that are finished for every algorithm (same seeds, same compute for each algorithm).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from harness import git_commit  # the commit, "+dirty(oar_kernels)" when the package has changes

from oar_kernels.train.report import moving_average, read_jsonl, save_figure  # read_jsonl: a line cut short by a kill ends the file

ALGOS = ("grpo", "oar-g", "oar-p")
COLORS = {"grpo": "tab:gray", "oar-g": "tab:blue", "oar-p": "tab:orange"}
OWN_FLAGS = ("--algo", "--seed", "--output_dir", "--max_steps", "--eval_steps", "--eval_every", "--eval_size",
             "--num_threads", "--resume_from_checkpoint", "--overwrite_output_dir", "--resume", "--no-resume", "--config")
# keys of config.yaml that may differ between attempts of the same run
VOLATILE_KEYS = ("resume_from_checkpoint", "overwrite_output_dir", "progress")
# keys that do not change a run of the listed algorithms
UNUSED_BY = {"oarg_step": ("grpo", "oar-p")}


# -- reading runs -----------------------------------------------------------------------------

def run_dir(out: str, algo: str, seed: int) -> str:
    return os.path.join(out, f"{algo}-seed{seed}")


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def load_run(path: str) -> Optional[dict]:
    """{evals: {step: accuracy}, rewards: {step: batch-mean reward}, steps, s_per_step and
    s_importance (medians over steps), reward_first, reward_last, wall_s, commit} of one run
    directory, or None when it has no metrics."""
    rows = read_jsonl(os.path.join(path, "metrics.jsonl"))
    if not rows:
        return None
    evals = {}
    for r in rows:
        if r.get("kind") == "eval":
            evals[int(r["step"])] = float(r["eval_accuracy"])  # the last record of a step wins
    train = [r for r in rows if r.get("kind") == "train"]
    times = [float(r["time_step"]) for r in train if "time_step" in r]
    imp = [float(r.get("time_importance", 0.0)) for r in train]
    rewards = [float(r["reward"]) for r in train if "reward" in r]
    k = max(1, len(rewards) // 5)  # first and last fifth of the steps
    bench = read_json(os.path.join(path, "bench.json")) or {}
    summary = read_json(os.path.join(path, "summary.json")) or {}
    wall = bench.get("wall_s", summary.get("wall_time"))
    return {
        "evals": evals, "steps": max((int(r["step"]) for r in train), default=0),
        "rewards": {int(r["step"]): float(r["reward"]) for r in train if "reward" in r},
        # medians: robust to a step stalled by something outside the run (seen on shared machines)
        "s_per_step": statistics.median(times) if times else float("nan"),
        "s_importance": statistics.median(imp) if imp else float("nan"),
        "reward_first": statistics.fmean(rewards[:k]) if rewards else float("nan"),
        "reward_last": statistics.fmean(rewards[-k:]) if rewards else float("nan"),
        "wall_s": float(wall) if wall is not None else float("nan"),
        "commit": bench.get("commit", ""),
    }


def is_finished(run: Optional[dict], max_steps: int) -> bool:
    return run is not None and run["steps"] >= max_steps and max_steps in run["evals"] and 0 in run["evals"]


def collect(out: str, algos: Sequence[str], seeds: Sequence[int], max_steps: int):
    """(runs {algo: {seed: run}} over the seeds finished for EVERY algo, left_out [(algo, seed)])."""
    finished = {(a, s): load_run(run_dir(out, a, s)) for a in algos for s in seeds}
    finished = {k: v for k, v in finished.items() if is_finished(v, max_steps)}
    common = [s for s in seeds if all((a, s) in finished for a in algos)]
    runs = {a: {s: finished[(a, s)] for s in common} for a in algos}
    left_out = sorted(k for k in finished if k[1] not in common)
    return runs, left_out


# -- aggregation ------------------------------------------------------------------------------

def mean_std(xs: Sequence[float]):
    """(mean, sample std with ddof=1; 0 for a single value)."""
    xs = list(xs)
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def aggregate(runs: Dict[str, Dict[int, dict]], max_steps: int) -> Dict[str, dict]:
    """Per algo: curve (steps evaluated by every seed, mean/std/min/max), before/after/gain stats,
    per-seed finals, timings."""
    stats = {}
    for algo, by_seed in runs.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        steps = sorted(set.intersection(*(set(by_seed[s]["evals"]) for s in seeds)))
        curve = []
        for st in steps:
            vals = [by_seed[s]["evals"][st] for s in seeds]
            m, sd = mean_std(vals)
            curve.append({"step": st, "mean": m, "std": sd, "min": min(vals), "max": max(vals)})
        reward_steps = sorted(set.intersection(*(set(by_seed[s].get("rewards", {})) for s in seeds)))
        reward_curve = {"steps": reward_steps,
                        "per_seed": {s: [by_seed[s]["rewards"][st] for st in reward_steps] for s in seeds}}
        before = [by_seed[s]["evals"][0] for s in seeds]
        after = [by_seed[s]["evals"][max_steps] for s in seeds]
        gains = [a - b for a, b in zip(after, before)]
        walls = [by_seed[s]["wall_s"] for s in seeds]
        stats[algo] = {
            "seeds": seeds, "curve": curve, "reward_curve": reward_curve,
            "evals_by_seed": {s: by_seed[s]["evals"] for s in seeds},
            "before": mean_std(before), "after": mean_std(after),
            "gain": mean_std(gains), "finals": dict(zip(seeds, after)), "befores": dict(zip(seeds, before)),
            "s_per_step": statistics.fmean(by_seed[s]["s_per_step"] for s in seeds),
            "s_importance": statistics.fmean(by_seed[s]["s_importance"] for s in seeds),
            "reward_first": mean_std([by_seed[s]["reward_first"] for s in seeds]),
            "reward_last": mean_std([by_seed[s]["reward_last"] for s in seeds]),
            "wall_total": sum(walls), "wall_mean": statistics.fmean(walls),
            "commits": sorted({by_seed[s]["commit"] for s in seeds if by_seed[s]["commit"]}),
        }
    return stats


def paired_vs(stats: Dict[str, dict], base: str = "grpo") -> Dict[str, tuple]:
    """{algo: (mean, std, n)} of final accuracy minus the base algo's, paired by seed."""
    out = {}
    if base not in stats:
        return out
    for algo, st in stats.items():
        if algo == base:
            continue
        seeds = [s for s in st["seeds"] if s in stats[base]["finals"]]
        diffs = [st["finals"][s] - stats[base]["finals"][s] for s in seeds]
        if diffs:
            out[algo] = (*mean_std(diffs), len(diffs))
    return out


# -- outputs ----------------------------------------------------------------------------------

def _figure(figsize):
    from matplotlib.figure import Figure  # outside pyplot: no global state, nothing to close

    return Figure(figsize=figsize)


def accuracy_figure(stats: Dict[str, dict], title: str = ""):
    """Held-out accuracy vs step as measured points: per algo, the mean over seeds (marker) with
    a bar from the lowest to the highest seed and each seed's value as a small dot; no line
    joins two evaluations. Algorithms are shifted a little sideways so that their points do not
    hide each other."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    steps = sorted({p["step"] for st in stats.values() for p in st["curve"]})
    dx = 0.012 * max((steps[-1] - steps[0]) if steps else 0, 1)
    for i, (algo, st) in enumerate(stats.items()):
        shift = (i - (len(stats) - 1) / 2) * dx
        xs = [p["step"] + shift for p in st["curve"]]
        means = [p["mean"] for p in st["curve"]]
        color = COLORS.get(algo)
        ax.errorbar(xs, means, yerr=[[max(m - p["min"], 0.0) for m, p in zip(means, st["curve"])],
                                     [max(p["max"] - m, 0.0) for m, p in zip(means, st["curve"])]],
                    fmt="o", linestyle="None", ms=5, capsize=2, elinewidth=1, color=color,
                    label=f"{algo}: mean of {len(st['seeds'])} seeds (bar = min..max)")
        for p, x in zip(st["curve"], xs):
            vals = [st["evals_by_seed"][s][p["step"]] for s in st["seeds"]]
            ax.plot([x] * len(vals), vals, linestyle="None", marker=".", ms=3, alpha=0.35, color=color)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title(title or "held-out accuracy; bar = min..max over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if stats:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes, color="#777")
    fig.tight_layout()
    return fig


def reward_figure(stats: Dict[str, dict], title: str = ""):
    """Training reward vs step, one curve per algo: the mean over seeds of each seed's moving
    average of its batch-mean reward (line), band = min..max of the seeds' moving averages."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    window = 1
    for algo, st in stats.items():
        rc = st.get("reward_curve") or {}
        xs = rc.get("steps") or []
        if not xs:
            continue
        window = max(1, len(xs) // 10)
        smooth = [moving_average(rc["per_seed"][s], window) for s in st["seeds"]]
        color = COLORS.get(algo)
        ax.plot(xs, [statistics.fmean(v) for v in zip(*smooth)], "-", color=color,
                label=f"{algo}: mean of {len(st['seeds'])} seeds")
        ax.fill_between(xs, [min(v) for v in zip(*smooth)], [max(v) for v in zip(*smooth)], color=color,
                        alpha=0.18, linewidth=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training reward (batch mean, moving average {window})")
    ax.set_title(title or "training reward; band = min..max over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes, color="#777")
    fig.tight_layout()
    return fig


def write_plot(stats: Dict[str, dict], path: str, title: str = ""):
    """Writes accuracy_figure to `path` (atomically) and returns the Figure."""
    fig = accuracy_figure(stats, title)
    save_figure(fig, path, dpi=120)
    return fig


def write_reward_plot(stats: Dict[str, dict], path: str, title: str = ""):
    """Writes reward_figure to `path` (atomically) and returns the Figure."""
    fig = reward_figure(stats, title)
    save_figure(fig, path, dpi=120)
    return fig


def _pm(ms, digits=3):
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _signed_pm(ms, digits=3):
    m, s = ms
    return f"{m:+.{digits}f} ± {s:.{digits}f}"


def render_table(stats: Dict[str, dict], meta: dict) -> str:
    lines = [f"# Learning benchmark: {', '.join(stats) or 'no finished runs'}", ""]
    n_eval = meta.get("eval_size")
    lines += [
        f"Held-out accuracy (greedy, {n_eval} problems, the same set for every run) of the trainer's "
        f"default policy on its built-in task after {meta.get('max_steps')} steps; same configuration and "
        "number of sampled responses for every algorithm. Mean ± sample std (ddof=1) over seeds; gain = "
        "after - before per seed.", ""]
    if n_eval:
        p = next((st["before"][0] for st in stats.values()), 0.4)
        if not math.isnan(p):
            lines += [f"Sampling noise of one evaluation: binomial std sqrt(p(1-p)/n) = "
                      f"{math.sqrt(p * (1 - p) / n_eval):.3f} at p = {p:.3f}, n = {n_eval}.", ""]
    lines += ["| algo | seeds | accuracy before | after (mean ± std) | gain (mean ± std) | per-seed finals | "
              "train reward first -> last fifth | s/step (importance), median | wall time per run | total wall time |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for algo, st in stats.items():
        finals = ", ".join(f"s{s}: {v:.3f}" for s, v in st["finals"].items())
        lines.append(
            f"| {algo} | {len(st['seeds'])} | {_pm(st['before'])} | {_pm(st['after'])} | {_signed_pm(st['gain'])} "
            f"| {finals} | {st['reward_first'][0]:.3f} -> {st['reward_last'][0]:.3f} "
            f"| {st['s_per_step']:.2f} ({st['s_importance']:.2f}) | {st['wall_mean']:.0f} s | {st['wall_total']:.0f} s |")
    paired = paired_vs(stats)
    if paired:
        lines += ["", "Final accuracy minus GRPO's, paired by seed (mean ± std over seeds):", ""]
        lines += [f"- {algo}: {m:+.3f} ± {s:.3f} ({n} seeds)" for algo, (m, s, n) in paired.items()]
    steps = sorted({p["step"] for st in stats.values() for p in st["curve"]})
    if steps:
        lines += ["", "Held-out accuracy by step (mean ± std over seeds):", "",
                  "| step | " + " | ".join(stats) + " |", "|---" * (len(stats) + 1) + "|"]
        for step in steps:
            cells = []
            for st in stats.values():
                p = next((q for q in st["curve"] if q["step"] == step), None)
                cells.append(_pm((p["mean"], p["std"])) if p else "-")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "Run"]
    lines += ["", f"- command: `{meta.get('command', '')}`",
              f"- date: {meta.get('date', '')}",
              f"- git commit: {meta.get('commit', '')}" + (
                  f" (runs made at: {', '.join(meta['run_commits'])})" if meta.get("run_commits") else ""),
              f"- machine: {meta.get('machine', '')}",
              *([f"- note: {meta['note']}"] if meta.get("note") else []),
              "- plots: learning.png (held-out accuracy at each evaluation: marker = mean over seeds, bar = "
              "min..max over seeds, dots = seeds), learning_reward.png (training reward: line = mean over seeds of "
              "each seed's moving average, band = min..max over seeds)"]
    if meta.get("left_out"):
        lines.append("- finished runs left out (their seed is not finished for every algorithm): "
                     + ", ".join(f"{a} seed {s}" for a, s in meta["left_out"]))
    if meta.get("failed"):
        lines.append("- failed runs: " + ", ".join(meta["failed"]))
    return "\n".join(lines) + "\n"


def report(out: str, algos: Sequence[str], seeds: Sequence[int], max_steps: int, meta: dict) -> Dict[str, dict]:
    """Writes learning.png, learning_reward.png and learning.md into `out` from the finished runs;
    returns the stats."""
    runs, left_out = collect(out, algos, seeds, max_steps)
    stats = aggregate(runs, max_steps)
    meta = dict(meta, left_out=left_out, max_steps=max_steps,
                run_commits=sorted({c for st in stats.values() for c in st["commits"]}))
    os.makedirs(out, exist_ok=True)
    n = min((len(st["seeds"]) for st in stats.values()), default=0)
    write_plot(stats, os.path.join(out, "learning.png"),
               title=f"held-out accuracy ({meta.get('eval_size')} problems, greedy), {n} seeds; "
                     "bar = min..max over seeds")
    write_reward_plot(stats, os.path.join(out, "learning_reward.png"),
                      title=f"training reward (sampled), {n} seeds; band = min..max over seeds")
    with open(os.path.join(out, "learning.md"), "w", encoding="utf-8") as f:
        f.write(render_table(stats, meta))
    return stats


# -- running ----------------------------------------------------------------------------------

def trainer_argv(algo: str, seed: int, args, extra: List[str]) -> List[str]:
    return ["--algo", algo, "--seed", str(seed), "--max_steps", str(args.max_steps),
            "--eval_steps", str(args.eval_every), "--eval_size", str(args.eval_size),
            "--num_threads", str(args.num_threads), "--output_dir", run_dir(args.out, algo, seed),
            "--no-progress", *extra]


def run_state(path: str, argv: List[str], max_steps: int) -> str:
    """'done', 'resume' or 'fresh' for a run directory and the trainer flags it should have run with."""
    from oar_kernels.train import parse_args

    want = parse_args(argv).to_dict()
    have = None
    try:
        import yaml

        with open(os.path.join(path, "config.yaml"), encoding="utf-8") as f:
            have = yaml.safe_load(f)
    except (OSError, ImportError):
        return "fresh"
    if not isinstance(have, dict):
        return "fresh"
    for k, v in want.items():
        # a key the trainer gained after the run was made is not compared: the run had the behaviour
        # from before the option existed (pin such options with flags after `--` to keep runs comparable)
        if k in VOLATILE_KEYS or k not in have or want["algo"] in UNUSED_BY.get(k, ()):
            continue
        if have[k] != v:
            return "fresh"
    summary = read_json(os.path.join(path, "summary.json")) or {}
    if summary.get("accuracy_after") is not None and not summary.get("interrupted") and is_finished(
            load_run(path), max_steps):
        return "done"
    ckpts = os.path.join(path, "checkpoints")
    if os.path.isdir(ckpts) and any(p.endswith(".pt") for p in os.listdir(ckpts)):
        return "resume"
    return "fresh"


def log(msg: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_one(algo: str, seed: int, args, extra: List[str], i: int, n: int) -> bool:
    path = run_dir(args.out, algo, seed)
    argv = trainer_argv(algo, seed, args, extra)
    state = run_state(path, argv, args.max_steps)
    tag = f"{i}/{n} {algo} seed {seed}"
    if state == "done":
        run = load_run(path)
        log(f"{tag}: already finished, reused (held-out {run['evals'][0]:.3f} -> {run['evals'][args.max_steps]:.3f})")
        return True
    os.makedirs(path, exist_ok=True)
    bench = read_json(os.path.join(path, "bench.json")) if state == "resume" else None
    bench = bench or {"wall_s": 0.0, "attempts": []}
    # the folder holds this script's train.log / bench.json: a fresh run replaces only the trainer's outputs
    argv = argv + (["--resume_from_checkpoint", "last"] if state == "resume" else ["--overwrite_output_dir"])
    env = dict(os.environ, OMP_NUM_THREADS=str(max(args.num_threads, 1)), MKL_NUM_THREADS=str(max(args.num_threads, 1)),
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "oar_kernels.train", *argv]
    commit = git_commit()
    log(f"{tag}: started{' (resuming)' if state == 'resume' else ''}")
    t0 = time.time()
    with open(os.path.join(path, "train.log"), "a", encoding="utf-8") as logf:
        logf.write(f"$ {shlex.join(cmd)}\n")
        logf.flush()
        rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.time() - t0
    bench["wall_s"] = bench.get("wall_s", 0.0) + wall
    bench["commit"] = commit
    bench["attempts"].append({"started": _dt.datetime.fromtimestamp(t0).isoformat(timespec="seconds"),
                              "wall_s": round(wall, 1), "rc": rc, "resumed": state == "resume", "commit": commit})
    with open(os.path.join(path, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(bench, f, indent=2)
    run = load_run(path)
    if rc != 0 or not is_finished(run, args.max_steps):
        with open(os.path.join(path, "train.log"), encoding="utf-8", errors="replace") as f:
            tail = f.read()[-1500:]
        log(f"{tag}: FAILED (exit status {rc}) after {wall:.0f} s; end of {path}/train.log:\n{tail}")
        return False
    log(f"{tag}: finished in {wall:.0f} s ({run['s_per_step']:.2f} s/step), held-out "
        f"{run['evals'][0]:.3f} -> {run['evals'][args.max_steps]:.3f}")
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/learning.py", description=__doc__.split("\n\n")[0],
        epilog="Flags after a lone `--` are passed to every trainer run (python -m oar_kernels.train --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS, help="algorithms compared")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds, each run for every algo")
    # the default policy loses its shortcut habit within ~20 steps: 30 steps, evaluated often,
    # show which algorithm gets there faster
    p.add_argument("--max_steps", type=int, default=30, help="optimizer steps of every run")
    p.add_argument("--eval_every", type=int, default=5, help="held-out evaluation every N steps (and 0, end)")
    p.add_argument("--eval_size", type=int, default=500, help="held-out problems per evaluation")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads of each run")
    p.add_argument("--out", default=os.path.join("runs", "learning"), help="output folder")
    p.add_argument("--report_only", action="store_true", help="only rewrite learning.md/png from finished runs")
    p.add_argument("--note", default="", help="a line added to learning.md (e.g. what else loaded the machine)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    bad = [a for a in extra if a.split("=")[0] in OWN_FLAGS]
    if bad:
        print(f"learning.py: set {', '.join(bad)} with this script's own options, not after `--`", file=sys.stderr)
        return 2
    if args.max_steps < 1 or args.eval_size < 1 or args.eval_every < 0:
        print("learning.py: --max_steps and --eval_size must be >= 1, --eval_every >= 0", file=sys.stderr)
        return 2
    # the command that makes the runs (--report_only and --note only rewrite the report)
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif a != "--report_only" and not a.startswith("--note="):
            shown.append(a)
    command = shlex.join(["python", "benchmarks/learning.py", *shown] + (["--", *extra] if extra else []))
    meta = {"command": command, "eval_size": args.eval_size, "commit": git_commit(), "note": args.note,
            "machine": f"{os.cpu_count()} CPU cores, torch threads {args.num_threads} per run, runs sequential"}
    jobs = [(a, s) for s in args.seeds for a in args.algos]  # seed-major
    failed: List[str] = []
    t0 = time.time()
    if not args.report_only:
        log(f"{len(jobs)} runs into {args.out}: {args.max_steps} steps, eval every {args.eval_every} on "
            f"{args.eval_size} problems" + (f", extra trainer flags {shlex.join(extra)}" if extra else ""))
        for i, (algo, seed) in enumerate(jobs, 1):
            if not run_one(algo, seed, args, extra, i, len(jobs)):
                failed.append(f"{algo} seed {seed}")
            meta.update(date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), failed=failed)
            report(args.out, args.algos, args.seeds, args.max_steps, meta)
        log(f"all runs done in {time.time() - t0:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    meta.update(date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), failed=failed)
    stats = report(args.out, args.algos, args.seeds, args.max_steps, meta)
    for algo, st in stats.items():
        log(f"{algo}: {len(st['seeds'])} seeds, held-out {_pm(st['before'])} -> {_pm(st['after'])} "
            f"(gain {_signed_pm(st['gain'])})")
    log(f"wrote {os.path.join(args.out, 'learning.md')}, learning.png and learning_reward.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
