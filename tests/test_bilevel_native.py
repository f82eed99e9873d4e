"""Bi-Level reshaping's C kernel (oar_kernels/native) vs the torch reference.

Tolerances: both sides take the same float32 s = log1p(max(I, 0)) up to the log1p
implementation (the kernel's polynomial is within ~2 ulp), use reciprocals instead of
divisions (1 ulp each) and sum rows in another order: rtol = atol = 1e-5, as for the Triton
kernel. The quantile's order statistics are exact (checked on their own below).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import oar_kernels as oar
from oar_kernels.native import bilevel as native
from oar_kernels.reference.bilevel import bilevel_reshape_reference

pytestmark = pytest.mark.skipif(not native.available(), reason="the install built no native kernel (no C compiler at install time)")

TOL = dict(rtol=1e-5, atol=1e-5)


def _batch(B, T, seed, holes=0.05):
    """Heavy-tailed scores, ragged spans at random offsets with holes, one empty row, one
    all-equal row, one R = 1 row, one row of negatives, one huge row, one row of ties."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, T, generator=g).exp() * torch.rand(B, 1, generator=g) * 5
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    starts = (torch.rand(B, generator=g) * (T - lengths + 1)).long()
    pos = torch.arange(T)
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    mask &= torch.rand(B, T, generator=g) >= holes
    if B >= 7:
        mask[0] = False
        mask[1] = False
        mask[1, T // 2] = True                               # R = 1
        mask[2] = True
        scores[2] = 0.75                                     # all equal
        mask[3] = True
        scores[3] = -torch.rand(T, generator=g)              # negatives clamp to 0
        scores[4] = torch.rand(T, generator=g) * 1e30        # huge
        scores[5] = torch.randint(0, 4, (T,), generator=g).float()  # many ties
        scores[6, ~mask[6]] = float("nan")                   # padding may hold NaN
    return scores, mask


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("sum_to_len", [True, False])
@pytest.mark.parametrize("T", [1, 7, 8, 37, 300])
def test_matches_reference(tau, sum_to_len, T):
    scores, mask = _batch(12, T, seed=T * 10 + int(tau * 4) + sum_to_len)
    kw = dict(tau=tau, beta=1.0, floor=0.1, sum_to_len=sum_to_len)
    got = native.bilevel_reshape_native(scores, mask, **kw)
    want = bilevel_reshape_reference(scores, mask, **kw)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, **TOL)
    assert torch.equal(got[~mask], torch.ones_like(got[~mask]))
    if sum_to_len:
        rows = mask.sum(1) > 0
        torch.testing.assert_close(
            (got * mask).sum(1)[rows].double(), mask.sum(1)[rows].double(), rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("beta,floor", [(0.0, 0.1), (2.5, 0.0), (1.0, 1.0), (0.3, 0.7)])
def test_other_hyperparameters(beta, floor):
    scores, mask = _batch(16, 129, seed=int(beta * 10 + floor * 100))
    kw = dict(tau=0.3, beta=beta, floor=floor, sum_to_len=True)
    torch.testing.assert_close(
        native.bilevel_reshape_native(scores, mask, **kw), bilevel_reshape_reference(scores, mask, **kw), **TOL
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores(dtype):
    scores, mask = _batch(9, 65, seed=3)
    s = scores.clamp(max=6e4).to(dtype)
    torch.testing.assert_close(
        native.bilevel_reshape_native(s, mask, 0.25, 1.0, 0.1, True),
        bilevel_reshape_reference(s, mask, 0.25, 1.0, 0.1, True),
        **TOL,
    )


def test_quantile_is_exact():
    """Scores whose s values are well apart: the boost/suppress split and the quantile must
    match numpy's np.quantile on the row exactly, whatever the histogram binning did."""
    g = torch.Generator().manual_seed(11)
    for R in (2, 3, 4, 5, 17, 64, 1000, 4097):
        for tau in (0.0, 0.1, 0.25, 0.5, 0.99, 1.0):
            perm = torch.randperm(R, generator=g)
            scores = (perm.double() * 0.01 + 0.05).exp().float()[None]  # distinct, spread out
            mask = torch.ones_like(scores, dtype=torch.bool)
            w = native.bilevel_reshape_native(scores, mask, tau, 1.0, 0.0, False)[0].double()
            s = torch.log1p(scores[0].double())
            n = (s - s.min()) / (s.max() - s.min())
            q = float(np.quantile(n.numpy(), tau))
            want = torch.where(n < q, n / (q + 1e-8), 1 + (n - q) / (1 - q + 1e-8))
            torch.testing.assert_close(w, want, rtol=1e-5, atol=1e-5)


def test_rows_independent_and_threads_agree():
    scores, mask = _batch(64, 1024, seed=5)  # 64k elements: the threaded path
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.bilevel_reshape_native(scores, mask, 0.25, 1.0, 0.1, True)
        torch.set_num_threads(2)
        two = native.bilevel_reshape_native(scores, mask, 0.25, 1.0, 0.1, True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    for b in (0, 1, 7, 63):
        assert torch.equal(one[b], native.bilevel_reshape_native(scores[b : b + 1], mask[b : b + 1], 0.25, 1.0, 0.1, True)[0])


def test_noncontiguous_inputs_and_degenerate_shapes():
    scores, mask = _batch(10, 50, seed=8)
    st, mt = scores.t().contiguous().t(), mask.t().contiguous().t()
    assert not st.is_contiguous()
    torch.testing.assert_close(native.bilevel_reshape_native(st, mt, 0.25, 1.0, 0.1, True),
                               bilevel_reshape_reference(scores, mask, 0.25, 1.0, 0.1, True), **TOL)
    for shape in [(0, 5), (3, 0), (1, 1)]:
        s, m = torch.rand(shape), torch.ones(shape, dtype=torch.bool)
        out = native.bilevel_reshape_native(s, m, 0.25, 1.0, 0.1, True)
        assert out.shape == shape and out.dtype == torch.float32
        assert torch.equal(out, torch.ones(shape))


def test_public_op_dispatch():
    scores, mask = _batch(8, 40, seed=2)
    auto = oar.bilevel_reshape(scores, mask)
    assert torch.equal(auto, oar.bilevel_reshape(scores, mask, backend="native"))
    torch.testing.assert_close(auto, oar.bilevel_reshape(scores, mask, backend="torch"), **TOL)
    # float64 scores keep the float64 torch path under auto (the kernel works in float32)
    s64 = scores.double()
    assert torch.equal(oar.bilevel_reshape(s64, mask), oar.bilevel_reshape(s64, mask, backend="torch"))
    # the kernel's own finiteness check: NaN / Inf at a masked position (in a later row, so the
    # threaded path meets it too) is a ValueError naming scores; off the mask it is padding
    big, bmask = _batch(64, 1024, seed=4)
    for bad in (float("nan"), float("inf"), float("-inf")):
        s = big.clone()
        row = 40 + int(bmask[40:].sum(1).argmax())  # a masked row in the second thread's range
        s[row, int(bmask[row].nonzero()[-1])] = bad
        with pytest.raises(ValueError, match="scores"):
            oar.bilevel_reshape(s, bmask)
        s = big.clone()
        s[~bmask] = bad
        torch.testing.assert_close(oar.bilevel_reshape(s, bmask), oar.bilevel_reshape(big, bmask))


def test_switch_off_falls_back_and_native_backend_errors():
    code = (
        "import torch, oar_kernels as oar\n"
        "s, m = torch.rand(2, 5), torch.ones(2, 5, dtype=torch.bool)\n"
        "w = oar.bilevel_reshape(s, m)\n"
        "assert torch.equal(w, oar.bilevel_reshape(s, m, backend='torch'))\n"
        "try:\n"
        "    oar.bilevel_reshape(s, m, backend='native')\n"
        "except ValueError as e:\n"
        "    assert 'backend' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = dict(os.environ, OAR_KERNELS_NATIVE="0")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_failed_build_still_installs_with_one_warning(tmp_path):
    """setup.py marks the C extension optional: a compiler that fails leaves a warning, exit 0
    and no library (pip then installs the package without it)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CC="false")  # a "compiler" that always fails
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                          "--build-temp", str(tmp_path / "tmp")], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [l for l in (res.stdout + res.stderr).splitlines() if "oar_kernels.native._bilevel" in l and "failed" in l]
    assert len(warnings) == 1, res.stdout + res.stderr
    assert not list(tmp_path.rglob("_bilevel*"))


def test_missing_library_falls_back_to_torch(monkeypatch):
    from oar_kernels.native import _lib

    monkeypatch.setattr(_lib, "_loaded", {})
    monkeypatch.setattr(_lib, "library_path", lambda name: None)
    assert not native.available()
    s, m = torch.rand(3, 7), torch.ones(3, 7, dtype=torch.bool)
    torch.testing.assert_close(oar.bilevel_reshape(s, m), bilevel_reshape_reference(s, m), **TOL)
    with pytest.raises(ValueError, match="backend"):
        oar.bilevel_reshape(s, m, backend="native")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threaded_path_works_in_a_forked_child():
    """The row-thread pool is made again in a forked child (a child inherits no threads)."""
    scores, mask = _batch(64, 1024, seed=6)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = native.bilevel_reshape_native(scores, mask, 0.25, 1.0, 0.1, True)  # the pool exists now
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: compute, report, exit without running pytest's teardown
            try:
                got = native.bilevel_reshape_native(scores, mask, 0.25, 1.0, 0.1, True)
                os.write(w, b"1" if torch.equal(got, want) else b"0")
            finally:
                os._exit(0)
        os.close(w)
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:  # a child stuck on a pool without threads: fail, do not hang the suite
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the threaded path")
        assert os.read(r, 1) == b"1" and status == 0
    finally:
        torch.set_num_threads(before)
