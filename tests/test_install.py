"""A regular (non-editable) install carries the built C kernel and the default policy, and runs
without writing anything into its own folder: nothing is compiled or downloaded at run time."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _listing(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


@pytest.mark.skipif(sys.platform == "win32", reason="the C kernel is built on POSIX systems here")
def test_installed_package_runs_read_only(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(ROOT)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named 'setuptools'" in build.stderr:
        pytest.skip("no setuptools in this environment to build the wheel without isolation")
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("oar_kernels-*.whl")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    pkg = site / "oar_kernels"
    assert list((pkg / "native").glob("_bilevel*")), "the wheel carries no built C kernel"
    assert (pkg / "default_job" / "default_policy" / "model.safetensors").is_file()
    before = _listing(pkg)
    code = textwrap.dedent(f"""
        import torch, oar_kernels as oar
        from oar_kernels.native import bilevel
        from oar_kernels.default_job import SHIPPED_DIR, load_default_policy
        assert oar.__file__.startswith({str(site)!r}), oar.__file__
        assert bilevel.available()
        s, m = torch.rand(3, 9), torch.ones(3, 9, dtype=torch.bool)
        torch.testing.assert_close(oar.bilevel_reshape(s, m), oar.bilevel_reshape(s, m, backend="torch"))
        model, tok, path = load_default_policy(progress=False, log=lambda *a: None)
        assert path == SHIPPED_DIR and path.startswith({str(site)!r})
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1",
               OAR_KERNELS_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
    assert _listing(pkg) == before  # nothing compiled, cached or downloaded into the install
    assert not (tmp_path / "cache").exists()  # nor into the cache
