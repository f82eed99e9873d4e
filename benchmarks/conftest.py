"""pytest-benchmark set-up of the op suite (test_bench_ops.py; docs/benchmarks.md says how to run,
save and compare). Not part of the test line: `pytest -q tests` never collects benchmarks/.

- Runs are stored in benchmarks/baselines/ unless --benchmark-storage says otherwise (the saved
  CPU run committed there is what --benchmark-compare compares against).
- Each saved run records the commit, device, versions, torch threads and load average
  (harness.environment) in its machine_info.
- --bench-threads: torch CPU threads (default 1: on a shared machine one thread is steadier).
- --bench-size readme: the LM-head and Bi-Level groups at the shapes of README.md's CPU rows
  (baselines.README_SHAPES; minutes per LM-head variant) instead of the small default ones.
- The `bench` fixture times a closure with benchmark.pedantic (the GPU synchronized after each
  call on CUDA) and records its peak extra memory (harness.peak_memory) in extra_info.
"""
import os

import harness
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=1, help="torch CPU threads of the benchmarks (default 1)")
    parser.addoption("--bench-size", choices=("small", "readme"), default="small",
                     help="shapes: small (seconds per variant) or readme (README.md's CPU rows)")


def pytest_configure(config):  # before pytest-benchmark's (trylast) reads the storage
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = "file://" + os.path.join(HERE, "baselines")
    torch.set_num_threads(config.getoption("--bench-threads"))
    if config.getoption("--bench-size") == "readme":
        import baselines

        for name, shape in baselines.README_SHAPES.items():
            setattr(baselines, name, shape)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.pop("node", None)  # the host's name says nothing about the figures
    machine_info.get("cpu", {}).pop("flags", None)  # a hundred CPU flags: the saved run stays small
    machine_info["oar_kernels"] = harness.environment(DEVICE)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture
def bench(benchmark):
    """bench(fn, setup=None, rounds=5): fn timed over `rounds` calls after one warm-up call
    (setup() untimed before each), its peak extra memory in extra_info["peak_mib"]."""

    def run(fn, setup=None, rounds=5):
        def call():
            fn()
            harness.sync(DEVICE)

        if setup:
            setup()
        _, peak, _ = harness.peak_memory(call, DEVICE)
        benchmark.extra_info["peak_mib"] = round(peak / 2**20, 1)
        benchmark.extra_info["device"] = DEVICE
        return benchmark.pedantic(call, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)

    return run
