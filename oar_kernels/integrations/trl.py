"""OAR as a drop-in for TRL's GRPOTrainer.

    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

    args = OARConfig(output_dir="out", oar_algo="oar-g", num_generations=8, ...)
    trainer = OARGRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=ds)
    trainer.train()

What changes against GRPOTrainer (docs/algorithm.md section 2): after TRL has generated, scored
and turned rewards into per-sequence advantages A_i, each completion that has an extractable
final answer (and a non-zero advantage) is split into prompt | reasoning | conclude | answer,
its reasoning tokens are scored with OAR-G (``oar.gradient_importance``) or OAR-P
(``oar.perturbation_importance``) on the current policy, the scores are Bi-Level reshaped
(``oar.bilevel_reshape``) into weights w, and the batch's ``"advantages"`` becomes the
per-token ``w * A_i`` of shape [B, T] (T = completion length). Positions after the reasoning
(answer statement, EOS, padding) and completions without an answer keep weight 1.

Overridden TRL methods (TRL internals move between releases, so the surface is kept to one
method and checked at import):

* ``GRPOTrainer._generate_and_score_completions``: called as is (generation with
  transformers / vLLM server / vLLM colocate, rewards, group advantages, logging all stay
  TRL's), then its ``"advantages"`` [B] are replaced by per-token advantages [B, T]. TRL's
  ``_compute_loss`` already accepts [B, T] advantages (it unsqueezes only 1-D ones), so the
  loss, its aggregation (``loss_type``), clipping, KL, gradient accumulation and
  ``num_items_in_batch`` are TRL's own, unchanged. TRL >= 1.16 has a single loss path:
  ``use_liger_kernel=True`` only swaps in Liger's layer kernels (RMSNorm, RoPE, SwiGLU) and
  the loss still goes through ``_compute_loss`` with TRL's fused, chunked LM head (no
  [B, T, V] logits), so the per-token advantages reach the Liger configuration as well.

Nothing else is overridden; ``__init__`` only checks that ``args`` is an OARConfig.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

from .._deps import check_supported_version, require_optional
from ..answers import DEFAULT_EXTRACTOR, AnswerSpan
from ..answers import resolve_extractor as _resolve_extractor
from ..importance import MODES as _MODES
from ..importance.scoring import score_segments
from ..segments import DEFAULT_CONCLUDE_TEXT, Segments, build_scored_segments

trl = require_optional("trl", "trl", "oar_kernels.integrations.trl")

# TRL releases this adapter was written and tested against: [min, max).
MIN_TRL_VERSION = "1.16.0"
MAX_TRL_VERSION = "2.0.0"
ALLOW_ANY_TRL_ENV = "OAR_KERNELS_ALLOW_ANY_TRL"

ALGOS = ("oar-g", "oar-p")
PFINAL_MODES = _MODES  # last, answer_mean, answer_joint, last_after_answer
ANSWER_SOURCES = ("response", "reference")
GRAD_SCORES = ("grad_x_input", "grad_norm")


def check_trl_version(version: str, allow_any: Optional[bool] = None) -> None:
    """Raises ImportError unless MIN_TRL_VERSION <= version < MAX_TRL_VERSION.

    With allow_any (default: environment variable OAR_KERNELS_ALLOW_ANY_TRL=1) an unsupported
    version only warns: use it to try a newer TRL at your own risk.
    """
    check_supported_version(
        "trl", version, MIN_TRL_VERSION, MAX_TRL_VERSION, ALLOW_ANY_TRL_ENV,
        "OARGRPOTrainer overrides GRPOTrainer._generate_and_score_completions and relies on "
        "GRPOTrainer._compute_loss accepting [B, T] advantages", allow_any)


check_trl_version(getattr(trl, "__version__", "unknown"))

from trl import GRPOConfig, GRPOTrainer  # noqa: E402  (after the version check, on purpose)

for _name in ("_generate_and_score_completions", "_compute_loss"):
    if not callable(getattr(GRPOTrainer, _name, None)):  # pragma: no cover - depends on trl
        raise ImportError(
            f"trl {trl.__version__}: GRPOTrainer has no method {_name}, which OARGRPOTrainer builds on; "
            f"install trl>={MIN_TRL_VERSION},<{MAX_TRL_VERSION}"
        )


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


def resolve_extractor(value) -> Callable[[str], Optional[AnswerSpan]]:
    """An answer extractor from a callable or an import path ("pkg.mod.func" or "pkg.mod:func");
    oar_kernels.answers.resolve_extractor, errors naming oar_answer_extractor."""
    return _resolve_extractor(value, name="oar_answer_extractor")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class OARConfig(GRPOConfig):
    """GRPOConfig plus the OAR settings (every GRPOConfig option keeps its meaning).

    oar_algo: "oar-g" (input-gradient saliency, one extra backward per response) or "oar-p"
        (perturbation, one suffix forward per reasoning token).
    oar_tau, oar_beta, oar_floor: Bi-Level reshaping (docs/algorithm.md section 5): quantile level
        splitting suppressed from boosted tokens, boost strength, smallest suppressed weight.
        oar_tau = 0 and oar_beta = 0 give weight 1 everywhere (plain GRPO).
    oar_pfinal_mode: "last", "answer_mean", "answer_joint" or "last_after_answer" (the
        authors' OAR-G `last`: the next-token distribution after the appended answer); None
        picks the recommended one ("answer_mean" for oar-g, "last" for oar-p).
    oar_answer_source: which answer the answer modes condition on: "response" (default: each
        completion's own extracted answer; completions without one keep weight 1) or
        "reference" (the data set's answer, column oar_reference_column, as the authors' code
        does; every completion with reasoning is scored).
    oar_reference_column: the data set column holding the reference answer.
    oar_perturb_token: OAR-P's perturbation token; None: the model config's pad_token_id,
        else its eos_token_id (the rule of oar.perturbation_importance and the trainer).
    oar_noise_std: OAR-G's embedding noise; oar_score: OAR-G's "grad_x_input" or "grad_norm".
    oar_max_batch_tokens: token budget of one batched scoring forward (None: the estimator's
        default).
    oar_conclude_text: text appended after the reasoning to ask for the final answer.
    oar_answer_extractor: text -> AnswerSpan | None, as a callable or an import path; use the
        same extractor as your reward function so both agree on what the answer is. An import
        path keeps the config picklable and JSON-serialisable.
    """

    oar_algo: str = field(default="oar-g", metadata={"help": "OAR estimator: 'oar-g' or 'oar-p'."})
    oar_tau: float = field(default=0.25, metadata={"help": "Bi-Level quantile level in [0, 1]."})
    oar_beta: float = field(default=1.0, metadata={"help": "Bi-Level boost strength, >= 0."})
    oar_floor: float = field(default=0.1, metadata={"help": "Smallest suppressed weight, in [0, 1]."})
    oar_pfinal_mode: Optional[str] = field(
        default=None,
        metadata={"help": "P_final mode: 'last', 'answer_mean', 'answer_joint' (None: per-algo default)."},
    )
    oar_noise_std: float = field(default=1e-3, metadata={"help": "OAR-G embedding noise std, >= 0."})
    oar_score: str = field(default="grad_x_input", metadata={"help": "OAR-G saliency: 'grad_x_input' or 'grad_norm'."})
    oar_answer_source: str = field(
        default="response",
        metadata={"help": "Answer the answer modes condition on: 'response' (own extracted) or 'reference'."},
    )
    oar_reference_column: str = field(
        default="answer", metadata={"help": "Data set column of the reference answer (oar_answer_source='reference')."}
    )
    oar_perturb_token: Optional[int] = field(
        default=None, metadata={"help": "OAR-P perturbation token id (None: config pad_token_id, else eos_token_id)."}
    )
    oar_max_batch_tokens: Optional[int] = field(
        default=None, metadata={"help": "Tokens per batched scoring forward (None: the estimator's default)."}
    )
    oar_conclude_text: str = field(
        default=DEFAULT_CONCLUDE_TEXT, metadata={"help": "Text asking for the final answer after the reasoning."}
    )
    oar_answer_extractor: Optional[str] = field(
        default=DEFAULT_EXTRACTOR,
        metadata={"help": "Import path (or, in Python, a callable) of the final-answer extractor."},
    )

    def __post_init__(self):
        if self.oar_algo not in ALGOS:
            raise ValueError(f"oar_algo: expected one of {list(ALGOS)}, got {self.oar_algo!r}")
        for name, lo, hi in (("oar_tau", 0.0, 1.0), ("oar_beta", 0.0, None), ("oar_floor", 0.0, 1.0),
                             ("oar_noise_std", 0.0, None)):
            value = getattr(self, name)
            if not _is_number(value) or value < lo or (hi is not None and value > hi):
                bounds = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"{name}: expected a finite number {bounds}, got {value!r}")
        if self.oar_pfinal_mode is None:
            self.oar_pfinal_mode = "answer_mean" if self.oar_algo == "oar-g" else "last"
        if self.oar_pfinal_mode not in PFINAL_MODES:
            raise ValueError(
                f"oar_pfinal_mode: expected None or one of {list(PFINAL_MODES)}, got {self.oar_pfinal_mode!r}"
            )
        if self.oar_answer_source not in ANSWER_SOURCES:
            raise ValueError(
                f"oar_answer_source: expected one of {list(ANSWER_SOURCES)}, got {self.oar_answer_source!r}"
            )
        if not isinstance(self.oar_reference_column, str) or not self.oar_reference_column:
            raise ValueError(f"oar_reference_column: expected a column name, got {self.oar_reference_column!r}")
        t = self.oar_perturb_token
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0):
            raise ValueError(f"oar_perturb_token: expected None or a token id >= 0, got {t!r}")
        if self.oar_score not in GRAD_SCORES:
            raise ValueError(f"oar_score: expected one of {list(GRAD_SCORES)}, got {self.oar_score!r}")
        m = self.oar_max_batch_tokens
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"oar_max_batch_tokens: expected None or an int >= 1, got {m!r}")
        if not isinstance(self.oar_conclude_text, str):
            raise ValueError(f"oar_conclude_text: expected a str, got {type(self.oar_conclude_text).__name__}")
        resolve_extractor(self.oar_answer_extractor)  # fails early, naming the field
        super().__post_init__()

    def to_dict(self):
        d = super().to_dict()
        fn = d.get("oar_answer_extractor")
        if callable(fn):  # keep the config JSON-serialisable (logging, checkpoints)
            d["oar_answer_extractor"] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return d


# --------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------


class OARGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are OAR's per-token w * A (see the module docstring).

    Takes exactly GRPOTrainer's arguments; ``args`` must be an OARConfig (None builds a
    default one). Adds the metrics oar/weight_mean, oar/weight_std, oar/weight_min,
    oar/weight_max, oar/suppressed_frac (share of scored reasoning tokens with w < 1),
    oar/scored_frac (share of completions that were scored) and oar/time (seconds per
    generation batch) to TRL's logs.
    """

    def __init__(self, model, reward_funcs=None, args: Optional[OARConfig] = None, *rest, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            args = OARConfig(f"{str(name).rstrip('/').split('/')[-1]}-OAR")
        if not isinstance(args, OARConfig):
            raise ValueError(
                f"args: expected an OARConfig (GRPOConfig plus the oar_* fields), got {type(args).__name__}; "
                "build it as OARConfig(<your GRPOConfig arguments>, oar_algo=...)"
            )
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        if getattr(self, "_is_vlm", False):
            raise ValueError(
                "processing_class: OARGRPOTrainer scores text-only causal LMs; vision-language models "
                "(a ProcessorMixin processing class) are not supported"
            )
        self._oar_extractor = resolve_extractor(args.oar_answer_extractor)
        self._oar_generator: Optional[torch.Generator] = None

    # -- the one TRL override ----------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training:  # evaluation keeps TRL's per-sequence advantages
            start = time.perf_counter()
            advantages = batch["advantages"]
            if advantages.dim() != 1:
                raise RuntimeError(
                    f"OARGRPOTrainer: expected TRL's per-sequence advantages [B], got shape "
                    f"{list(advantages.shape)}; is another subclass already reshaping them?"
                )
            references = None
            if self.args.oar_answer_source == "reference":
                column = self.args.oar_reference_column
                if any(column not in x for x in inputs):
                    raise ValueError(
                        f"oar_answer_source='reference': the data set has no column {column!r} "
                        "(set oar_reference_column)"
                    )
                references = [x[column] for x in inputs]
            weights, stats = self.oar_weights(batch, references)
            batch["advantages"] = advantages.unsqueeze(1) * weights.to(advantages.dtype)
            stats[-1] = time.perf_counter() - start
            self._log_oar_metrics(stats, "train")
        return batch

    # -- OAR weights --------------------------------------------------------------------

    def oar_segments(self, batch, references: Optional[list] = None) -> Tuple[List[int], List[Segments]]:
        """(rows, segments) of the completions of `batch` that OAR scores.

        A completion is scored when it has a non-zero advantage, at least one loss token, an
        extractable answer (with references, one per row: the reference answer instead, for
        every completion) with a non-empty reasoning before it, and a scoring sequence that
        fits the model's context.
        """
        args = self.args
        tokenizer = getattr(self, "_tokenizer", None) or self.processing_class
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"].bool()
        lengths = batch["completion_mask"].sum(dim=1).tolist()
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        if references is not None and len(references) != len(lengths):
            raise ValueError(f"references: expected {len(lengths)} answers (one per completion), got {len(references)}")
        rows, segments, _ = build_scored_segments(
            [prompt_ids[b][prompt_mask[b]].cpu() for b in range(len(lengths))],
            [batch["completion_ids"][b, : int(n)].cpu() for b, n in enumerate(lengths)],
            tokenizer,
            extractor=self._oar_extractor,
            conclude_text=args.oar_conclude_text,
            references=references,
            advantages=batch["advantages"].tolist(),
            max_length=getattr(config, "max_position_embeddings", None),
            with_answer=args.oar_pfinal_mode != "last",
        )
        return rows, segments

    def oar_importance(self, segments: List[Segments]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Importance scores of `segments` on the current policy: (scores, mask) [n, R_max].

        Runs with every module in eval mode (flags restored after) and computes no parameter
        gradient (OAR-G differentiates with respect to the input embeddings only).
        """
        args = self.args
        model = self.model  # the module TRL itself runs its extra forwards on (no DDP wrapper)
        return score_segments(model, segments, args.oar_algo, args.oar_pfinal_mode, noise_std=args.oar_noise_std,
                              score=args.oar_score,
                              generator=self._noise_generator(model) if args.oar_algo == "oar-g" else None,
                              perturb_token=args.oar_perturb_token, max_batch_tokens=args.oar_max_batch_tokens)

    def oar_weights(self, batch, references: Optional[list] = None) -> Tuple[torch.Tensor, List[float]]:
        """OAR weights [B, T] (float32, on the batch's device) for the completions of `batch`.

        Reasoning positions of scored completions get the Bi-Level weights; every other position
        gets 1. Also returns local statistics for the metrics.
        """
        from oar_kernels import bilevel_reshape

        args = self.args
        completion_ids = batch["completion_ids"]
        B, T = completion_ids.shape
        weights = torch.ones(B, T, dtype=torch.float32, device=completion_ids.device)
        rows, segments = self.oar_segments(batch, references)
        # stats: w sum, w^2 sum, count, min, max, suppressed count, scored rows, rows, seconds
        stats = [0.0, 0.0, 0.0, math.inf, -math.inf, 0.0, float(len(rows)), float(B), 0.0]
        if not rows:
            return weights, stats
        scores, smask = self.oar_importance(segments)
        w = bilevel_reshape(scores.float(), smask, tau=args.oar_tau, beta=args.oar_beta, floor=args.oar_floor)
        r_max = w.shape[1]
        if r_max > T:  # reasoning is a prefix of the completion, so this cannot happen
            raise RuntimeError(f"OAR: reasoning length {r_max} exceeds completion length {T}")
        index = torch.tensor(rows, device=weights.device)
        weights[index, :r_max] = w.to(weights.device)
        if smask.any():
            ws = w[smask].double()
            stats[:6] = [ws.sum().item(), (ws * ws).sum().item(), float(ws.numel()), ws.min().item(),
                         ws.max().item(), (ws < 1).sum().item()]
        return weights, stats

    # -- helpers ------------------------------------------------------------------------

    def _noise_generator(self, model) -> torch.Generator:
        device = model.get_input_embeddings().weight.device
        if self._oar_generator is None or self._oar_generator.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(self.args.seed) * 1000003 + int(self.accelerator.process_index))
            self._oar_generator = gen
        return self._oar_generator

    def _log_oar_metrics(self, stats: List[float], mode: str) -> None:
        device = self.accelerator.device
        local = torch.tensor(stats, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
        allp = self.accelerator.gather(local.unsqueeze(0)).view(-1, len(stats))
        s, s2, n = allp[:, 0].sum().item(), allp[:, 1].sum().item(), allp[:, 2].sum().item()
        metrics = self._metrics[mode]
        rows = allp[:, 7].sum().item()
        metrics["oar/scored_frac"].append(allp[:, 6].sum().item() / max(rows, 1.0))
        metrics["oar/time"].append(allp[:, 8].max().item())
        if n > 0:
            mean = s / n
            metrics["oar/weight_mean"].append(mean)
            metrics["oar/weight_std"].append(math.sqrt(max(s2 / n - mean * mean, 0.0)))
            metrics["oar/weight_min"].append(allp[:, 3].min().item())
            metrics["oar/weight_max"].append(allp[:, 4].max().item())
            metrics["oar/suppressed_frac"].append(allp[:, 5].sum().item() / n)


__all__ = [
    "OARConfig",
    "OARGRPOTrainer",
    "check_trl_version",
    "resolve_extractor",
    "MIN_TRL_VERSION",
    "MAX_TRL_VERSION",
]
