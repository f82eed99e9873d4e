"""oar.saliency_probe / oar.SaliencyProbe vs a plain autograd computation of g = dJ/dy.

Both backends ("torch", and "triton" in the interpreter on CPU). Tolerances: fp32 and fp64
inputs rtol 1e-5 / atol 1e-6 against a float64 oracle (fp32 accumulation over D <= 96);
fp16 / bf16 inputs are upcast exactly and accumulated in fp32, so the same tolerance holds
against the oracle fed the same 16-bit g and x; 2e-5 leaves room for summation order.
"""
import pytest
import torch

import oar_kernels as oar
from oar_kernels.reference.saliency import saliency_reference

BACKENDS = ["torch", "triton"]


def _objective(y, seed=0):
    """A nonlinear J so that g = dJ/dy differs per token and per channel."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(y.shape, generator=g).to(y.dtype)
    return (torch.tanh(y) * c).sum() + 0.5 * (y.float() ** 2).sum()


def _expected(x, seed=0):
    """g = dJ/dy by plain autograd, then the float64 oracle."""
    y = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_objective(y, seed), [y])
    return g, saliency_reference(g, x.detach())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 3, 96), (3, 1, 33)])
def test_matches_autograd_fp32(backend, shape):
    x = torch.randn(shape, requires_grad=True)
    g_ref, (gxi_ref, gn_ref) = _expected(x)
    probe = oar.SaliencyProbe(backend=backend)
    assert probe.grad_x_input is None and probe.grad_norm is None
    y = probe(x)
    (dx,) = torch.autograd.grad(_objective(y), [x])
    torch.testing.assert_close(dx, g_ref, rtol=0, atol=0)
    for got, want in ((probe.grad_x_input, gxi_ref), (probe.grad_norm, gn_ref)):
        assert got.dtype == torch.float32 and got.shape == shape[:2]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(backend, dtype):
    x = (torch.randn(2, 6, 40) * 2).to(dtype).requires_grad_(True)
    probe = oar.SaliencyProbe(backend=backend)
    y = probe(x)
    (g,) = torch.autograd.grad(_objective(y, 1), [y], retain_graph=True)
    (dx,) = torch.autograd.grad(_objective(y, 1), [x])
    assert dx.dtype == dtype and torch.equal(dx, g)
    gxi_ref, gn_ref = saliency_reference(g, x.detach())
    assert probe.grad_x_input.dtype == torch.float32
    torch.testing.assert_close(probe.grad_x_input, gxi_ref, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(probe.grad_norm, gn_ref, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_passes_through_bit_identically(backend):
    """With and without the probe, every gradient (x and upstream parameters) is the same."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(11, 13)
    lin = torch.nn.Linear(13, 13)
    ids = torch.randint(0, 11, (2, 9))

    def run(use_probe):
        emb.zero_grad(set_to_none=True)
        lin.zero_grad(set_to_none=True)
        e = emb(ids)
        if use_probe:
            e = oar.saliency_probe(e, backend=backend)
        lin(e).pow(2).sum().backward()
        return emb.weight.grad.clone(), lin.weight.grad.clone()

    a, b = run(False), run(True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_and_retain_graph_overwrite(backend):
    x = torch.randn(2, 4, 6, requires_grad=True)
    probe = oar.SaliencyProbe(backend=backend)
    y = probe(x)
    J = _objective(y, 2)
    J.backward(retain_graph=True)
    first = probe.grad_x_input
    g, (gxi_ref, gn_ref) = _expected(x, 2)
    torch.testing.assert_close(first, gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g, rtol=0, atol=0)
    # a second objective through the same graph overwrites; the earlier tensor is untouched
    first_copy = first.clone()
    (2.0 * J).backward()
    assert torch.equal(first, first_copy)
    torch.testing.assert_close(probe.grad_x_input, 2.0 * gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.grad_norm, 2.0 * gn_ref, rtol=1e-5, atol=1e-6)
    probe.reset()
    assert probe.grad_x_input is None and probe.grad_norm is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_accumulate(backend):
    x = torch.randn(1, 5, 8, requires_grad=True)
    probe = oar.SaliencyProbe(backend=backend, accumulate=True)
    y = probe(x)
    J = _objective(y, 3)
    J.backward(retain_graph=True)
    J.backward()
    _, (gxi_ref, gn_ref) = _expected(x, 3)
    torch.testing.assert_close(probe.grad_x_input, 2.0 * gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.grad_norm, 2.0 * gn_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_buffers_and_upstream_grad(backend):
    """Buffers are written in place; autograd.grad w.r.t. a tensor upstream of y works."""
    w = torch.randn(3, 7, 10, requires_grad=True)
    x = w * 1.5                                    # x is not a leaf
    gxi = torch.full((3, 7), float("nan"))
    gn = torch.full((3, 7), float("nan"))
    y = oar.saliency_probe(x, gxi, gn, backend=backend)
    (dw,) = torch.autograd.grad(_objective(y, 4), [w])
    g, (gxi_ref, gn_ref) = _expected(x, 4)
    torch.testing.assert_close(dw, 1.5 * g, rtol=0, atol=0)
    torch.testing.assert_close(gxi, gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gn, gn_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_x_without_grad(backend):
    """x not requiring grad: J.backward() still runs the probe (through its anchor)."""
    x = torch.randn(2, 3, 5)
    probe = oar.SaliencyProbe(backend=backend)
    y = probe(x)
    assert y.requires_grad and probe.anchor is not None
    _objective(y, 5).backward()
    _, (gxi_ref, gn_ref) = _expected(x, 5)
    torch.testing.assert_close(probe.grad_x_input, gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.grad_norm, gn_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_and_expanded_gradients(backend):
    """J = y.sum() hands the backward an expanded (stride 0) gradient; x may be a view."""
    base = torch.randn(4, 3, 9, requires_grad=True)
    x = base.transpose(0, 1)                      # [3, 4, 9], non-contiguous
    probe = oar.SaliencyProbe(backend=backend)
    probe(x).sum().backward()
    gxi_ref, gn_ref = saliency_reference(torch.ones(3, 4, 9), x.detach())
    torch.testing.assert_close(probe.grad_x_input, gxi_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.grad_norm, gn_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(base.grad, torch.ones_like(base))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_pass_through(backend):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    probe = oar.SaliencyProbe(backend=backend)
    assert torch.autograd.gradcheck(lambda t: probe(t), (x,))
    assert probe.grad_x_input is not None


def test_bad_input():
    good = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="x"):
        oar.saliency_probe(torch.randn(2, 3))
    with pytest.raises(ValueError, match="x"):
        oar.saliency_probe(torch.ones(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="x"):
        oar.SaliencyProbe()([1.0, 2.0])
    with pytest.raises(ValueError, match="grad_x_input_out"):
        oar.saliency_probe(good, grad_x_input_out=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="grad_x_input_out"):
        oar.saliency_probe(good, grad_x_input_out=torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="grad_norm_out"):
        oar.saliency_probe(good, grad_norm_out=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="grad_norm_out"):
        oar.saliency_probe(good, grad_norm_out=torch.zeros(2, 3, device="meta"))
    with pytest.raises(ValueError, match="backend"):
        oar.saliency_probe(good, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        oar.SaliencyProbe(backend="fast")
    with pytest.raises(ValueError, match="accumulate"):
        oar.SaliencyProbe(accumulate=1)


def test_benchmark_gpu_rows_run_blind():
    """benchmarks/gpu_check.py:saliency_rows runs end to end (tiny sizes, CPU interpreter)."""
    from bench_loader import load_benchmark

    rows = load_benchmark("gpu_check").saliency_rows("cpu", shape=(2, 3, 24), dtype=torch.bfloat16, repeats=1, hidden_mult=1)
    assert len(rows) == 3
    for row in rows:
        assert row.op == "saliency_probe" and "error" not in row.metric, row
    assert rows[2].ok, rows[2]  # kernel vs float64 reference
