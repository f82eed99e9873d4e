"""The one measuring harness of benchmarks/: every script, gpu_check.py and the pytest-benchmark
suite (test_bench_ops.py) time, measure memory, run children and write results through it.

- time_fn / interleaved / timed: seconds per call with quantiles; CUDA events on a GPU,
  perf_counter elsewhere; `sync` is the one place that waits for the GPU.
- peak_memory: the extra memory one call needs above what is allocated before it (CUDA:
  torch.cuda.max_memory_allocated; CPU: the resident set size sampled every 2 ms).
- stream / run_child: a child process with its lines streamed and a time limit that kills its
  whole process group; run_child reads the JSON object a Python child prints last.
- Row: one result (op, shape, metric, value, target, ok, kind); render: its Markdown table;
  write_csv: rows plus the run's environment (commit, device, versions, load average, date).
- Budget: a deadline, a section's never past its parent's.

Importing it also makes this checkout's oar_kernels importable (here and in child processes)
when the package is not installed, as on a lent GPU machine that gets a copy of the tree.
"""
from __future__ import annotations

import csv
import dataclasses
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # benchmarks/ (the harness, baselines) and the checkout's oar_kernels
    if _path not in sys.path:
        sys.path.insert(1, _path)
if ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p)


# ----------------------------------------------------------------------------- time


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def sync(device) -> None:
    """Waits for the GPU (no-op elsewhere): the only synchronization the benchmarks do."""
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def free(device) -> None:
    gc.collect()
    if _is_cuda(device):
        import torch

        torch.cuda.empty_cache()


@dataclasses.dataclass
class Timing:
    """Seconds of the timed calls."""

    samples: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples)
        pos = q * (len(s) - 1)
        lo = int(pos)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)

    def __str__(self) -> str:
        return (f"{self.median * 1e3:.2f} ms (p10 {self.quantile(0.1) * 1e3:.2f}, p90 {self.quantile(0.9) * 1e3:.2f}, "
                f"n={len(self.samples)})")


def timed(fn: Callable, device="cpu"):
    """(seconds, result) of one call, the GPU waited for before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def _one(fn, device) -> float:
    if not _is_cuda(device):
        return timed(fn, device)[0]
    import torch

    sync(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    sync(device)
    return start.elapsed_time(end) / 1e3


def time_fn(fn: Callable, device="cpu", repeats: int = 5, warmup: int = 1, setup: Optional[Callable] = None) -> Timing:
    """Times `repeats` calls of fn after `warmup` untimed ones; setup() runs untimed before each."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        samples.append(_one(fn, device))
    return Timing(samples)


def interleaved(fns: Dict[str, Callable], device="cpu", repeats: int = 3, warmup: int = 1,
                log: Optional[Callable] = None) -> Dict[str, Timing]:
    """Every fn warmed up, then `repeats` rounds of one call each, round-robin, so that a load
    change on a shared machine hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: Dict[str, List[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            out[k].append(_one(fn, device))
        if log:
            log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in out.items()))
    return {k: Timing(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable, device="cpu"):
    """(seconds, peak bytes above the level just before the call, fn's result)."""
    if _is_cuda(device):
        import torch

        free(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t, out = timed(fn, device)
        return t, torch.cuda.max_memory_allocated(device) - before, out
    gc.collect()
    before = _rss_bytes()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        t, out = timed(fn, device)
    finally:
        done.set()
        th.join()
    return t, max(peak[0], _rss_bytes()) - before, out


# ----------------------------------------------------------------------------- children


class ChildFailed(RuntimeError):
    pass


def stream(cmd: List[str], timeout: float, on_line: Callable[[str], None], **popen_kw) -> Optional[int]:
    """Runs cmd, handing each line of its stdout+stderr to on_line as it comes; kills it (and
    its own children: its process group) after timeout seconds. Its exit status, None if killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, **popen_kw)
    killer = threading.Timer(max(1.0, min(timeout, 1e7)), lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        killed = not killer.is_alive()
        killer.cancel()
        if proc.poll() is None:  # interrupted (SIGTERM / Ctrl-C): take it down too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return None if killed else rc


def run_child(args: List[str], timeout: float = float("inf"), **popen_kw) -> dict:
    """`python *args` in a fresh process (a clean allocator, an honest peak): the JSON object
    it prints last. ChildFailed with its last line when it fails or runs out of time."""
    lines: List[str] = []
    rc = stream([sys.executable, *args], timeout, lines.append, **popen_kw)
    if rc != 0:
        why = f"killed after {timeout:.0f} s" if rc is None else f"exit {rc}"
        raise ChildFailed(f"{why}: {(lines or ['no output'])[-1][:300]}")
    return json.loads(next(ln for ln in reversed(lines) if ln.startswith("{")))


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class Row:
    """One result. kind: "check" (a correctness check: ok=False fails the run), "bench",
    "ratio", "target", "missing" (a baseline that cannot run here), "skip", "info", ..."""

    op: str
    shape: str
    metric: str
    value: Optional[float] = None
    target: str = ""
    ok: bool = True
    kind: str = "info"

    def __post_init__(self):
        self.ok = bool(self.ok)


def why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def render(rows: Iterable, header: Iterable[str] = (), cols=("op", "shape", "metric", "value", "target", "ok")) -> str:
    """A Markdown table of Rows (or dicts), under the header lines."""
    out = list(header) + ([""] if header else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        get = (lambda c: getattr(r, c)) if dataclasses.is_dataclass(r) else r.get
        cells = [("yes" if get(c) else "**NO**") if c == "ok" and isinstance(get(c), bool) else fmt(get(c)) for c in cols]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n"


def git_commit(cwd: str = ".") -> str:
    """The short commit, "+dirty(oar_kernels)" when the package has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "oar_kernels"],
                               cwd=cwd, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty(oar_kernels)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device="cpu") -> Dict[str, str]:
    """What a result depends on: commit, device, versions, threads, load average, date."""
    import importlib.metadata as md

    import torch

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    dev = torch.cuda.get_device_name(device) if _is_cuda(device) else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    return {"commit": git_commit(ROOT), "device": dev, "python": platform.python_version(), "torch": torch.__version__,
            "triton": version("triton"), "transformers": version("transformers"),
            "threads": str(torch.get_num_threads()), "load_average": " / ".join(f"{x:.2f}" for x in load),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_csv(rows: Iterable, path: str, env: Optional[Dict[str, str]] = None) -> None:
    """The rows as CSV, every line carrying the run's environment (environment())."""
    env = env if env is not None else environment()
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
    cols = list(dict.fromkeys(k for r in rows for k in r)) + list(env)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}, **env})


@dataclasses.dataclass
class Budget:
    """A deadline: the whole run's, or a section's (its own seconds, never past its parent's)."""

    seconds: float
    parent: "Budget | None" = None

    def __post_init__(self):
        self.end = time.monotonic() + self.seconds
        if self.parent is not None:
            self.end = min(self.end, self.parent.end)

    def left(self) -> float:
        return self.end - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0


class Rows(list):
    """Rows made one at a time, each handed to emit (if given) as it is made."""

    def __init__(self, emit: Optional[Callable[[Row], None]] = None):
        super().__init__()
        self.emit = emit

    def add(self, *args, **kw) -> Row:
        row = args[0] if len(args) == 1 and isinstance(args[0], Row) else Row(*args, **kw)
        self.append(row)
        if self.emit:
            self.emit(row)
        return row
