"""The test suite collects without the optional packages.

The GPU machine (`pytest --gpu -m kernels tests/`) has no liger-kernel, trl, cut-cross-entropy,
datasets or reasoning-gym, and pytest imports every test module to collect even a `-m`
selection: one module-level import of an optional package is a collection error there, and the
whole run stops. So every test file imports them inside the tests that need them
(`pytest.importorskip`). This runs the kernel selection's collection in a child Python from
which those packages are hidden, also where they are installed."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HIDDEN = ("liger_kernel", "trl", "cut_cross_entropy", "datasets", "reasoning_gym")

# Put first on the child's PYTHONPATH: every meta-path finder is wrapped so that it finds none
# of HIDDEN (`import trl` raises ModuleNotFoundError, importlib.util.find_spec("trl") is None,
# importlib.metadata lists no distribution of them), as where they are not installed.
SITECUSTOMIZE = textwrap.dedent("""
    import importlib.abc, sys
    HIDDEN = {hidden!r}
    DISTS = {{name.replace("_", "-") for name in HIDDEN}}
    class _Without(importlib.abc.MetaPathFinder):
        def __init__(self, inner):
            self.inner = inner
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN or not hasattr(self.inner, "find_spec"):
                return None
            return self.inner.find_spec(name, path, target)
        def find_distributions(self, *args, **kwargs):
            found = getattr(self.inner, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
            return [d for d in found if (d.metadata["Name"] or "").lower().replace("_", "-") not in DISTS]
        def invalidate_caches(self):
            getattr(self.inner, "invalidate_caches", lambda: None)()
    sys.meta_path[:] = [_Without(f) for f in sys.meta_path]
""").format(hidden=HIDDEN)

PROBE = textwrap.dedent("""
    import importlib, importlib.util
    for name in {hidden!r}:
        assert importlib.util.find_spec(name) is None, name
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        raise AssertionError(name + " imported")
    print("hidden")
""").format(hidden=HIDDEN)


def _env_without_optional(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_kernel_selection_collects_without_optional_packages(tmp_path):
    env = _env_without_optional(tmp_path)
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0 and "hidden" in probe.stdout, probe.stdout + probe.stderr

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-m", "kernels", "-p", "no:cacheprovider", "tests/"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    text = out.stdout + out.stderr
    # on failure show pytest's ERRORS section (which module failed to import, and why)
    shown = text[text.find("= ERRORS =") if "= ERRORS =" in text else -4000:][:6000]
    assert out.returncode == 0, shown
    summary = [line for line in out.stdout.splitlines() if " collected" in line]
    assert summary, shown
    assert "error" not in summary[-1].lower(), shown
    m = re.match(r"(\d+)/\d+ tests collected", summary[-1])
    assert m and int(m.group(1)) > 100, summary[-1]
