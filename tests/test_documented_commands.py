"""Every command line README.md and docs/*.md show runs, or fails in one line within seconds
(issue 22, point 2).

The commands are parsed from the files at test time (`find_commands`), so a line added to the
docs is covered the day it is written. What counts as a command: in a code block (indented by 4
spaces or fenced) or an inline code span, after joining backslash continuations and splitting
shell lists at `;`, `&&`, `||`, `|`, a command that starts with

    python -m oar_kernels.train   torchrun   python python/...   python benchmarks/...   python scripts/...

(`# ...` comments are dropped). Placeholder rule, the only reason a command is skipped: a
trailing `...` argument ("and the other options") is dropped, and a command with an argument
written as a metavariable (all capitals: N, PATH, NAME; or <...>) is a pattern, not a command,
and is not run (`skipped` lists them).

How each command is run (CPU, HF_HUB_OFFLINE=1, each in its own copy of a folder that holds a
finished tiny default run at runs/oar-g-seed0, so --resume_from_checkpoint last, --config
runs/oar-g-seed0/config.yaml and --overwrite_output_dir have what they continue):

- the trainer (also under torchrun, launched as `python -m torch.distributed.run --standalone`):
  as written plus a tiny budget (TINY_BUDGET: one step of 2 prompts x 2 responses, 2 held-out
  problems; --output_dir out unless the line names its own folder; a resumed run gets
  --max_steps 2 only); `--help` lines as written.
- python/, benchmarks/, scripts/: as written plus their quick option (QUICK_OPTIONS), else
  `--help`, and then every --option of the documented line must be in the help text.

Outcome: exit 0 passes. A command that needs what CI lacks (a GPU, the network or the hub, an
optional package, a local model folder) passes when it fails cleanly: exit 2 within FAIL_FAST_S,
stderr exactly one line `oar_kernels.train: config error: ...` / `oar_kernels.train: error: ...`
whose reason is one of ENVIRONMENT_REASONS (or the line's entry in EXPECTED_FAILURES). Anything
else (a traceback, a slow failure, an unknown option, a wrong value) fails the test, with the
file:line of the command. `test_planted_broken_lines_fail` shows it on a copy of the docs.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY_BUDGET = ["--max_steps", "1", "--prompts_per_step", "2", "--num_generations", "2", "--max_completion_length",
               "16", "--eval_size", "2", "--save_steps", "0", "--progress", "false", "--num_threads", "1"]
RESUME_BUDGET = ["--max_steps", "2", "--progress", "false", "--num_threads", "1"]
# script -> arguments appended to run it quickly; a script not listed gets --help
QUICK_OPTIONS: Dict[str, List[str]] = {
    "python/trl_oar_grpo.py": [],  # its defaults are a tiny in-process model, 2 steps
    "scripts/warm_start_default_policy.py": ["--check"],  # compares keys; never rebuilds the shipped folder
}
FAIL_FAST_S = 30.0
ONE_LINE = re.compile(r"^oar_kernels\.train: (config )?error: (.+)$")
# why a documented command may fail in CI without being wrong
ENVIRONMENT_REASONS = re.compile(
    r"CUDA is not available|the hub is off|cannot reach the hub|needs the [`']?[\w-]+[`']? package"
    r"|no model folder")
# command (as parsed, after placeholders) -> regex its one-line failure must match: documented
# lines known not to run today, with the issue that fixes them
EXPECTED_FAILURES: Dict[str, str] = {}
PATTERNS = (("python", "-m", "oar_kernels.train"), ("torchrun",), ("python", "python/"), ("python", "benchmarks/"),
            ("python", "scripts/"))
PLACEHOLDER = re.compile(r"^([A-Z][A-Z_]*|<[^>]*>)$")


@dataclass
class Command:
    argv: List[str]
    where: List[str] = field(default_factory=list)  # "README.md:152", every place it is shown

    @property
    def text(self) -> str:
        return shlex.join(self.argv)

    @property
    def is_trainer(self) -> bool:
        return self.argv[0] == "torchrun" or self.argv[1:3] == ["-m", "oar_kernels.train"]


def doc_files(root: Path) -> List[Path]:
    """README.md and docs/*.md under `root` (the repository, or a copy of it in a test)."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def _logical_lines(text: str) -> List[Tuple[int, str, bool]]:
    """(1-based first line, text, in a code block): backslash continuations joined."""
    out, fenced, buf, start, buf_code = [], False, None, 0, False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        code = fenced or line.startswith("    ") or line.startswith("\t")
        if buf is not None:
            buf += " " + line.strip()
        else:
            buf, start, buf_code = line, i, code
        if buf.rstrip().endswith("\\"):
            buf = buf.rstrip()[:-1]
            continue
        out.append((start, buf, buf_code))
        buf = None
    if buf is not None:
        out.append((start, buf, buf_code))
    return out


def _segments(code: str) -> List[List[str]]:
    """The simple commands of a shell line (split at ; && || |, comments dropped)."""
    lex = shlex.shlex(code, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    segs, cur = [], []
    for tok in tokens:
        if tok and set(tok) <= set(";&|"):
            segs.append(cur)
            cur = []
        else:
            cur.append(tok)
    segs.append(cur)
    return [s for s in segs if s]


def _is_command(argv: List[str]) -> bool:
    for pat in PATTERNS:
        if len(argv) >= len(pat) and all(a == p if not p.endswith("/") else a.startswith(p)
                                         for a, p in zip(argv, pat)):
            return True
    return False


def find_commands(root: Path = ROOT) -> Tuple[List[Command], List[Tuple[str, str]]]:
    """(commands to run, deduplicated, each with every file:line showing it; skipped patterns as
    (file:line, text)), parsed from the docs under `root`."""
    found: Dict[str, Command] = {}
    skipped = []
    for path in doc_files(root):
        rel = path.relative_to(root).as_posix()
        for lineno, line, code in _logical_lines(path.read_text(encoding="utf-8")):
            candidates = re.findall(r"`([^`]+)`", line)
            if code:
                candidates.append(line)
            for cand in candidates:
                for argv in _segments(cand):
                    if not _is_command(argv):
                        continue
                    while argv and argv[-1] == "...":
                        argv = argv[:-1]
                    if any(PLACEHOLDER.match(a) for a in argv):
                        skipped.append((f"{rel}:{lineno}", shlex.join(argv)))
                        continue
                    cmd = found.setdefault(shlex.join(argv), Command(argv))
                    if f"{rel}:{lineno}" not in cmd.where:
                        cmd.where.append(f"{rel}:{lineno}")
    return list(found.values()), skipped


# -- running ------------------------------------------------------------------------------------

@dataclass
class Result:
    argv: List[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    mode: str  # "run", "help"


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(
                   p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("WORLD_SIZE", None)
    return env


def planned_argv(cmd: Command) -> Tuple[List[str], str]:
    """(the argv to run, "run" or "help")."""
    argv = list(cmd.argv)
    if cmd.is_trainer:
        if argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", *argv[1:]]
        else:
            argv = [sys.executable, *argv[1:]]
        if "--help" in argv or "-h" in argv:
            return argv, "help"
        if "--resume_from_checkpoint" in argv:
            return argv + RESUME_BUDGET, "run"
        own_dir = "--output_dir" in argv or "--overwrite_output_dir" in argv
        return argv + TINY_BUDGET + ([] if own_dir else ["--output_dir", "out"]), "run"
    script = argv[1]
    argv = [sys.executable, str(ROOT / script), *argv[2:]]
    if script in QUICK_OPTIONS:
        return argv + QUICK_OPTIONS[script], "run"
    return argv + ["--help"], "help"


def run_command(cmd: Command, cwd: Path, timeout: float = 180) -> Result:
    argv, mode = planned_argv(cmd)
    t = time.time()
    try:
        p = subprocess.run(argv, cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -9, str(e.stdout or ""), f"timed out after {timeout}s"
    return Result(argv, rc, time.time() - t, out, err, mode)


def problem(cmd: Command, res: Result) -> Optional[str]:
    """None when the command ran or failed cleanly, else what is wrong."""
    where = ", ".join(cmd.where)
    head = f"{where}: `{cmd.text}` (ran as `{shlex.join(res.argv[1:])}`, {res.seconds:.1f}s, exit {res.returncode})"
    tail = f"\n--- stdout ---\n{res.stdout[-2000:]}\n--- stderr ---\n{res.stderr[-3000:]}"
    if res.returncode == 0:
        if res.mode == "help":
            helptext = res.stdout + res.stderr
            missing = [a.split("=")[0] for a in cmd.argv if a.startswith("--") and a.split("=")[0] not in helptext]
            if missing:
                return f"{head}: options not in its --help: {missing}{tail}"
        return None
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.returncode != 2 or len(lines) != 1 or not ONE_LINE.match(lines[0]):
        return f"{head}: neither ran nor failed with one error line and exit 2{tail}"
    if res.seconds > FAIL_FAST_S:
        return f"{head}: failed, but only after {res.seconds:.0f}s (expected within {FAIL_FAST_S:.0f}s){tail}"
    reason = ONE_LINE.match(lines[0]).group(2)
    expected = EXPECTED_FAILURES.get(cmd.text)
    if expected is not None:
        return None if re.search(expected, reason) else f"{head}: expected a failure matching {expected!r}{tail}"
    if not ENVIRONMENT_REASONS.search(reason):
        return f"{head}: fails for a reason that is not the environment's (GPU, hub, optional package): {reason}"
    return None


def _base_run(tmp: Path) -> Path:
    """A folder with a finished tiny default run at runs/oar-g-seed0 (what resume, --config and
    --overwrite_output_dir lines continue)."""
    base = tmp / "base"
    base.mkdir()
    p = subprocess.run([sys.executable, "-m", "oar_kernels.train", *TINY_BUDGET], cwd=str(base), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (base / "runs" / "oar-g-seed0" / "config.yaml").is_file()
    return base


def run_all(commands: List[Command], tmp: Path, workers: int = 2) -> Dict[str, Result]:
    """Runs every command (in parallel, `workers` at a time; the cheap --help ones first; torchrun
    ones one at a time: two concurrent `--standalone` launches on one CPU machine hang), each in
    its own copy of the base folder."""
    base = _base_run(tmp)
    torchrun = threading.Lock()

    def one(i_cmd):
        i, cmd = i_cmd
        cwd = tmp / f"cmd{i}"
        shutil.copytree(base, cwd)
        if cmd.argv[0] != "torchrun":
            return cmd.text, run_command(cmd, cwd)
        with torchrun:
            return cmd.text, run_command(cmd, cwd)

    order = sorted(enumerate(commands), key=lambda ic: planned_argv(ic[1])[1] != "help")
    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, order))


COMMANDS, SKIPPED = find_commands()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    t = time.time()
    res = run_all(COMMANDS, tmp_path_factory.mktemp("documented"))
    modes = {}
    for cmd in COMMANDS:
        r = res[cmd.text]
        kind = r.mode if r.returncode == 0 else "fail-fast"
        modes[kind] = modes.get(kind, 0) + 1
    print(f"\n[documented commands] {len(COMMANDS)} commands ({modes}), {len(SKIPPED)} placeholder patterns "
          f"skipped, {time.time() - t:.0f}s")
    return res


def test_the_docs_show_commands():
    texts = [c.text for c in COMMANDS]
    assert "python -m oar_kernels.train" in texts
    assert any(c.argv[0] == "torchrun" for c in COMMANDS)
    assert any(c.argv[1].startswith("benchmarks/") for c in COMMANDS if not c.is_trainer)
    # a continued line is one command
    assert any("--prompt_template" in c.argv and "--dataset" in c.argv for c in COMMANDS), texts


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.where[0]}:{c.text[:60]}" for c in COMMANDS])
def test_documented_command(cmd, results):
    msg = problem(cmd, results[cmd.text])
    assert msg is None, msg


def _plant(tmp_path: Path, lines: List[str]) -> Path:
    """A copy of README.md and docs/ with `lines` appended to docs/training.md in a code block."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copy(ROOT / "README.md", root / "README.md")
    with open(root / "docs" / "training.md", "a", encoding="utf-8") as f:
        f.write("\n\n" + "".join(f"    {ln}\n" for ln in lines))
    return root


# a script that does not exist (spelled in two parts: tests/test_repo_references.py reads this
# file for citations of repository files)
MISSING_SCRIPT = "python scripts" + "/no_such_script.py"


def test_planted_broken_lines_fail(tmp_path):
    planted = ["python -m oar_kernels.train --no_such_option 1   # planted: an unknown option",
               "python -m oar_kernels.train --algo oar-q   # planted: a wrong value",
               "python benchmarks/bench_importance.py --no-such-option \\",
               "    --threads 1   # planted: a continued line with an option the script lacks",
               MISSING_SCRIPT]
    root = _plant(tmp_path, planted)
    commands, _ = find_commands(root)
    n_lines = len((root / "docs" / "training.md").read_text().splitlines())
    first = n_lines - len(planted) + 1
    new = {c.text: c for c in commands if any(w.startswith("docs/training.md:") and int(w.split(":")[1]) >= first
                                              for w in c.where)}
    assert sorted(new) == sorted(["python -m oar_kernels.train --no_such_option 1",
                                  "python -m oar_kernels.train --algo oar-q",
                                  "python benchmarks/bench_importance.py --no-such-option --threads 1",
                                  MISSING_SCRIPT]), sorted(new)
    assert new["python benchmarks/bench_importance.py --no-such-option --threads 1"].where == \
        [f"docs/training.md:{first + 2}"]
    for cmd in new.values():
        msg = problem(cmd, run_command(cmd, tmp_path))
        assert msg is not None and cmd.where[0] in msg, (cmd.text, msg)
    # and the copy's real lines are the same commands as the repository's
    assert {c.text for c in commands} - set(new) == {c.text for c in COMMANDS}


def test_placeholder_rule(tmp_path):
    root = _plant(tmp_path, ["torchrun --nproc_per_node N -m oar_kernels.train ...",
                             "python -m oar_kernels.train --rollout vllm ...    # vLLM"])
    commands, skipped = find_commands(root)
    assert ("docs/training.md:" in skipped[-1][0]
            and skipped[-1][1] == "torchrun --nproc_per_node N -m oar_kernels.train")
    assert "python -m oar_kernels.train --rollout vllm" in {c.text for c in commands}
