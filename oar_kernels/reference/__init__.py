"""Plain, obviously-correct versions of the ops: the test oracles. Nothing in the library imports
them (tests/test_layering.py checks); the public ops carry their own code.

They skip input validation (the public ops do it) and favour clarity over speed: loops over
rows, groups and tokens where that reads closer to docs/algorithm.md than vectorized code.
"""
from .._lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
