"""Plain, obviously-correct PyTorch versions of every op: the test oracles.

They skip input validation (the public ops do it) and favour clarity over speed, except
where the public op uses them as its CPU path (bilevel, grpo), which is vectorized.
"""
from importlib import import_module

_EXPORTS = {
    "bilevel_reshape_reference": ".bilevel",
    "group_advantages_reference": ".grpo",
    "per_token_grpo_loss": ".grpo",
    "aggregate_loss": ".grpo",
    "k3_kl": ".grpo",
    "linear_logprob_reference": ".logprob",
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
