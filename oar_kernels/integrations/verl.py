"""OAR-G and OAR-P as a verl plugin (verl 0.9.1; docs/integrations.md, section "verl").

After ``pip install 'oar_kernels[verl]'`` the ``verl.plugins`` entry point imports this module
whenever verl itself is imported, and the import registers :class:`OARTrainer` under the V1
trainer mode ``"oar"``. A GRPO run turns OAR on from its configuration alone:

    trainer.use_v1=True trainer.v1.trainer_mode=oar actor_rollout_ref.actor.strategy=fsdp2
    +oar.algo=oar-g +oar.tau=0.25 +oar.beta=1.0 ...

What changes against verl's synchronous trainer (docs/algorithm.md section 2): after verl has
computed GRPO's advantages (``PPOTrainer._compute_advantage``, multi-turn sessions included),
the trainer asks the actor workers (:meth:`OARScoringMixin.oar_score`, dispatched like
``compute_log_prob``) to score their share of the batch with the policy as it is before the
update (pi_old), every module in eval mode. Each worker splits every response into
prompt | reasoning | conclude | answer with the worker's own tokenizer
(``segments.build_scored_segments``, the rule the TRL adapter uses), scores the reasoning
tokens with ``gradient_importance`` (OAR-G) or ``perturbation_importance`` (OAR-P), reshapes
the scores with ``bilevel_reshape`` and returns one weight per response token (1 outside the
reasoning and for every response it does not score). The driver multiplies the weights into
verl's ``[B, T]`` advantages; verl's own ``ppo_loss`` then uses them unchanged.

The trainer otherwise *is* verl's ``"sync"`` trainer: it subclasses ``PPOTrainerSync`` and its
``trainer_mode`` reads ``"sync"`` everywhere verl compares it, so replay buffer, refill, weight
sync and checkpointing behave exactly as in a ``trainer_mode=sync`` run.

Nothing here is a second copy of the library: answer extraction (``answers.resolve_extractor``),
which responses are scored (``segments.build_scored_segments``), the perturbation token
(``perturbation_importance``'s rule: config pad, else EOS, unless ``oar.perturb_token``) and
the reference-answer option are the library's, as in the TRL adapter and the trainer.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .._checks import check_choice, check_number
from .._deps import check_supported_version, require_optional
from ..answers import DEFAULT_EXTRACTOR, resolve_extractor
from ..importance import MODES as PFINAL_MODES
from ..importance.scoring import score_segments
from ..importance.sharded import full_parameters as sharded_full_parameters
from ..importance.sharded import has_fsdp1_units
from ..segments import DEFAULT_CONCLUDE_TEXT, SKIP_REASONS, build_scored_segments

# verl loads this module again through its entry point: harmless
verl = require_optional("verl", "verl", "oar_kernels.integrations.verl")

# verl releases this plugin was written and tested against: [min, max).
MIN_VERL_VERSION = "0.9.1"
MAX_VERL_VERSION = "0.10.0"
ALLOW_ANY_VERL_ENV = "OAR_KERNELS_ALLOW_ANY_VERL"

TRAINER_MODE = "oar"  # trainer.v1.trainer_mode that selects OARTrainer
CONFIG_KEY = "oar"  # top-level section of verl's configuration holding the OAR settings
ALGOS = ("oar-g", "oar-p")
ANSWER_SOURCES = ("response", "reference")
GRAD_SCORES = ("grad_x_input", "grad_norm")
# per-response outcome codes of oar_score (column "oar_status"); 0 = scored
STATUS = ("scored",) + SKIP_REASONS
WEIGHTS, STATUS_KEY, REASONING_KEY = "oar_weights", "oar_status", "oar_reasoning_len"

logger = logging.getLogger(__name__)


def check_verl_version(version: str, allow_any: Optional[bool] = None) -> None:
    """ImportError unless MIN_VERL_VERSION <= version < MAX_VERL_VERSION (with allow_any, or
    OAR_KERNELS_ALLOW_ANY_VERL=1, only a warning)."""
    check_supported_version(
        "verl", version, MIN_VERL_VERSION, MAX_VERL_VERSION, ALLOW_ANY_VERL_ENV,
        "it subclasses the V1 PPOTrainerSync and ActorRolloutRefWorker, whose internals move between releases",
        allow_any)


check_verl_version(getattr(verl, "__version__", "unknown"))

# after the version check, on purpose
from tensordict import TensorDict  # noqa: E402

from verl.protocol import DataProto  # noqa: E402
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register  # noqa: E402
from verl.trainer.ppo.v1.trainer_base import register_trainer  # noqa: E402
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402


# --------------------------------------------------------------------------------------
# Settings (the `oar:` section of verl's configuration)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OARSettings:
    """The keys of the ``oar:`` section (docs/integrations.md has the table).

    algo: "oar-g" or "oar-p". tau, beta, floor: Bi-Level reshaping (docs/algorithm.md
    section 5). pfinal_mode: one of importance.MODES, None for the algorithm's default
    ("answer_mean" for oar-g, "last" for oar-p). answer_source: "response" (each response's
    own extracted answer) or "reference" (the data's answer at reference_key, a dotted path
    into the batch's non-tensor fields: field, then dict keys). perturb_token: OAR-P's token,
    None for the library's rule (model config pad, else EOS). noise_std, score: OAR-G.
    max_batch_tokens: token budget of one scoring forward (None: the estimator's default).
    conclude_text, answer_extractor: where the reasoning ends and how the answer is asked for:
    the extractor's answer span starts the answer statement, everything before it is reasoning.
    seed: OAR-G noise seed (each worker draws from seed and its rank).
    """

    algo: str = "oar-g"
    tau: float = 0.25
    beta: float = 1.0
    floor: float = 0.1
    pfinal_mode: Optional[str] = None
    answer_source: str = "response"
    reference_key: str = "reward_model.ground_truth"
    perturb_token: Optional[int] = None
    noise_std: float = 1e-3
    score: str = "grad_x_input"
    max_batch_tokens: Optional[int] = None
    conclude_text: str = DEFAULT_CONCLUDE_TEXT
    answer_extractor: str = DEFAULT_EXTRACTOR
    seed: int = 0

    @classmethod
    def keys(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_config(cls, section: Optional[Mapping[str, Any]]) -> "OARSettings":
        """Settings from the ``oar:`` section (a dict or an OmegaConf node; None: defaults).

        ValueError naming the key for an unknown key (listing the allowed ones) or a bad value.
        """
        if section is None:
            section = {}
        if hasattr(section, "items") and not isinstance(section, dict):
            from omegaconf import OmegaConf

            section = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
        if not isinstance(section, dict):
            raise ValueError(f"{CONFIG_KEY}: expected a mapping of OAR settings, got {type(section).__name__}")
        allowed = cls.keys()
        unknown = sorted(str(k) for k in section if k not in allowed)
        if unknown:
            raise ValueError(
                f"{CONFIG_KEY}.{unknown[0]}: unknown OAR key"
                + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
                + f"; allowed keys: {', '.join(allowed)}"
            )
        values = dict(section)
        if values.get("pfinal_mode") is None:
            values["pfinal_mode"] = "answer_mean" if values.get("algo", cls.algo) == "oar-g" else "last"
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        p = f"{CONFIG_KEY}."
        check_choice(p + "algo", self.algo, ALGOS)
        check_number(p + "tau", self.tau, lo=0.0, hi=1.0)
        check_number(p + "beta", self.beta, lo=0.0)
        check_number(p + "floor", self.floor, lo=0.0, hi=1.0)
        check_choice(p + "pfinal_mode", self.pfinal_mode, PFINAL_MODES)
        check_choice(p + "answer_source", self.answer_source, ANSWER_SOURCES)
        if not isinstance(self.reference_key, str) or not self.reference_key.strip(". "):
            raise ValueError(f"{p}reference_key: expected a field name such as 'reward_model.ground_truth', "
                             f"got {self.reference_key!r}")
        if self.perturb_token is not None:
            check_number(p + "perturb_token", self.perturb_token, lo=0, integer=True)
        check_number(p + "noise_std", self.noise_std, lo=0.0)
        check_choice(p + "score", self.score, GRAD_SCORES)
        if self.max_batch_tokens is not None:
            check_number(p + "max_batch_tokens", self.max_batch_tokens, lo=1, integer=True)
        if not isinstance(self.conclude_text, str):
            raise ValueError(f"{p}conclude_text: expected a str, got {type(self.conclude_text).__name__}")
        if not isinstance(self.answer_extractor, str):
            raise ValueError(f"{p}answer_extractor: expected an import path such as {DEFAULT_EXTRACTOR!r} "
                             f"(a string keeps verl's configuration serialisable), got {self.answer_extractor!r}")
        resolve_extractor(self.answer_extractor, name=p + "answer_extractor")
        check_number(p + "seed", self.seed, integer=True)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def noise_seed(seed: int, rank: int) -> int:
    """OAR-G noise seed of one worker (the TRL adapter's convention: seed and process index)."""
    return int(seed) * 1000003 + int(rank)


# --------------------------------------------------------------------------------------
# A verl batch as rows
# --------------------------------------------------------------------------------------


def _rows_of(t: torch.Tensor) -> List[torch.Tensor]:
    return list(t.unbind(0)) if t.is_nested else [t[b] for b in range(t.shape[0])]


def _non_tensor(data, name: str):
    if isinstance(data, DataProto):
        if name in data.non_tensor_batch:
            return list(data.non_tensor_batch[name])
        return None
    if name in data.keys():
        value = data.get(name)
        return value.tolist() if hasattr(value, "tolist") else list(value)
    return None


def batch_references(data, key: str) -> List[Any]:
    """The reference answer of every row: `key` is "field" or "field.sub.keys" (verl's data sets
    keep it at reward_model.ground_truth)."""
    field, *path = key.split(".")
    values = _non_tensor(data, field)
    if values is None:
        raise ValueError(f"{CONFIG_KEY}.reference_key: the batch has no field {field!r} "
                         f"(answer_source 'reference' reads the reference answer at {key!r})")
    out = []
    for b, v in enumerate(values):
        for part in path:
            if not isinstance(v, Mapping) or part not in v:
                raise ValueError(f"{CONFIG_KEY}.reference_key: row {b} has no {key!r} (its {field!r} is {v!r})")
            v = v[part]
        out.append(v)
    return out


def batch_rows(data) -> Tuple[List[torch.Tensor], List[torch.Tensor], Optional[List[bool]]]:
    """(prompts, responses, has nonzero advantage or None) of a verl batch, one unpadded row each.

    Takes a DataProto or TensorDict as verl pads it (prompts left-padded and responses
    right-padded, ``attention_mask`` over prompt + response) or as V1 keeps it (nested jagged
    ``prompts`` / ``responses``, or plain [B, L] tensors whose rows are unpadded).
    """
    batch = data.batch if isinstance(data, DataProto) else data
    for name in ("prompts", "responses"):
        if name not in batch.keys():
            raise ValueError(f"data: expected a verl batch with a {name!r} field, got fields {sorted(batch.keys())}")
    prompts, responses = batch["prompts"], batch["responses"]
    mask = batch.get("attention_mask", None) if "attention_mask" in batch.keys() else None
    if prompts.is_nested or responses.is_nested or mask is None or mask.is_nested:
        p_rows, r_rows = _rows_of(prompts), _rows_of(responses)
    else:
        P, T = prompts.shape[1], responses.shape[1]
        if mask.shape[1] != P + T:
            raise ValueError(f"data: attention_mask has {mask.shape[1]} columns, expected prompts + responses = {P + T}")
        pm, rm = mask[:, :P].bool(), mask[:, P:]
        lengths = rm.sum(dim=1).tolist()
        p_rows = [prompts[b][pm[b]] for b in range(prompts.shape[0])]
        r_rows = [responses[b, : int(n)] for b, n in enumerate(lengths)]
    nonzero = None
    if "advantages" in batch.keys():
        nonzero = [bool(a.ne(0).any()) for a in _rows_of(batch["advantages"])]
    return [p.cpu() for p in p_rows], [r.cpu() for r in r_rows], nonzero


# --------------------------------------------------------------------------------------
# Scoring (what each actor worker runs on its share of the batch)
# --------------------------------------------------------------------------------------


def score_rows(model, tokenizer, prompts, responses, settings: OARSettings, nonzero=None, references=None,
               generator: Optional[torch.Generator] = None):
    """(weights, status, reasoning_len): one float32 weight row per response (its length), the
    STATUS index of every row and its number of weighted reasoning tokens.

    The rows build_scored_segments keeps are scored on `model` in eval mode (flags restored) with
    OAR-G or OAR-P and Bi-Level reshaped; the weights of their first R tokens (the reasoning
    prefix) are the Bi-Level weights, every other weight is 1.
    """
    from oar_kernels import bilevel_reshape

    n = len(responses)
    config = getattr(model, "config", None)
    rows, segments, skipped = build_scored_segments(
        prompts, responses, tokenizer, extractor=resolve_extractor(settings.answer_extractor),
        conclude_text=settings.conclude_text, references=references,
        advantages=None if nonzero is None else [1.0 if z else 0.0 for z in nonzero],
        max_length=getattr(config, "max_position_embeddings", None), with_answer=settings.pfinal_mode != "last",
    )
    weights = [torch.ones(int(r.numel()), dtype=torch.float32) for r in responses]
    status = torch.zeros(n, dtype=torch.long)
    reasoning = torch.zeros(n, dtype=torch.long)
    for reason, left_out in skipped.items():
        status[left_out] = STATUS.index(reason)
    if not rows:
        return weights, status, reasoning
    scores, smask = score_segments(model, segments, settings.algo, settings.pfinal_mode, noise_std=settings.noise_std,
                                   score=settings.score, generator=generator, perturb_token=settings.perturb_token,
                                   max_batch_tokens=settings.max_batch_tokens)
    w = bilevel_reshape(scores.float().cpu(), smask.cpu(), tau=settings.tau, beta=settings.beta, floor=settings.floor)
    for j, b in enumerate(rows):
        R = segments[j].num_reasoning
        weights[b][:R] = w[j, :R]
        reasoning[b] = R
    return weights, status, reasoning


def oar_metrics(status: torch.Tensor, reasoning_len: torch.Tensor, weights: Sequence[torch.Tensor],
                seconds: Optional[float] = None) -> Dict[str, float]:
    """The metrics the OAR trainer adds to verl's logs, over one batch.

    oar/scored_frac: share of responses scored; oar/unscored/<reason>: how many were not (one
    count per SKIP_REASONS entry: their weights are 1); over the scored reasoning tokens:
    oar/weight_mean, _std, _min, _max and oar/suppressed_frac (share with w < 1); oar/time.
    """
    n = int(status.numel())
    out: Dict[str, float] = {"oar/scored_frac": float((status == 0).sum()) / max(n, 1)}
    for i, reason in enumerate(STATUS[1:], start=1):
        out[f"oar/unscored/{reason}"] = float((status == i).sum())
    picked = [w[: int(r)].double() for w, r, s in zip(weights, reasoning_len.tolist(), status.tolist()) if s == 0 and r]
    if picked:
        ws = torch.cat(picked)
        mean = float(ws.mean())
        out.update({"oar/weight_mean": mean, "oar/weight_std": math.sqrt(max(float((ws * ws).mean()) - mean * mean, 0.0)),
                    "oar/weight_min": float(ws.min()), "oar/weight_max": float(ws.max()),
                    "oar/suppressed_frac": float((ws < 1).double().mean())})
    if seconds is not None:
        out["oar/time"] = float(seconds)
    return out


def apply_oar_weights(advantages: torch.Tensor, weights) -> torch.Tensor:
    """verl's advantages times the OAR weights, token by token.

    advantages: [B, T] (padded) or nested [B, j]; weights: a list of B 1-D rows (each at most
    that row's length: missing positions count as 1), a [B, >=T] tensor or a nested tensor.
    Returns the advantages' layout and dtype.
    """
    w_rows = _rows_of(weights) if isinstance(weights, torch.Tensor) else list(weights)
    a_rows = _rows_of(advantages)
    if len(w_rows) != len(a_rows):
        raise ValueError(f"weights: expected {len(a_rows)} rows (one per response), got {len(w_rows)}")
    out = []
    for b, (a, w) in enumerate(zip(a_rows, w_rows)):
        full = torch.ones(a.shape[0], dtype=torch.float32, device=a.device)
        k = min(int(w.shape[0]), a.shape[0])
        if bool((w[k:] != 1).any()):
            raise ValueError(f"weights[{b}]: {int(w.shape[0])} weights for a response of {a.shape[0]} tokens")
        full[:k] = w[:k].to(device=a.device, dtype=torch.float32)
        out.append((a.float() * full).to(a.dtype))
    if advantages.is_nested:
        return torch.nested.as_nested_tensor(out, layout=torch.jagged)
    return torch.stack(out) if out else advantages.clone()


def _pad_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.ones(len(rows), width, dtype=torch.float32)
    for b, w in enumerate(rows):
        out[b, : w.shape[0]] = w[:width]
    return out


# --------------------------------------------------------------------------------------
# Full parameters under FSDP2
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def full_parameters(module):
    """importance.sharded.full_parameters, an FSDP1 actor refused with verl's key named."""
    if has_fsdp1_units(module):
        raise ValueError("actor_rollout_ref.actor.strategy: OAR scores with FSDP2's full parameters; "
                         "set actor_rollout_ref.actor.strategy=fsdp2 (FSDP1, 'fsdp', is not supported)")
    with sharded_full_parameters(module) as model:
        yield model


# --------------------------------------------------------------------------------------
# The worker side
# --------------------------------------------------------------------------------------


class OARScoringMixin:
    """The actor worker's OAR methods; mixed into verl's ActorRolloutRefWorker
    (:class:`OARActorRolloutRefWorker`) and usable with any verl ``Worker`` that provides the
    three hooks ``_oar_policy`` (a context manager yielding the causal LM, full parameters, eval
    mode), ``_oar_tokenizer`` and ``_oar_parallel`` ((rank, world) of the sequence-parallel group
    this rank shares its rows with, and its process group; (0, 1, None) without one).
    """

    _oar_settings: Optional[OARSettings] = None
    _oar_generator: Optional[torch.Generator] = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def oar_configure(self, settings: Mapping[str, Any]) -> None:
        """Stores the OAR settings (validated again here) on every worker."""
        self._oar_settings = OARSettings.from_config(dict(settings))
        self._oar_generator = None

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def oar_score(self, data):
        """OAR weights of this worker's share of the batch, on the policy before the update.

        data: a DataProto (as verl pads a batch) or a TensorDict (V1, read from TransferQueue).
        Returns the same kind: ``oar_weights`` ([B, T] padded with 1 for a DataProto, nested
        per response length for a TensorDict), ``oar_status`` [B] (index into STATUS: 0 scored,
        else why not) and ``oar_reasoning_len`` [B].
        """
        settings = self._oar_settings
        if settings is None:
            raise RuntimeError("oar_score: call oar_configure(settings) on the worker group first")
        prompts, responses, nonzero = batch_rows(data)
        references = None
        if settings.answer_source == "reference":
            references = batch_references(data, settings.reference_key)
        sp_rank, sp_world, sp_group = self._oar_parallel()
        mine = list(range(sp_rank, len(responses), sp_world))  # under sequence parallelism each row once
        tokenizer = self._oar_tokenizer()
        with self._oar_policy() as model:
            part = score_rows(
                model, tokenizer, [prompts[i] for i in mine], [responses[i] for i in mine], settings,
                None if nonzero is None else [nonzero[i] for i in mine],
                None if references is None else [references[i] for i in mine],
                generator=self._oar_noise_generator(model),
            )
        weights, status, reasoning = _merge_parts(len(responses), mine, part, sp_world, sp_group)
        unscorable = int((status == STATUS.index("no_answer")).sum())
        if unscorable:
            logger.warning("OAR: %d of %d responses have no final answer the extractor %s finds (where the "
                           "reasoning ends is unknown); their weights stay 1", unscorable, len(responses),
                           settings.answer_extractor)
        fields_out = {STATUS_KEY: status, REASONING_KEY: reasoning}
        if isinstance(data, DataProto):
            width = data.batch["responses"].shape[1]
            fields_out[WEIGHTS] = _pad_rows(weights, width)
            return DataProto.from_dict(tensors=fields_out)
        fields_out[WEIGHTS] = torch.nested.as_nested_tensor(weights, layout=torch.jagged)
        return TensorDict(fields_out, batch_size=[len(responses)])

    # -- hooks -----------------------------------------------------------------------------

    def _oar_noise_generator(self, model) -> torch.Generator:
        device = model.get_input_embeddings().weight.device
        if self._oar_generator is None or self._oar_generator.device != device:
            rank = int(getattr(self, "rank", 0) or 0)
            self._oar_generator = torch.Generator(device=device).manual_seed(noise_seed(self._oar_settings.seed, rank))
        return self._oar_generator

    def _oar_parallel(self):
        return 0, 1, None

    def _oar_tokenizer(self):  # pragma: no cover - provided by the concrete worker
        raise NotImplementedError

    def _oar_policy(self):  # pragma: no cover - provided by the concrete worker
        raise NotImplementedError


def _merge_parts(n: int, mine: List[int], part, world: int, group):
    """Rows scored on this rank (`mine`) plus, under sequence parallelism, the other ranks' rows
    (one all_gather_object over the group, the same call on every rank of it)."""
    parts = [(mine, part)]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (mine, part), group=group)
        parts = gathered
    weights: List[Optional[torch.Tensor]] = [None] * n
    status = torch.zeros(n, dtype=torch.long)
    reasoning = torch.zeros(n, dtype=torch.long)
    for idx, (w, s, r) in parts:
        for j, i in enumerate(idx):
            weights[i], status[i], reasoning[i] = w[j], s[j], r[j]
    return weights, status, reasoning


class OARActorRolloutRefWorker(OARScoringMixin, ActorRolloutRefWorker):
    """verl's ActorRolloutRefWorker plus :meth:`OARScoringMixin.oar_score` on its actor engine."""

    def _oar_engine(self):
        actor = getattr(self, "actor", None)
        if actor is None:
            raise RuntimeError(f"oar_score: this worker (role {self.role!r}) has no actor model")
        return actor.engine

    def _oar_tokenizer(self):
        self._oar_engine()  # a clear error on a worker without the actor
        return self.actor.model_config.tokenizer

    def _oar_parallel(self):
        engine = self._oar_engine()
        mesh = getattr(engine, "ulysses_device_mesh", None)
        if mesh is None:
            return 0, 1, None
        sp = mesh["sp"]
        return sp.get_local_rank(), sp.size(), sp.get_group()

    @contextlib.contextmanager
    def _oar_policy(self):
        from verl.utils.ulysses import get_ulysses_sequence_parallel_group, set_ulysses_sequence_parallel_group

        engine = self._oar_engine()
        with engine.eval_mode():  # parameters loaded back if offloaded; module.eval()
            previous = get_ulysses_sequence_parallel_group()
            set_ulysses_sequence_parallel_group(None)  # whole rows: no sequence sharding inside the scoring forwards
            try:
                with full_parameters(engine.module) as model:
                    yield model
            finally:
                set_ulysses_sequence_parallel_group(previous)


# --------------------------------------------------------------------------------------
# The driver side
# --------------------------------------------------------------------------------------


def settings_from_verl_config(config) -> OARSettings:
    """Checks a verl configuration for OAR (at trainer start) and returns its settings."""
    section = config.get(CONFIG_KEY, None) if hasattr(config, "get") else None
    settings = OARSettings.from_config(section)
    strategy = _select(config, "actor_rollout_ref.actor.strategy")
    if strategy not in (None, "fsdp2"):
        raise ValueError(f"actor_rollout_ref.actor.strategy: OAR scores on the actor's FSDP2 module; expected "
                         f"'fsdp2', got {strategy!r}")
    estimator = _select(config, "algorithm.adv_estimator")
    if estimator is not None and str(getattr(estimator, "value", estimator)) != "grpo":
        raise ValueError(f"algorithm.adv_estimator: OAR reshapes GRPO's per-sequence advantages; expected 'grpo', "
                         f"got {estimator!r}")
    return settings


def _select(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part, None)
    return node


@register_trainer(TRAINER_MODE)
class OARTrainer(PPOTrainerSync):
    """verl's synchronous V1 trainer with OAR's per-token advantages (module docstring).

    Selected with ``trainer.v1.trainer_mode=oar``; reads ``"sync"`` as its trainer_mode, so it
    takes the sync branch (and the ``trainer.v1.sync`` section) wherever verl asks.
    """

    def __init__(self, config):
        self.oar_settings = settings_from_verl_config(config)  # fails at start, naming the key
        super().__init__(config)

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value) -> None:  # PPOTrainer.__init__ assigns the configured name
        self.configured_trainer_mode = value

    def _init_resource_pool_mgr(self):
        import ray

        super()._init_resource_pool_mgr()
        for role in list(self.role_worker_mapping):
            if "actor" in str(role).lower():
                self.role_worker_mapping[role] = ray.remote(OARActorRolloutRefWorker)

    def on_init_end(self):
        self.actor_rollout_wg.oar_configure(self.oar_settings.to_dict())
        super().on_init_end()

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)  # GRPO, multi-turn sessions included
        import transfer_queue as tq

        start = time.perf_counter()
        needed = ["prompts", "responses", "advantages"]
        if self.oar_settings.answer_source == "reference":
            needed.append(self.oar_settings.reference_key.split(".")[0])
        request = type(batch)(keys=list(batch.keys), tags=list(batch.tags), partition_id=batch.partition_id,
                              fields=needed, extra_info=dict(batch.extra_info or {}))
        self.actor_rollout_wg.oar_score(request)  # each worker writes oar_* for its rows
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["advantages", WEIGHTS, STATUS_KEY, REASONING_KEY])
        weights = _rows_of(data[WEIGHTS])
        advantages = apply_oar_weights(data["advantages"], weights)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                        fields=TensorDict({"advantages": advantages}, batch_size=len(batch)))
        metrics.update(oar_metrics(data[STATUS_KEY].reshape(-1), data[REASONING_KEY].reshape(-1), weights,
                                   time.perf_counter() - start))
        return batch


__all__ = [
    "OARSettings",
    "OARScoringMixin",
    "OARActorRolloutRefWorker",
    "OARTrainer",
    "TRAINER_MODE",
    "CONFIG_KEY",
    "apply_oar_weights",
    "batch_rows",
    "batch_references",
    "check_verl_version",
    "full_parameters",
    "noise_seed",
    "oar_metrics",
    "score_rows",
    "settings_from_verl_config",
]
