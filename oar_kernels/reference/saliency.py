"""Gradient saliency per token (docs/algorithm.md section 4), plain PyTorch: the test oracle.

Given g = dJ/dy and the clean input x, both [B, T, D]:
    grad_x_input = |<g_t, x_t>|  and  grad_norm = ||g_t||_2, each [B, T] float32.
"""
from __future__ import annotations

import torch


def saliency_reference(g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x_input, grad_norm), [B, T] float32, accumulated in float64."""
    g64 = g.to(torch.float64)
    x64 = x.to(torch.float64)
    grad_x_input = (g64 * x64).sum(dim=-1).abs()
    grad_norm = (g64 * g64).sum(dim=-1).sqrt()
    return grad_x_input.to(torch.float32), grad_norm.to(torch.float32)
