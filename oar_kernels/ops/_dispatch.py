"""Backend choice shared by every op: "auto" | "triton" | "torch".

auto: CUDA tensors go to the Triton kernels, everything else to the torch path.
triton on CPU tensors runs the kernels in Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before any kernel module is imported; we check rather than guess.
"""
from __future__ import annotations

import os

import torch

from .._deps import triton_available, warn_cuda_without_triton

BACKENDS = ("auto", "triton", "torch")


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Returns "triton" or "torch" for an op whose main input is `tensor`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "auto":
        if not tensor.is_cuda:
            return "torch"
        if triton_available():
            return "triton"
        warn_cuda_without_triton()
        return "torch"
    if not triton_available():
        raise ValueError("backend: 'triton' requested but triton is not installed: pip install triton "
                         "(Linux only), or use backend='torch'")
    if not tensor.is_cuda and not interpreter_on():
        raise ValueError(
            "backend: 'triton' on CPU tensors needs Triton's interpreter; set TRITON_INTERPRET=1 "
            "in the environment before importing oar_kernels (or use backend='torch')"
        )
    return "triton"
