"""One call from a batch's Segments to OAR's token importance, with the algorithm chosen by
name: what the trainer, the TRL adapter and the verl plugin each score a batch with."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ..segments import Segments
from ._common import EvalMode
from .gradient import gradient_importance
from .perturbation import perturbation_importance

ALGOS = ("oar-g", "oar-p")


def score_segments(model, segments: List[Segments], algo: str, mode: str, *, noise_std: float = 1e-3,
                   score: str = "grad_x_input", generator: Optional[torch.Generator] = None,
                   perturb_token: Optional[int] = None,
                   max_batch_tokens: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scores, mask) [len(segments), R_max] on `model`: OAR-G (gradient_importance, with
    noise_std / score / generator) for algo "oar-g", OAR-P (perturbation_importance, with
    perturb_token) for "oar-p". Every module runs in eval mode (flags restored after) and no
    parameter gradient is computed. max_batch_tokens: the estimator's token budget per forward
    (None: its default)."""
    if algo not in ALGOS:
        raise ValueError(f"algo: expected one of {ALGOS}, got {algo!r}")
    kwargs = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
    with EvalMode(model):
        if algo == "oar-g":
            return gradient_importance(model, segments, mode=mode, noise_std=noise_std, score=score,
                                       generator=generator, **kwargs)
        with torch.no_grad():
            return perturbation_importance(model, segments, mode=mode, perturb_token=perturb_token, **kwargs)
