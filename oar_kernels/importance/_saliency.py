"""Token saliency formed inside the backward: oar.SaliencyProbe when present, autograd if not.

    sal = Saliency(x)          # x [B, T, D]: the clean input of gradient x input
    y = sal.output             # feed y (plus any constant noise) to the model
    gxi, gn = sal.backward(outputs, grad_outputs, retain_graph)   # [B, T] float32 each

The gradient is taken with respect to x only (torch.autograd.grad with inputs=[x]): no
parameter gradient is computed and no .grad is touched.
"""
from __future__ import annotations

import torch

try:
    from ..ops.saliency import SaliencyProbe as _Probe
except Exception:  # pragma: no cover - the probe op not installed
    _Probe = None


class Saliency:
    def __init__(self, x: torch.Tensor):
        self.x = x
        if _Probe is not None:
            self.probe = _Probe()
            self.output = self.probe(x)
        else:  # pragma: no cover
            self.probe = None
            self.output = x

    def backward(self, outputs, grad_outputs=None, retain_graph: bool = False):
        """|<dJ/dy_t, x_t>| and ||dJ/dy_t||_2 as [B, T] float32, J = <outputs, grad_outputs>."""
        if self.probe is not None:
            self.probe.reset()
            torch.autograd.grad(outputs, [self.x], grad_outputs=grad_outputs, retain_graph=retain_graph)
            return self.probe.grad_x_input, self.probe.grad_norm
        (g,) = torch.autograd.grad(  # pragma: no cover
            outputs, [self.x], grad_outputs=grad_outputs, retain_graph=retain_graph
        )
        with torch.no_grad():  # pragma: no cover
            acc = torch.float64 if g.dtype == torch.float64 else torch.float32
            gxi = (g.to(acc) * self.x.detach().to(acc)).sum(-1).abs().float()
            gn = g.to(acc).norm(dim=-1).float()
        return gxi, gn
