"""Docstrings, comments and docs cite files that exist in this repository."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("docs", "benchmarks", "scripts", "tests", "csrc", "python", "oar_kernels", ".ci")
# a path under one of the project's top folders, or a bare upper-case Markdown name (README.md, RESULTS.md;
# lower-case bare names are mostly output files: --out results.md)
PATH_RE = re.compile(r"(?<![\w/.-])((?:%s)/[\w./-]*[\w]|[A-Z][A-Z0-9_]+\.md)\b" % "|".join(re.escape(t) for t in TOP))


def _tracked_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines()]


def _missing(text: str, names: set) -> list:
    bad = []
    for ref in PATH_RE.findall(text):
        ref = ref.rstrip(".")
        if "/" in ref:
            if not (ROOT / ref).exists() and not any(c in ref for c in "*<>{}"):
                bad.append(ref)
        elif ref not in names:
            bad.append(ref)
    return bad


def test_cited_files_exist():
    here = Path(__file__).resolve()  # its own negative examples below are not citations
    files = [p for p in _tracked_files() if p.suffix in (".py", ".md", ".c", ".sh") and p.exists() and p != here]
    names = {p.name for p in files}
    problems = {}
    for p in files:
        bad = _missing(p.read_text(encoding="utf-8", errors="replace"), names)
        if bad:
            problems[str(p.relative_to(ROOT))] = sorted(set(bad))
    assert not problems, problems


def test_the_check_catches_a_missing_file():
    names = {"README.md"}
    assert _missing("see OAR_SPEC.md section 5 and docs/nowhere.md", names) == ["OAR_SPEC.md", "docs/nowhere.md"]
    assert _missing("see README.md and docs/algorithm.md", names) == []
