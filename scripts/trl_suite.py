"""Runs TRL's own GRPOTrainer tests with GRPOTrainer replaced by OARGRPOTrainer, offline.

    python scripts/trl_suite.py                      # OAR on and off, 2 pytest workers
    python scripts/trl_suite.py --modes on --tests TestGRPOTrainer::test_init_minimal

1. Obtains TRL's tests/ folder for the installed TRL release (nothing of TRL's is kept in this
   repository), first found of:
   --source PATH   a TRL git repository (its tag v<version>, or --ref), an unpacked source tree
                   or a .tar.gz of one;
   the release's source distribution from the package index (pip download trl==<version>
                   --no-deps --no-binary :all:), used when it contains tests/ (1.16.0's does not);
   --repo URL      the TRL git repository (default: TRL's public one), a shallow clone of tag
                   v<version>.
   The tests/ folder is cached under --cache (default: ~/.cache/oar_kernels/trl_suite) by
   source and revision, and copied into a temporary folder for each run.
2. Builds local stand-ins for the hub models and data sets the tests load
   (scripts/trl_suite_fixtures.py: tiny models of the same families from a config, trained
   tokenizers with TRL's chat templates, a generated "zen" prompt data set).
3. Runs TRL's test_grpo_trainer.py with pytest and the plugin scripts/trl_suite_plugin.py
   (GRPOTrainer/GRPOConfig -> OARGRPOTrainer/OARConfig, the local stand-ins, HF_HUB_OFFLINE=1),
   once per mode: "on" (OAR-G, OARConfig's defaults), "off" (oar_tau = oar_beta = 0: weight 1
   everywhere). Tests that fail in an OAR mode are run again with TRL's own GRPOTrainer
   ("baseline", same stand-ins) to tell our failures from the environment's.
4. Prints passed / skipped (by reason: GPU-only, vLLM, hub-only, optional package, other) /
   failed per mode and writes the per-test table (results.md, results.json) to --out.

Exit status: 0 when every failure in an OAR mode also fails with TRL's own trainer (or
--allow-failures), 1 otherwise, 2 when the tests cannot be obtained.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
DEFAULT_REPO = "https://github.com/huggingface/trl"
TEST_FILE = "/".join(("tests", "test_grpo_trainer.py"))  # in TRL's source tree
MODES = ("on", "off", "baseline")


class SourceError(RuntimeError):
    """TRL's tests could not be obtained (no source given and none reachable)."""


def installed_trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oar_kernels" / "trl_suite"


def _run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _extract_tests_from_tar(archive: Path, dest: Path) -> bool:
    """Extracts <top>/tests/ of a source archive into dest/tests; False when it has none."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if re.match(r"^[^/]+/tests/", m.name)]
        if not any(m.name.endswith(TEST_FILE) for m in members):
            return False
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        tar.extractall(tmp, members=members, filter="data")
        top = next(tmp.iterdir())
        shutil.move(str(top / "tests"), str(dest / "tests"))
        shutil.rmtree(tmp)
    return True


def _from_git(repo: str, ref: str, dest: Path, log) -> str:
    """tests/ of `repo` (a local git folder or a URL) at `ref` into dest/tests; returns the commit."""
    if os.path.isdir(repo):
        git_dir = repo
        commit = _run(["git", "--git-dir", _git_dir(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"])
        if commit.returncode != 0:
            tags = _run(["git", "--git-dir", _git_dir(repo), "tag", "--sort=-v:refname"]).stdout.split()[:5]
            raise SourceError(f"{repo}: no revision {ref!r} (newest tags: {', '.join(tags) or 'none'}); "
                              "pass --ref to choose one")
        sha = commit.stdout.strip()
        archive = subprocess.run(["git", "--git-dir", _git_dir(git_dir), "archive", "--format=tar", sha, "tests"],
                                 capture_output=True)
        if archive.returncode != 0:
            raise SourceError(f"{repo}@{ref}: git archive failed: {archive.stderr.decode().strip()}")
        with tempfile.NamedTemporaryFile(suffix=".tar") as f:
            f.write(archive.stdout)
            f.flush()
            with tarfile.open(f.name) as tar:
                tar.extractall(dest, filter="data")
        return sha
    log(f"cloning {repo} at {ref} (tests/ only)")
    clone = dest / "clone"
    r = _run(["git", "clone", "--quiet", "--depth", "1", "--branch", ref, "--filter=blob:none", "--sparse", repo,
              str(clone)], timeout=300, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if r.returncode != 0:
        raise SourceError(f"cannot clone {repo} at {ref}: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
    _run(["git", "-C", str(clone), "sparse-checkout", "set", "tests"], timeout=300)
    sha = _run(["git", "-C", str(clone), "rev-parse", "HEAD"]).stdout.strip()
    shutil.move(str(clone / "tests"), str(dest / "tests"))
    shutil.rmtree(clone)
    return sha


def _git_dir(path: str) -> str:
    p = Path(path)
    return str(p / ".git") if (p / ".git").exists() else str(p)


def obtain_tests(version: str, cache: Path, source: Optional[str], repo: str, ref: Optional[str], log) -> dict:
    """Finds (or reuses from the cache) TRL's tests/ for `version`; returns {path, origin, revision}."""
    ref = ref or f"v{version}"
    cache.mkdir(parents=True, exist_ok=True)
    attempts = []
    candidates = []
    if source:
        candidates.append(("source", source))
    else:
        candidates += [("sdist", f"trl=={version}"), ("git", repo)]
    for kind, where in candidates:
        key = hashlib.sha1(f"{kind}:{os.path.abspath(where) if kind == 'source' else where}:{ref}".encode()).hexdigest()[:12]
        entry = cache / f"{kind}-{version}-{key}"
        meta_path = entry / "origin.json"
        if meta_path.exists() and (entry / TEST_FILE).exists() and kind != "source":
            meta = json.loads(meta_path.read_text())
            meta["path"] = str(entry / "tests")
            return meta
        if (entry / "no_tests").exists():  # a source distribution already seen without tests/
            attempts.append(f"{kind}: {(entry / 'no_tests').read_text()} (cached)")
            continue
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        try:
            if kind == "sdist":
                log(f"downloading the trl=={version} source distribution")
                dl = entry / "dl"
                r = _run([sys.executable, "-m", "pip", "download", f"trl=={version}", "--no-deps", "--no-binary",
                          ":all:", "--quiet", "-d", str(dl)], timeout=600)
                archives = sorted(dl.glob("*.tar.gz")) if dl.exists() else []
                if r.returncode != 0 or not archives:
                    raise SourceError(f"pip download trl=={version} failed: "
                                      f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
                found = _extract_tests_from_tar(archives[0], entry)
                shutil.rmtree(dl)
                if not found:
                    (entry / "no_tests").write_text(f"the trl {version} source distribution has no {TEST_FILE}")
                    attempts.append(f"{kind}: {(entry / 'no_tests').read_text()}")
                    continue
                meta = {"origin": f"trl {version} source distribution", "revision": version}
            elif kind == "git":
                sha = _from_git(where, ref, entry, log)
                meta = {"origin": f"{where} at {ref}", "revision": sha}
            elif os.path.isdir(where) and (Path(where) / TEST_FILE).exists() and not (Path(where) / ".git").exists():
                shutil.copytree(Path(where) / "tests", entry / "tests")
                meta = {"origin": f"source tree {where}", "revision": "unknown"}
            elif os.path.isfile(where) and where.endswith((".tar.gz", ".tgz", ".tar")):
                if not _extract_tests_from_tar(Path(where), entry):
                    raise SourceError(f"{where} has no {TEST_FILE}")
                meta = {"origin": f"archive {where}", "revision": "unknown"}
            elif os.path.isdir(where):
                sha = _from_git(where, ref, entry, log)
                meta = {"origin": f"git repository {where} at {ref}", "revision": sha}
            else:
                raise SourceError(f"--source {where}: not a git repository, source tree or .tar.gz")
        except (SourceError, subprocess.TimeoutExpired, OSError) as err:
            shutil.rmtree(entry, ignore_errors=True)
            attempts.append(f"{kind}: {err}")
            continue
        meta["trl_version"] = version
        meta_path.write_text(json.dumps(meta))
        meta["path"] = str(entry / "tests")
        return meta
    raise SourceError("cannot obtain TRL's tests: " + "; ".join(attempts))


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


def _env(mode: str, fixtures: Path, results: Path) -> dict:
    env = dict(os.environ)
    env.update(
        OAR_TRL_SUITE_MODE=mode, OAR_TRL_SUITE_FIXTURES=str(fixtures), OAR_TRL_SUITE_RESULTS=str(results),
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_CACHE=str(fixtures / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""), PYTHONDONTWRITEBYTECODE="1",
        TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _pytest(workdir: Path, mode: str, fixtures: Path, ids: List[str], results: Path, log_path: Path,
            extra: List[str], timeout: Optional[float]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-p", "trl_suite_plugin", "-p", "no:cacheprovider", "-q", "-rN",
           "--tb=short", "-W", "ignore::FutureWarning", *extra, *ids]
    with open(log_path, "w") as log:
        try:
            return subprocess.run(cmd, cwd=workdir, env=_env(mode, fixtures, results), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\ntrl_suite: timed out after {timeout} s\n")
            return 124


def collect(workdir: Path, fixtures: Path, selectors: List[str], keyword: Optional[str]) -> List[str]:
    args = [sys.executable, "-m", "pytest", "-p", "trl_suite_plugin", "-p", "no:cacheprovider", "--collect-only",
            "-q", *(["-k", keyword] if keyword else []), *selectors]
    r = subprocess.run(args, cwd=workdir, env=_env("baseline", fixtures, workdir / "collect.jsonl"),
                       capture_output=True, text=True)
    ids = [line.strip() for line in r.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if r.returncode not in (0, 5) or not ids:
        raise RuntimeError(f"pytest could not collect {selectors} (exit {r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return ids


def run_modes(workdir: Path, modes: List[str], fixtures: Path, ids: List[str], jobs: int, out: Path,
              timeout: Optional[float]) -> Dict[str, Dict[str, dict]]:
    """Runs `ids` once per mode, `jobs` pytest processes at a time (each mode's tests split over
    max(1, jobs // len(modes)) processes); {mode: {nodeid: record}}."""
    per_mode = max(1, jobs // len(modes))
    tasks = [(mode, i, ids[i::per_mode]) for mode in modes for i in range(per_mode) if ids[i::per_mode]]

    def one(task):
        mode, i, shard = task
        results = out / f"raw-{mode}-{i}.jsonl"
        results.unlink(missing_ok=True)
        t0 = time.time()
        _pytest(workdir, mode, fixtures, shard, results, out / f"log-{mode}-{i}.txt", [], timeout)
        return mode, results, time.time() - t0

    by_mode: Dict[str, Dict[str, dict]] = {mode: {} for mode in modes}
    with ThreadPoolExecutor(min(jobs, len(tasks))) as pool:
        for mode, results, _ in pool.map(one, tasks):
            if results.exists():
                for line in results.read_text().splitlines():
                    rec = json.loads(line)
                    by_mode[mode][rec["nodeid"]] = rec
    for mode in modes:  # a crashed or timed-out worker leaves tests without a record
        for nodeid in ids:
            by_mode[mode].setdefault(nodeid, {"nodeid": nodeid, "outcome": "failed", "duration": 0.0,
                                              "reason": "no result (worker crashed or timed out)"})
    return by_mode


SKIP_CATEGORIES = (  # first match wins
    ("hub-only", re.compile(r"^hub-only", re.I)),
    ("GPU-only", re.compile(r"accelerator|cuda|gpu|bf16|ampere|xpu", re.I)),
    ("vLLM", re.compile(r"vllm", re.I)),
    ("optional package", re.compile(r"requires |not installed|is not available", re.I)),
)


def skip_category(reason: str) -> str:
    for name, pattern in SKIP_CATEGORIES:
        if pattern.search(reason or ""):
            return name
    return "other"


def summarise(records: Dict[str, dict]) -> dict:
    counts = Counter(r["outcome"] for r in records.values())
    skips = Counter(skip_category(r.get("reason", "")) for r in records.values() if r["outcome"] == "skipped")
    return {"passed": counts.get("passed", 0), "skipped": counts.get("skipped", 0), "failed": counts.get("failed", 0),
            "xfailed": counts.get("xfailed", 0), "xpassed": counts.get("xpassed", 0),
            "skipped_by_reason": dict(sorted(skips.items()))}


def _label(mode: str) -> str:
    return "TRL's GRPOTrainer" if mode == "baseline" else f"OAR {mode}"


def _counts(s: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in s["skipped_by_reason"].items())
    return (f"{s['passed']} passed, {s['skipped']} skipped ({reasons or 'none'}), {s['failed']} failed, "
            f"{s['xfailed']} xfailed, {s['xpassed']} xpassed (TRL's own xfail marks)")


def _cell(rec: Optional[dict]) -> str:
    if rec is None:
        return ""
    if rec["outcome"] == "passed":
        return "passed"
    reason = (rec.get("reason") or "").replace("|", "\\|").replace("\n", " ")[:140]
    return f"{rec['outcome']}: {reason}" if reason else rec["outcome"]


def write_table(out: Path, meta: dict, modes: List[str], by_mode: Dict[str, Dict[str, dict]],
                baseline: Dict[str, dict], summary: dict, seconds: float) -> Path:
    ids = sorted({i for recs in by_mode.values() for i in recs})
    lines = [f"# TRL GRPOTrainer tests against OARGRPOTrainer", "",
             f"TRL installed: {meta['trl_version']}; tests from: {meta['origin']} (revision {meta['revision']}); "
             f"{seconds:.0f} s", ""]
    for mode in modes:
        s = summary[mode]
        lines.append(f"- {_label(mode)}: {_counts(s)}")
    lines += ["", "| test | " + " | ".join(_label(m) for m in modes) + " | TRL's GRPOTrainer (rerun of failures) |",
              "|---|" + "---|" * (len(modes) + 1)]
    for nodeid in ids:
        cells = [_cell(by_mode[m].get(nodeid)) for m in modes]
        lines.append(f"| {nodeid.split('::', 1)[-1]} | " + " | ".join(cells) + f" | {_cell(baseline.get(nodeid))} |")
    table = out / "results.md"
    table.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"source": meta, "summary": summary, "seconds": seconds,
         "tests": {m: by_mode[m] for m in modes}, "baseline": baseline}, indent=1))
    return table


def build_fixtures(cache: Path, version: str, log) -> Path:
    """The local models, tokenizers and data sets (trl_suite_fixtures.build), cached per
    fixtures version and TRL version (the chat templates are TRL's)."""
    sys.path.insert(0, str(HERE))
    import trl_suite_fixtures

    folder = cache / f"fixtures-v{trl_suite_fixtures.BUILD_VERSION}-trl{version}"
    if (folder / "manifest.json").exists():
        return folder
    log("building the local models, tokenizers and data sets")
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(name, "1")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fixtures-", dir=cache))
    trl_suite_fixtures.build(str(tmp))
    try:
        tmp.rename(folder)
    except OSError:  # another run finished building first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "manifest.json").exists():
            raise
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="on,off", help="comma-separated modes: on, off, baseline (default: on,off)")
    p.add_argument("--jobs", type=int, default=2,
                   help="pytest processes at a time, the modes sharing them (default: 2)")
    p.add_argument("--tests", nargs="*", default=[],
                   help="test ids inside test_grpo_trainer.py (e.g. TestGRPOTrainer::test_init_minimal); default: all")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to select tests")
    p.add_argument("--source", default=None,
                   help="a local TRL git repository, source tree or .tar.gz to take tests/ from")
    p.add_argument("--repo", default=DEFAULT_REPO, help="TRL git repository to clone the release tag from")
    p.add_argument("--ref", default=None, help="git revision to take the tests from (default: v<installed version>)")
    p.add_argument("--cache", default=None, help="cache folder (default: ~/.cache/oar_kernels/trl_suite)")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "oar_trl_suite"),
                   help="folder for results.md, results.json and logs (default: oar_trl_suite in the temp folder)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not rerun failures with TRL's own GRPOTrainer")
    p.add_argument("--timeout", type=float, default=None, help="seconds per pytest worker (default: none)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even when a failure is ours")
    args = p.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: expected a comma-separated subset of {list(MODES)}, got {args.modes!r}")
    if args.jobs < 1:
        p.error("--jobs: expected >= 1")

    def log(msg):
        print(f"trl_suite: {msg}", file=sys.stderr, flush=True)

    version = installed_trl_version()
    cache = Path(args.cache) if args.cache else default_cache()
    try:
        meta = obtain_tests(version, cache, args.source, args.repo, args.ref, log)
    except SourceError as err:
        print(f"trl_suite: error: {err}", file=sys.stderr)
        return 2
    log(f"TRL {version}; tests from {meta['origin']} (revision {meta['revision']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="trl_suite_") as tmp:
        tmp = Path(tmp)
        shutil.copytree(meta["path"], tmp / "tests")
        fixtures = build_fixtures(cache, version, log)
        selectors = [f"{TEST_FILE}::{t}" if "::" in t or t.startswith("Test") else t for t in args.tests] or [TEST_FILE]
        ids = collect(tmp, fixtures, selectors, args.keyword)
        log(f"{len(ids)} tests; modes {modes}; {args.jobs} pytest processes")
        t0 = time.time()
        by_mode = run_modes(tmp, modes, fixtures, ids, args.jobs, out, args.timeout)
        for mode in modes:
            log(f"mode {mode}: {_counts(summarise(by_mode[mode]))}")
        log(f"{time.time() - t0:.0f} s")
        failed = sorted({i for m in modes if m != "baseline" for i, r in by_mode[m].items() if r["outcome"] == "failed"})
        baseline = dict(by_mode.get("baseline", {}))
        if failed and not args.no_baseline and "baseline" not in by_mode:
            log(f"running the {len(failed)} failing tests with TRL's own GRPOTrainer")
            baseline = run_modes(tmp, ["baseline"], fixtures, failed, min(args.jobs, len(failed)), out,
                                 args.timeout)["baseline"]
    seconds = time.time() - start
    summary = {m: summarise(by_mode[m]) for m in modes}
    table = write_table(out, meta, modes, by_mode, baseline, summary, seconds)
    ours = [i for i in failed if baseline.get(i, {}).get("outcome") != "failed"]
    for mode in modes:
        print(f"{_label(mode)}: {_counts(summary[mode])}")
    if failed:
        print(f"{len(failed)} failing tests, of which {len(ours)} pass (or were not run) with TRL's own GRPOTrainer:")
        for i in ours:
            print(f"  {i}")
    print(f"per-test table: {table} ({seconds:.0f} s)")
    return 1 if ours and not args.allow_failures else 0


if __name__ == "__main__":
    sys.exit(main())
