"""benchmarks/harness.py, what every benchmark measures and reports through: timing quantiles,
peak memory, the child runner, rows, table and CSV."""
import csv
import sys

import pytest
import torch
from bench_loader import load_benchmark

harness = load_benchmark("harness")


def test_time_fn_quantiles_and_setup():
    calls = []
    t = harness.time_fn(lambda: calls.append("fn"), repeats=4, warmup=1, setup=lambda: calls.append("setup"))
    assert calls == ["setup", "fn"] * 5 and len(t.samples) == 4
    t = harness.Timing([4.0, 1.0, 3.0, 2.0])
    assert t.median == 2.5 and t.quantile(0) == 1.0 and t.quantile(1) == 4.0 and t.quantile(0.5) == 2.5
    assert "ms (p10" in str(t)


def test_interleaved_takes_turns():
    order = []
    out = harness.interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2, warmup=1)
    assert order == ["a", "b"] * 3 and set(out) == {"a", "b"} and all(len(v.samples) == 2 for v in out.values())


def test_peak_memory_sees_an_allocation():
    seconds, peak, out = harness.peak_memory(lambda: torch.ones(64 << 20, dtype=torch.uint8).add_(1).sum())
    assert seconds > 0 and peak >= 32 << 20 and int(out) == 2 * (64 << 20)


def test_run_child_reads_its_last_json_line_and_reports_a_failure():
    code = "import json, sys; print('noise'); print(json.dumps({'x': 1})); print('warning', file=sys.stderr)"
    assert harness.run_child(["-c", code]) == {"x": 1}
    with pytest.raises(harness.ChildFailed, match="exit 3: boom"):
        harness.run_child(["-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(harness.ChildFailed, match="killed after"):
        harness.run_child(["-c", "import time; time.sleep(30)"], timeout=1)


def test_rows_render_and_csv(tmp_path):
    seen = []
    rows = harness.Rows(seen.append)
    rows.add("op", "[2, 3]", "a | b", 0.000123, "<= 1", True)
    rows.add(harness.Row("op", "-", "failed", None, "", 0, "check"))
    assert seen == rows and rows[1].ok is False
    table = harness.render(rows, ["# title"])
    assert table.splitlines()[0] == "# title" and "| op | [2, 3] | a / b | 1.23e-04 | <= 1 | yes |" in table
    assert "| op | - | failed | - |  | **NO** |" in table
    path = tmp_path / "r.csv"
    harness.write_csv(rows, str(path), {"commit": "abc", "load_average": "1.00 / 1.00 / 1.00"})
    got = list(csv.DictReader(path.open()))
    assert [r["metric"] for r in got] == ["a | b", "failed"] and got[0]["commit"] == "abc"
    env = harness.environment()
    assert {"commit", "device", "torch", "load_average", "date"} <= set(env) and env["python"] == sys.version.split()[0]
