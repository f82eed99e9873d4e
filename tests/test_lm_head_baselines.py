"""The LM-head baselines of benchmarks/baselines.py compute what our ops compute (else their
timings in benchmarks/test_bench_ops.py and gpu_check.py would compare unlike things). Tiny
sizes; the torch.compile'd variants and Cut Cross-Entropy are left to the benchmarks (compile time)."""
import pytest
import torch
from bench_loader import load_benchmark

lb = load_benchmark("baselines")


def _close(got, want):
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-5 * max(1.0, b.abs().max().item()), rtol=1e-4)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("entropy", [False, True])
def test_logprob_baselines_agree(entropy, grad):
    """Every path, fwd+bwd and forward only: our two forward modes (the Triton backend, here in
    the interpreter), and each of liger's paths (the Triton one has no entropy: missing)."""
    N, D, V = 24, 16, 97
    h = torch.randn(N, D).requires_grad_(True)
    w = (torch.randn(V, D) / 2).requires_grad_(True)
    t = torch.randint(0, V, (N,))
    g, g2 = torch.randn(N), torch.randn(N)
    liger = ("liger", "liger:scaled", "liger:triton", "liger:fallback") if lb._importable("liger_kernel") else ()
    names = ("oar", "oar:fused", "oar:chunked", "trl", "eager") + liger
    fns, missing = lb.make_logprob(h, w, t, g, g2, entropy=entropy, names=names, backend="triton", grad=grad)
    assert set(fns) | set(missing) == set(names)
    if liger:
        assert ("liger:triton" in missing) == entropy
        assert entropy or "Triton" in fns["liger:triton"].note
    want = fns["eager"]()
    for name, fn in fns.items():
        got = fn()
        _close([x for x in got if x is not None], [x for x in want if x is not None])


def test_grpo_baselines_agree():
    B, T, D, V = 3, 8, 16, 61
    h3 = torch.randn(B, T, D).requires_grad_(True)
    w = (torch.randn(V, D) / 2).requires_grad_(True)
    t2 = torch.randint(0, V, (B, T))
    mask = torch.rand(B, T) > 0.2
    old = -4.1 + 0.1 * torch.randn(B, T)
    fns, missing = lb.make_grpo(h3, w, t2, old, torch.randn(B), mask, names=("oar", "liger", "trl+oar", "eager"),
                                liger_compiled=False)
    want = fns["eager"]()
    for name, fn in fns.items():
        _close(fn(), want)


def test_missing_baseline_is_reported_not_raised():
    h, w, t = torch.randn(4, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True), torch.randint(0, 11, (4,))
    fns, missing = lb.make_logprob(h, w, t, torch.ones(4), torch.ones(4), entropy=True, names=("cce", "eager"))
    assert "cce" in missing and "eager" in fns
