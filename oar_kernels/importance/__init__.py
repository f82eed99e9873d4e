"""OAR-P and OAR-G token importance on any transformers causal LM (see docs/importance.md).

    perturbation_importance(model, segments, mode="last")        # OAR-P, prefix reuse
    gradient_importance(model, segments, mode="answer_mean")     # OAR-G, batched
    OARGStep(model, ...)(segments, response_ids) / oarg_step(...) # OAR-G in the training step
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .._lazy import lazy_getattr

_EXPORTS = {
    "perturbation_importance": ".perturbation",
    "gradient_importance": ".gradient",
    "score_segments": ".scoring",  # either estimator by name, in eval mode: the trainer's and adapters' one call
    "OARGStep": ".step",
    "OARGOutput": ".step",
    "oarg_step": ".step",
    "MODES": "._common",  # the P_final modes every estimator accepts
    "SCORES": "._common",  # OAR-G's saliency scores
    "EvalMode": "._common",  # context manager: every submodule in eval mode, flags restored on exit
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
