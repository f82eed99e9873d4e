"""Plain, obviously-correct versions of the ops: the test oracles. Nothing in the library imports
them (tests/test_layering.py checks); the public ops carry their own code.

They skip input validation (the public ops do it) and favour clarity over speed: loops over
rows, groups and tokens where that reads closer to docs/algorithm.md than vectorized code.
"""
from importlib import import_module

_EXPORTS = {
    "bilevel_reshape_reference": ".bilevel",
    "group_advantages_reference": ".grpo",
    "grpo_loss_reference": ".grpo",
    "linear_logprob_reference": ".logprob",
    "saliency_reference": ".saliency",
    "perturbation_importance_naive": ".importance",
    "gradient_importance_naive": ".importance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oar_kernels.reference' has no attribute {name!r}")
