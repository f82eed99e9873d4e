"""Token importance for the trainer: the one place that picks the implementations.

`importance_fns()` returns (gradient_importance, perturbation_importance), the batched
estimators of oar_kernels.importance (equal to the naive oracles of
oar_kernels.reference.importance, tests/test_importance_fast.py). A function rather than an
import so that benchmarks/rl_step.py can wrap it to time the importance part of a step.
"""
from __future__ import annotations


def importance_fns():
    from ..importance import gradient_importance, perturbation_importance

    return gradient_importance, perturbation_importance
