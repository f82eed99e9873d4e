"""oar_kernels: fast Outcome-grounded Advantage Reshaping (OAR) for GRPO.

    import oar_kernels as oar
    A = oar.group_advantages(rewards, group_size=8)                # [B]
    scores, smask = oar.gradient_importance(model, segments)       # [B, R]  (OAR-G)
    w = oar.bilevel_reshape(scores, smask)                         # [B, R]
    loss, metrics = oar.grpo_loss(logp, old_logp, A, mask, weights=w_on_response_positions)

Public names resolve lazily, so `import oar_kernels` stays cheap and pulls in neither
transformers nor Triton until an op that needs them is used. It does import the small data
and default-job modules (standard library only), so that the default job's generated task is
registered with oar_kernels.data.load_task wherever the package is used.
"""
from importlib import import_module

from ._version import __version__
from . import default_job as _default_job  # noqa: F401 (registers the generated tasks with data.load_task)

# public name -> module that defines it (relative to this package)
_EXPORTS = {
    "group_advantages": ".ops.advantages",
    "bilevel_reshape": ".ops.bilevel",
    "grpo_loss": ".ops.grpo_loss",
    "fused_linear_logprob": ".ops.fused_linear_logprob",
    "fused_linear_grpo_loss": ".ops.fused_linear_grpo_loss",
    "saliency_probe": ".ops.saliency",
    "SaliencyProbe": ".ops.saliency",
    "perturbation_importance": ".importance.perturbation",
    "gradient_importance": ".importance.gradient",
    "Segments": ".segments",
    "build_segments": ".segments",
    "DEFAULT_CONCLUDE_TEXT": ".segments",
    "AnswerSpan": ".answers",
    "extract_answer": ".answers",
}
_SUBMODULES = ("reference", "ops", "kernels", "importance", "train", "rewards", "data", "default_job", "rollout")

__all__ = sorted(_EXPORTS) + ["__version__", "reference"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'oar_kernels' has no attribute {name!r}")


def __dir__():
    return __all__
