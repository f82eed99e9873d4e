"""Test-wide setup.

Triton's interpreter must be switched on before any kernel module is imported, so it is set
here, before collection: by default the Triton kernels run in the interpreter on every
machine (CI has no GPU), and backend="triton" on CPU tensors means "interpreted kernels".

    python -m pytest -q --gpu -m kernels tests/        # the kernel tests on a real GPU

With --gpu (needs CUDA) the interpreter stays off and every kernel launcher of
oar_kernels/kernels/ is wrapped: its CPU tensor arguments are copied to the GPU with the same
sizes and strides, the launcher runs there (its GPU launch configuration, compiled kernels,
tensor cores for 16-bit tl.dot), and results and written buffers are copied back. The tests
themselves are unchanged; the ops around the launchers (their torch/cuBLAS parts) still run on
CPU, so this checks the kernels, and benchmarks/gpu_check.py checks the ops on CUDA tensors.
Tolerances need no change on a GPU: every kernel accumulates in fp32 (fp64 where the tests
use fp64), and a 16-bit tl.dot on tensor cores multiplies exactly and accumulates in fp32,
so results differ from the CPU reference by summation order only: the tests' fp32 bounds
(forward atol 2e-5 to 1e-4; gradients 3e-5 of their scale, 2e-3 / 2e-2 for fp16 / bf16
gradients rounded to the input dtype) hold.
"""
import os
import random
import zlib

import pytest
import torch

# Kernel test files: the "kernels" marker selects them (pytest -m kernels).
KERNEL_TEST_FILES = {
    "test_fused_linear_logprob.py", "test_fused_linear_grpo_loss.py", "test_bilevel_triton.py",
    "test_saliency_probe.py", "test_strides.py", "test_bilevel.py",
}

# Test tensors are small: one thread avoids thread-pool overhead and contention on the
# 2-core CI machine (measured 10-20x faster for tiny-model forwards than 2 threads under load).
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the Triton kernels compiled on the GPU instead of in the interpreter")


def pytest_configure(config):
    config.addinivalue_line("markers", "kernels: tests of the Triton kernels (run on a GPU with --gpu)")
    if not config.getoption("--gpu"):
        os.environ.setdefault("TRITON_INTERPRET", "1")
        return
    if not torch.cuda.is_available():
        raise pytest.UsageError("--gpu: torch.cuda.is_available() is False here")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise pytest.UsageError("--gpu: unset TRITON_INTERPRET")
    _run_launchers_on_gpu()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in KERNEL_TEST_FILES:
            item.add_marker(pytest.mark.kernels)


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """Each test gets its own reproducible seed (from its id), so random inputs do not depend
    on which tests ran before it, and a failure reproduces when the test is run alone."""
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    torch.manual_seed(seed)
    yield


# ----------------------------------------------------------------------------- --gpu


_GPU = "cuda"  # "cpu" checks the wrapper itself on a machine without a GPU (copies, no GPU)


def _to_gpu(t: torch.Tensor) -> torch.Tensor:
    """A CUDA copy of t with t's sizes and strides (expanded tensors: a dense copy)."""
    try:
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=_GPU)
        out.copy_(t)
        return out
    except RuntimeError:
        return t.to(_GPU)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN (an unchanged input must not be written: autograd would
    see its version change)."""
    eq = a == b
    if a.is_floating_point():
        eq |= a.isnan() & b.isnan()
    return bool(eq.all())


def _on_gpu(launcher):
    """launcher(...) with CPU tensors run as launcher(...) with their CUDA copies."""

    def run(*args, **kwargs):
        pairs = []

        def move(a):
            if isinstance(a, torch.Tensor) and a.device.type == "cpu":
                g = _to_gpu(a.detach())
                pairs.append((a, g))
                return g
            return a

        out = launcher(*[move(a) for a in args], **{k: move(v) for k, v in kwargs.items()})
        if _GPU == "cuda":
            torch.cuda.synchronize()
        for cpu, gpu in pairs:  # copy back the buffers the launcher wrote, and only those
            new = gpu.cpu()
            if not _same(cpu, new):
                with torch.no_grad():
                    cpu.copy_(new)
        back = {id(g): c for c, g in pairs}

        def ret(x):
            if isinstance(x, torch.Tensor):
                return back.get(id(x), x.cpu())
            if isinstance(x, tuple):
                return tuple(ret(v) for v in x)
            return x

        return ret(out)

    run.__wrapped__ = launcher
    return run


def _run_launchers_on_gpu():
    from oar_kernels.kernels import bilevel, linear_logprob, saliency
    from oar_kernels.ops import _dispatch

    for mod, names in ((linear_logprob, ("fused_forward", "chunk_stats", "chunk_dlogits")),
                       (bilevel, ("bilevel_reshape_triton",)), (saliency, ("saliency_reduce_triton",))):
        for name in names:
            setattr(mod, name, _on_gpu(getattr(mod, name)))
    # backend="triton" on CPU tensors is allowed (it reaches the wrapped launchers)
    _dispatch.interpreter_on = lambda: True


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Folder of a warm-started tiny character policy (tests/tiny_models.py::save_warm_tiny_policy),
    shared read-only by the trainer tests: the trainer loads it and writes elsewhere."""
    from tiny_models import save_warm_tiny_policy

    return save_warm_tiny_policy(str(tmp_path_factory.mktemp("tiny-policy")))
