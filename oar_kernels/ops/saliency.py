"""oar.saliency_probe / oar.SaliencyProbe: token saliency captured inside the backward pass.

An identity op on activations x [B, T, D] (input embeddings or any hidden state). Its
backward receives g = dJ/dy, passes it through unchanged (the very tensor, no copy) and, in
the same read of g and x, writes per token

    grad_x_input[b, t] = |<g[b, t], x[b, t]>|     (OAR-G's gradient x input saliency)
    grad_norm[b, t]    = ||g[b, t]||_2           (the gradient-norm variant)

as [B, T] float32, accumulated in fp32 whatever the input dtype. CUDA tensors use the Triton
kernel (oar_kernels/kernels/saliency.py); CPU tensors a torch expression.

    probe = oar.SaliencyProbe()
    y = probe(x)                          # y is x, as far as values and gradients go
    (dx,) = torch.autograd.grad(J, [x])   # or J.backward(), retain_graph=..., repeatedly
    probe.grad_x_input, probe.grad_norm   # [B, T] float32

Repeated backward passes through the same graph (retain_graph=True) overwrite the results by
default (what OAR-G needs: one objective, one saliency); with accumulate=True they add up
(grad_norm then sums norms, it is not the norm of the summed gradient).

The probe runs when the backward goes *through* y: ask for gradients w.r.t. x or anything
upstream of it (torch.autograd.grad(J, [y]) stops at y and never reaches the probe).
x need not require grad: the output is then tied to a scalar `anchor` tensor that does, so
J.backward() (or torch.autograd.grad(J, [probe.anchor])) still runs the probe's backward.
"""
from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_tensor
from ._dispatch import resolve_backend

__all__ = ["SaliencyProbe", "saliency_probe"]


def _check_out(name: str, out, x: torch.Tensor) -> None:
    if out is None:
        return
    check_tensor(name, out, shape=(x.shape[0], x.shape[1]), dtypes=(torch.float32,), device=x.device)


def _reduce_torch(g, x, gxi_out, gn_out, accumulate):
    """CPU path: a batched dot product per token (bmm, no [B, T, D] temporary for fp32/fp64)
    and a norm accumulated in fp32. 16-bit inputs are upcast first (a copy, CPU only)."""
    acc = torch.float64 if torch.float64 in (g.dtype, x.dtype) else torch.float32
    gg = g.to(acc)
    xx = x.to(acc)
    B, T, D = x.shape
    dot = torch.matmul(gg.reshape(B * T, 1, D), xx.reshape(B * T, D, 1)).reshape(B, T)
    gxi = dot.abs().to(torch.float32)
    gn = torch.linalg.vector_norm(gg, dim=-1).to(torch.float32)
    if accumulate:
        gxi_out.add_(gxi)
        gn_out.add_(gn)
    else:
        gxi_out.copy_(gxi)
        gn_out.copy_(gn)


class _Sink:
    """Where one probe application delivers its results (buffers, or a SaliencyProbe)."""

    def __init__(self, backend, gxi_out=None, gn_out=None, accumulate=False, probe=None):
        self.backend = backend
        self.gxi_out = gxi_out
        self.gn_out = gn_out
        self.accumulate = accumulate
        self.probe = probe

    def buffers(self, x: torch.Tensor):
        if self.probe is not None:
            return self.probe._buffers_for(x)
        B, T = x.shape[0], x.shape[1]
        gxi = self.gxi_out if self.gxi_out is not None else torch.empty(B, T, device=x.device)
        gn = self.gn_out if self.gn_out is not None else torch.empty(B, T, device=x.device)
        return gxi, gn

    def deliver(self, gxi, gn):
        if self.probe is not None:
            self.probe.grad_x_input = gxi
            self.probe.grad_norm = gn


class _SaliencyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, anchor, sink):
        ctx.sink = sink
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sink = ctx.sink
        gxi, gn = sink.buffers(x)
        accumulate = sink.accumulate and (sink.probe is None or sink.probe._has_results(x))
        if sink.backend == "triton":
            from ..kernels.saliency import saliency_reduce_triton

            saliency_reduce_triton(g, x, gxi, gn, accumulate)
        else:
            with torch.no_grad():
                _reduce_torch(g, x, gxi, gn, accumulate)
        sink.deliver(gxi, gn)
        return g, None, None


def _apply(x: torch.Tensor, sink: _Sink):
    anchor = None
    if not x.requires_grad and torch.is_grad_enabled():
        anchor = torch.zeros((), device=x.device, dtype=x.dtype, requires_grad=True)
    y = _SaliencyFn.apply(x, anchor, sink)
    return y, anchor


def _check_x(x) -> None:
    check_tensor("x", x, ndim=3, dtypes=FLOAT_DTYPES)


def saliency_probe(
    x: torch.Tensor,
    grad_x_input_out: torch.Tensor | None = None,
    grad_norm_out: torch.Tensor | None = None,
    backend: str = "auto",
    accumulate: bool = False,
) -> torch.Tensor:
    """Identity on x [B, T, D] whose backward writes token saliencies into the given buffers.

    Args:
        x: [B, T, D] activations, any float dtype; the "clean" input of gradient x input.
        grad_x_input_out: [B, T] float32 on x's device, receives |<dJ/dy_t, x_t>|; None skips
            keeping it (it is still computed: one kernel produces both).
        grad_norm_out: [B, T] float32 on x's device, receives ||dJ/dy_t||_2.
        backend: "auto" (Triton on CUDA, torch elsewhere), "triton" or "torch".
        accumulate: add to the buffers instead of overwriting them.

    Returns:
        y [B, T, D], equal to x (a view of it); gradients reaching y pass through unchanged.
    """
    _check_x(x)
    _check_out("grad_x_input_out", grad_x_input_out, x)
    _check_out("grad_norm_out", grad_norm_out, x)
    if not isinstance(accumulate, bool):
        raise ValueError(f"accumulate: expected a bool, got {accumulate!r}")
    sink = _Sink(resolve_backend(backend, x), grad_x_input_out, grad_norm_out, accumulate)
    y, _ = _apply(x, sink)
    return y


class SaliencyProbe:
    """Holds the saliencies of the last backward through `probe(x)`.

    Attributes (None before any backward, [B, T] float32 after one):
        grad_x_input: |<g_t, x_t>| with g = dJ/dy.
        grad_norm: ||g_t||_2.
        anchor: the scalar tensor y hangs on when x does not require grad, else None.

    One probe per tensor: applying it twice in one graph makes the two backward calls
    overwrite (or, with accumulate=True, add to) the same results.
    """

    def __init__(self, backend: str = "auto", accumulate: bool = False):
        if not isinstance(accumulate, bool):
            raise ValueError(f"accumulate: expected a bool, got {accumulate!r}")
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"backend: expected one of ['auto', 'triton', 'torch'], got {backend!r}")
        self.backend = backend
        self.accumulate = accumulate
        self.grad_x_input: torch.Tensor | None = None
        self.grad_norm: torch.Tensor | None = None
        self.anchor: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """y = x ([B, T, D]), recording saliencies on the way back."""
        _check_x(x)
        sink = _Sink(resolve_backend(self.backend, x), accumulate=self.accumulate, probe=self)
        y, self.anchor = _apply(x, sink)
        return y

    def reset(self) -> None:
        """Forgets the results (the next backward starts from scratch even if accumulating)."""
        self.grad_x_input = None
        self.grad_norm = None

    # -- called from the backward ------------------------------------------------------
    def _has_results(self, x: torch.Tensor) -> bool:
        r = self.grad_x_input
        return r is not None and r.shape == x.shape[:2] and r.device == x.device

    def _buffers_for(self, x: torch.Tensor):
        if self.accumulate and self._has_results(x):
            return self.grad_x_input, self.grad_norm
        # fresh tensors each time: results handed out earlier are never modified
        B, T = x.shape[0], x.shape[1]
        return torch.empty(B, T, device=x.device), torch.empty(B, T, device=x.device)
