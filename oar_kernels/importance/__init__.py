"""OAR-P and OAR-G token importance on any transformers causal LM (see docs/importance.md).

    perturbation_importance(model, segments, mode="last")        # OAR-P, prefix reuse
    gradient_importance(model, segments, mode="answer_mean")     # OAR-G, batched
    OARGStep(model, ...)(segments, response_ids) / oarg_step(...) # OAR-G in the training step
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from importlib import import_module

_EXPORTS = {
    "perturbation_importance": ".perturbation",
    "gradient_importance": ".gradient",
    "OARGStep": ".step",
    "OARGOutput": ".step",
    "oarg_step": ".step",
    "MODES": "._common",  # the P_final modes every estimator accepts
    "SCORES": "._common",  # OAR-G's saliency scores
    "EvalMode": "._common",  # context manager: every submodule in eval mode, flags restored on exit
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oar_kernels.importance' has no attribute {name!r}")
