"""benchmarks/learning.py without training: its aggregation, table and plot on synthetic metrics."""
import json
import os
import statistics

import pytest
from bench_loader import load_benchmark

pytest.importorskip("matplotlib")


def _load_bench():
    return load_benchmark("learning")


# final held-out accuracy per (algo, seed); every run starts at 0.40 and is evaluated at 0, 5, 10
FINALS = {"grpo": {0: 0.42, 1: 0.44, 2: 0.40, 3: 0.90}, "oar-g": {0: 0.45, 1: 0.47, 2: 0.50, 3: 0.90}}
MID = {"grpo": {0: 0.41, 1: 0.41, 2: 0.44, 3: 0.9}, "oar-g": {0: 0.43, 1: 0.40, 2: 0.46, 3: 0.9}}
STEPS, BEFORE = 10, 0.40


def _write_run(out, bench, algo, seed, finals=FINALS, wall=100.0, steps=STEPS):
    path = bench.run_dir(str(out), algo, seed)
    os.makedirs(path)
    rows = [{"kind": "eval", "step": 0, "eval_accuracy": BEFORE}]
    for step in range(1, steps + 1):
        rows.append({"kind": "train", "step": step, "reward": 0.3 + 0.01 * step, "time_step": 2.0 if algo == "grpo" else 3.0,
                     "time_importance": 0.0 if algo == "grpo" else 1.0})
        if step == 5:
            rows.append({"kind": "eval", "step": 5, "eval_accuracy": MID[algo][seed]})
    if steps == STEPS:
        rows.append({"kind": "eval", "step": STEPS, "eval_accuracy": finals[algo][seed]})
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    with open(os.path.join(path, "bench.json"), "w") as f:
        json.dump({"wall_s": wall + seed, "commit": "abc1234"}, f)


def test_report_numbers_plot_and_table(tmp_path):
    bench = _load_bench()
    for algo in FINALS:
        for seed in (0, 1, 2):
            _write_run(tmp_path, bench, algo, seed)
    _write_run(tmp_path, bench, "grpo", 3)  # seed 3 finished for grpo only: left out of the comparison
    _write_run(tmp_path, bench, "oar-g", 3, steps=4)  # unfinished run (no final eval)
    meta = {"command": "python benchmarks/learning.py --max_steps 10", "eval_size": 1000, "commit": "abc1234",
            "date": "2026-01-01 00:00", "machine": "test"}
    stats = bench.report(str(tmp_path), ["grpo", "oar-g"], [0, 1, 2, 3], STEPS, meta)

    png, md = tmp_path / "learning.png", tmp_path / "learning.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = md.read_text()
    for algo, finals in FINALS.items():
        vals = [finals[s] for s in (0, 1, 2)]
        m, sd = statistics.mean(vals), statistics.stdev(vals)
        st = stats[algo]
        assert st["seeds"] == [0, 1, 2]
        assert st["after"] == pytest.approx((m, sd))
        assert st["before"] == pytest.approx((BEFORE, 0.0))
        assert st["gain"] == pytest.approx((m - BEFORE, sd))
        assert [p["step"] for p in st["curve"]] == [0, 5, STEPS]
        mid = [MID[algo][s] for s in (0, 1, 2)]
        assert st["curve"][1]["min"] == min(mid) and st["curve"][1]["max"] == max(mid)
        row = next(line for line in table.splitlines() if line.startswith(f"| {algo} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "3"
        assert cells[2] == f"{BEFORE:.3f} ± 0.000"
        assert cells[3] == f"{m:.3f} ± {sd:.3f}"
        assert cells[4] == f"{m - BEFORE:+.3f} ± {sd:.3f}"
        assert cells[5] == ", ".join(f"s{s}: {finals[s]:.3f}" for s in (0, 1, 2))
        assert cells[7].startswith("2.00" if algo == "grpo" else "3.00")
        assert cells[8] == "101 s" and cells[9] == "303 s"  # walls 100, 101, 102
    # paired by seed: oar-g - grpo = 0.03, 0.03, 0.10
    diffs = [FINALS["oar-g"][s] - FINALS["grpo"][s] for s in (0, 1, 2)]
    assert f"- oar-g: {statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs):.3f} (3 seeds)" in table
    assert "grpo seed 3" in table and "oar-g seed 3" not in table
    assert meta["command"] in table and "abc1234" in table
    assert (tmp_path / "learning_reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
    assert "learning_reward.png" in table


def test_plots_points_for_held_out_and_a_reward_curve_per_algo(tmp_path):
    bench = _load_bench()
    for algo in FINALS:
        for seed in (0, 1, 2):
            _write_run(tmp_path, bench, algo, seed)
    runs, _ = bench.collect(str(tmp_path), ["grpo", "oar-g"], [0, 1, 2], STEPS)
    stats = bench.aggregate(runs, STEPS)
    fig = bench.accuracy_figure(stats)
    ax = fig.axes[0]
    # held-out: measured points only, no line joining two evaluations
    assert ax.lines and all(ln.get_linestyle() == "None" for ln in ax.lines)
    assert [str(c.get_label()).split(":")[0] for c in ax.containers] == ["grpo", "oar-g"]
    means = [c.lines[0] for c in ax.containers]  # each algo's mean markers (and its min..max bars)
    for ln, algo in zip(means, ("grpo", "oar-g")):
        want = [statistics.mean([BEFORE] * 3), statistics.mean(MID[algo][s] for s in (0, 1, 2)),
                statistics.mean(FINALS[algo][s] for s in (0, 1, 2))]
        assert list(ln.get_ydata()) == pytest.approx(want)
        assert [round(x) for x in ln.get_xdata()] == [0, 5, STEPS]
    # reward: one curve per algo (mean over seeds of the moving average), a band min..max
    fig = bench.reward_figure(stats)
    ax = fig.axes[0]
    assert [str(ln.get_label()).split(":")[0] for ln in ax.lines] == ["grpo", "oar-g"]
    k = max(1, STEPS // 10)
    for ln in ax.lines:
        assert list(ln.get_xdata()) == list(range(1, STEPS + 1)) and ln.get_linestyle() == "-"
        raw = [0.3 + 0.01 * s for s in range(1, STEPS + 1)]
        assert list(ln.get_ydata()) == pytest.approx([statistics.mean(raw[max(0, i - k + 1): i + 1])
                                                      for i in range(STEPS)])
    assert len(ax.collections) == 2  # the bands
    assert "moving average" in ax.get_ylabel()


def test_main_report_only_and_flag_checks(tmp_path, capsys):
    bench = _load_bench()
    for algo in FINALS:
        _write_run(tmp_path, bench, algo, 0)
    rc = bench.main(["--algos", "grpo", "oar-g", "--seeds", "0", "--max_steps", str(STEPS), "--eval_size", "1000",
                     "--out", str(tmp_path), "--report_only", "--note", "other core busy"])
    assert rc == 0
    assert (tmp_path / "learning.png").exists()
    table = (tmp_path / "learning.md").read_text()
    assert "| oar-g | 1 |" in table and "- note: other core busy" in table
    command = next(line for line in table.splitlines() if line.startswith("- command:"))
    assert "--max_steps 10" in command and "--report_only" not in command and "--note" not in command
    # the per-run flags belong to the script, not to the pass-through
    assert bench.main(["--out", str(tmp_path), "--report_only", "--", "--seed", "3"]) == 2
    # the trainer command a run gets: same budget flags for every algo, extra flags appended
    args = bench.build_parser().parse_args(["--max_steps", "7", "--out", "o"])
    a = bench.trainer_argv("grpo", 1, args, ["--learning_rate", "1e-4"])
    b = bench.trainer_argv("oar-p", 1, args, ["--learning_rate", "1e-4"])
    assert [x for x in a if x != "grpo" and "grpo" not in x] == [x for x in b if x != "oar-p" and "oar-p" not in x]
    assert a[-2:] == ["--learning_rate", "1e-4"] and "--num_threads" in a


def test_run_state_reuse_resume_rerun(tmp_path):
    """A finished run with the same trainer config is reused, one with a checkpoint is resumed, one
    with another config is rerun; trainer keys newer than the run, or unused by its algo, are skipped."""
    yaml = pytest.importorskip("yaml")
    from oar_kernels.train import parse_args

    bench = _load_bench()
    args = bench.build_parser().parse_args(["--max_steps", str(STEPS), "--out", str(tmp_path)])
    _write_run(tmp_path, bench, "grpo", 0)
    path = bench.run_dir(str(tmp_path), "grpo", 0)
    argv = bench.trainer_argv("grpo", 0, args, [])
    assert bench.run_state(path, argv, STEPS) == "fresh"  # no config.yaml
    cfg = parse_args(argv).to_dict()
    cfg.pop("max_grad_norm")  # as if the trainer gained this option after the run
    cfg["oarg_step"] = "something-else"  # an option a grpo run does not use
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"accuracy_after": FINALS["grpo"][0], "interrupted": False}, f)
    assert bench.run_state(path, argv, STEPS) == "done"
    assert bench.run_state(path, bench.trainer_argv("grpo", 0, args, ["--learning_rate", "1"]), STEPS) == "fresh"
    os.remove(os.path.join(path, "summary.json"))
    os.makedirs(os.path.join(path, "checkpoints"))
    open(os.path.join(path, "checkpoints", "step-0000005.pt"), "w").close()
    assert bench.run_state(path, argv, STEPS) == "resume"
