"""The trainer's configuration: ONE dataclass, its CLI flags and its config file.

Flags come from `transformers.HfArgumentParser` (both spellings, `--oar_beta` and `--oar-beta`;
booleans as `--flag [true|false]` and `--no_flag`; choices listed in `--help`). `--config FILE`
reads a YAML or TOML file whose keys are the flags. Precedence: defaults < config file <
flags. Options TRL has carry TRL's names and meanings; the old names of this trainer still
work with a deprecation warning. Everything is validated before any work starts, and every
error message starts with the key it is about.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import typing
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Literal, Optional, Set, Tuple

from ..ops.fused_head_rule import AUTO_RULE
from ..segments import DEFAULT_CONCLUDE_TEXT


def _f(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # what to train
    algo: Literal["grpo", "oar-g", "oar-p"] = _f(
        "oar-g", "algorithm: GRPO, or GRPO with OAR weights from OAR-G (gradient) / OAR-P (perturbation)")
    model: str = _f("default", "policy: 'default' (the built-in small model, shipped in the package) or a "
                    "transformers model: local save_pretrained folder or hub id")
    cache_dir: str = _f("", "where a changed default-policy recipe is warm-started; empty: $OAR_KERNELS_CACHE "
                        "or ~/.cache/oar_kernels")
    dataset: str = _f("arithmetic", "data: 'arithmetic[:MIN-MAX]' or 'arithmetic_plan[:MIN-MAX]' (generated), "
                      "'gsm_symbolic[:SIZE]' or 'rg:NAME[:SIZE]' (reasoning-gym, generated offline), PATH.jsonl "
                      "(question/answer fields), 'hf:NAME[:CONFIG]', 'gsm8k' or 'math' (the last three need `datasets`)")
    eval_dataset: str = _f("", "held-out JSONL for file data sets; empty: a seeded slice of the training file")
    prompt_template: str = _f("{question}\n", "prompt format; {question} is replaced by the question")
    reward_fn: str = _f("oar_kernels.rewards:accuracy_reward",
                        "reward function import path 'module:function', called as f(prompts, completions, answers)")
    rollout: Literal["hf", "vllm"] = _f("hf", "generation backend: transformers generate (any device) or vLLM "
                                        "(GPU, optional extra)")
    device: str = _f("auto", "'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "parameter dtype of the policy")
    seed: int = _f(0, "seed of data order, sampling, OAR-G noise and initialisation")
    num_threads: int = _f(0, "CPU threads for torch; 0: the cores not already busy, per the load average, at least "
                          "1 (oversubscribed OpenMP threads slow small models down many times)")
    # batch and schedule
    max_steps: int = _f(20, "optimizer steps")
    prompts_per_step: int = _f(8, "prompts per generation batch, over all processes (each gets num_generations "
                               "responses)")
    num_generations: int = _f(8, "responses sampled per prompt (the GRPO group size), >= 2")
    num_iterations: int = _f(1, "optimizer steps on each generation batch (TRL's mu): log-probs of the sampling "
                             "policy are kept, the ratio is clipped from the second step on; OAR weights are "
                             "computed once per generation batch")
    gradient_accumulation_steps: int = _f(1, "micro-batches each process splits its step's responses into (exact: "
                                          "losses are normalised by the whole step's counts)")
    generation_batch_size: int = _f(0, "completions per generate call (a multiple of num_generations), each call "
                                    "seeded from (seed, generation, call); 0: all of a process's completions at "
                                    "once. Set it to compare runs with different process counts")
    max_completion_length: int = _f(48, "largest number of generated tokens per response")
    temperature: float = _f(0.7, "sampling temperature")
    top_p: float = _f(1.0, "nucleus sampling mass")
    mask_truncated_completions: bool = _f(False, "exclude responses that hit max_completion_length from the loss")
    # optimisation
    learning_rate: float = _f(2e-5, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear learning-rate warmup steps (not with lr_scheduler_type 'constant')")
    lr_scheduler_type: Literal["constant", "constant_with_warmup", "linear", "cosine"] = _f(
        "constant", "learning-rate schedule (transformers.get_scheduler)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    fused_lm_head: Literal["auto", "on", "off"] = _f(
        "auto", "policy log-probs with oar.fused_linear_logprob, never building the [tokens, vocab] logits: "
        f"'auto' for {AUTO_RULE}")
    epsilon: float = _f(0.2, "lower clip range of the ratio")
    epsilon_high: Optional[float] = _f(None, "upper clip range; None: the same as epsilon")
    beta: float = _f(0.0, "KL penalty coefficient against the initial policy (0: no reference model)")
    loss_type: Literal["grpo", "bnpo", "dapo", "dr_grpo"] = _f(
        "grpo", "loss aggregation: per-sequence mean (grpo), token mean (bnpo/dapo), sum / max length (dr_grpo)")
    scale_rewards: Literal["group", "batch", "none"] = _f(
        "group", "divide advantages by the group std, the batch std or nothing")
    # OAR
    tau: float = _f(0.25, "quantile level in [0, 1] between suppressed and boosted reasoning tokens")
    oar_beta: float = _f(1.0, "boost strength of the Bi-Level reshaping, >= 0")
    floor: float = _f(0.1, "smallest weight of a suppressed token (before rescaling), in [0, 1]")
    sum_to_len: bool = _f(True, "rescale each response's reasoning weights to mean 1")
    pfinal_mode: Literal["auto", "last", "answer_mean", "answer_joint", "last_after_answer"] = _f(
        "auto", "P_final: 'auto' (answer_mean for oar-g, last for oar-p), last, answer_mean, answer_joint, "
        "last_after_answer (the authors' OAR-G 'last': after the appended answer)")
    answer_source: Literal["response", "reference"] = _f(
        "response", "the answer P_final's answer modes condition on: 'response' (each response's own extracted "
        "answer; responses without one keep weight 1) or 'reference' (the data's answer, as the authors' code; "
        "every response is scored)")
    noise_std: float = _f(1e-3, "OAR-G: std of the Gaussian noise on reasoning embeddings")
    oarg_step: Literal["auto", "one-forward", "separate"] = _f(
        "auto", "OAR-G: 'one-forward' (importance.OARGStep: the update's own forward also yields the saliency; "
        "single process), 'separate' (gradient_importance before the update), 'auto' (one-forward in a single "
        "process, separate under torchrun)")
    saliency: Literal["grad_x_input", "grad_norm"] = _f("grad_x_input", "OAR-G score: |<dJ/de, e>| or ||dJ/de||")
    conclude_text: str = _f("auto", "text appended after the reasoning to ask for the final answer; 'auto': the "
                            "built-in task's own 'The answer is ' (its responses end in 'The answer is N.', so "
                            f"the scoring sequence is the response itself), else {DEFAULT_CONCLUDE_TEXT!r}")
    perturb_token: Optional[int] = _f(None, "OAR-P: token id that replaces each reasoning token; None: the model "
                                      "config's pad_token_id, else its eos_token_id")
    max_batch_tokens: int = _f(8192, "OAR-P: tokens per scoring forward")
    # evaluation, logging, checkpoints
    output_dir: str = _f("", "run folder; empty: runs/<algo>-seed<seed>")
    overwrite_output_dir: bool = _f(False, "start a new run in an output_dir that already holds one (its outputs "
                                    "are deleted); without it a non-empty output_dir is an error")
    resume_from_checkpoint: Optional[str] = _f(
        None, "continue a run: 'last' (or true) for the last checkpoint in output_dir, or a checkpoint file; the "
        "run's saved configuration is restored (model, optimizer, scheduler, RNG, data position)")
    eval_size: int = _f(500, "held-out problems evaluated (greedy) before and after training")
    eval_steps: int = _f(0, "also evaluate every N steps (0: only before and after)")
    save_steps: int = _f(10, "checkpoint every N steps (0: only at the end and on Ctrl-C)")
    save_total_limit: int = _f(2, "checkpoints kept in output_dir/checkpoints")
    html_samples: int = _f(4, "responses shown in weights.html (tokens coloured by OAR weight)")
    progress: bool = _f(True, "show progress bars")
    fsdp: bool = _f(False, "under torchrun: shard the model with FSDP2 instead of replicating it with DDP "
                    "(experimental; OAR importance scoring gathers the full model on each process)")

    # -- derived -------------------------------------------------------------------------
    def resolved_pfinal_mode(self) -> str:
        if self.pfinal_mode != "auto":
            return self.pfinal_mode
        return "last" if self.algo == "oar-p" else "answer_mean"

    def resolved_conclude_text(self) -> str:
        if self.conclude_text != "auto":
            return self.conclude_text
        if self.dataset.split(":", 1)[0] == "arithmetic":
            from ..default_job import CONCLUDE_TEXT

            return CONCLUDE_TEXT
        return DEFAULT_CONCLUDE_TEXT

    def resolved_output_dir(self) -> str:
        return self.output_dir or os.path.join("runs", f"{self.algo}-seed{self.seed}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key."""


# Old names of this trainer -> TRL's names (the old boolean `resume` is a value _coerce takes).
RENAMED = {"lr_scheduler": "lr_scheduler_type", "save_every": "save_steps", "eval_every": "eval_steps",
           "keep_checkpoints": "save_total_limit", "resume": "resume_from_checkpoint"}
# Keys a resumed run may change (a notice is logged); any other differing key is an error.
MUTABLE_ON_RESUME = frozenset({
    "max_steps", "save_steps", "eval_steps", "save_total_limit", "html_samples", "progress", "num_threads", "device",
    "cache_dir", "max_batch_tokens", "resume_from_checkpoint", "overwrite_output_dir"})

_HINTS = typing.get_type_hints(TrainConfig)
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


_BOOL_WORDS = ("true", "false", "yes", "no", "1", "0")


def _truthy(v) -> bool:
    return v is True or str(v).lower() in ("true", "1", "yes", "on", "last")


def _base_type(name: str):
    """(python type, allowed values or None, optional?) of a field."""
    t = _HINTS[name]
    args = typing.get_args(t)
    optional = type(None) in args
    if optional:
        t = next(a for a in args if a is not type(None))
    if typing.get_origin(t) is Literal:
        return str, typing.get_args(t), optional
    return t, None, optional


def _coerce(name: str, value):
    """Checks one value against its field; strings (flags, YAML's `1e-5`) are converted."""
    t, choices, optional = _base_type(name)
    if isinstance(value, str) and optional and value.lower() in ("none", "null", ""):
        value = None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: expected {t.__name__}, got None")
    if name == "scale_rewards" and isinstance(value, bool):  # TRL's old boolean form
        value = "group" if value else "none"
    if name == "resume_from_checkpoint" and (isinstance(value, bool) or str(value).lower() in _BOOL_WORDS):
        value = "last" if _truthy(value) else None  # TRL takes a bool too: true = the last checkpoint
        if value is None:
            return None
    if isinstance(value, str) and t is not str:
        try:
            if t is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = value.lower() in ("true", "1", "yes")
            else:
                value = t(value)
        except ValueError:
            raise ConfigError(f"{name}: expected {t.__name__}, got {value!r}") from None
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, t) or (t is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {t.__name__}, got {type(value).__name__} {value!r}")
    if choices and value not in choices:
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raises ConfigError naming the first bad key."""
    for name in FIELD_NAMES:
        _coerce(name, getattr(cfg, name))

    def need(cond, key, msg):
        if not cond:
            raise ConfigError(f"{key}: {msg}, got {getattr(cfg, key)!r}")

    need(cfg.num_generations >= 2, "num_generations", "expected >= 2 (GRPO compares responses within a group)")
    for key in ("max_steps", "prompts_per_step", "num_iterations", "gradient_accumulation_steps",
                "max_completion_length", "max_batch_tokens", "save_total_limit"):
        need(getattr(cfg, key) >= 1, key, "expected >= 1")
    for key in ("num_threads", "generation_batch_size", "warmup_steps", "eval_size", "eval_steps", "save_steps",
                "html_samples", "seed"):
        need(getattr(cfg, key) >= 0, key, "expected >= 0")
    need(cfg.generation_batch_size % cfg.num_generations == 0, "generation_batch_size",
         f"expected a multiple of num_generations ({cfg.num_generations}): whole groups per generate call")
    need(not (cfg.lr_scheduler_type == "constant" and cfg.warmup_steps), "warmup_steps",
         "lr_scheduler_type 'constant' has no warmup; use 'constant_with_warmup'")
    need(0.0 <= cfg.tau <= 1.0, "tau", "expected a quantile level in [0, 1]")
    need(0.0 <= cfg.floor <= 1.0, "floor", "expected a value in [0, 1]")
    for key in ("oar_beta", "noise_std", "epsilon", "beta", "weight_decay", "max_grad_norm"):
        need(getattr(cfg, key) >= 0, key, "expected >= 0")
    need(cfg.learning_rate > 0, "learning_rate", "expected > 0")
    need(cfg.temperature > 0, "temperature", "expected > 0")
    need(0 < cfg.top_p <= 1, "top_p", "expected a value in (0, 1]")
    need(cfg.epsilon_high is None or cfg.epsilon_high >= 0, "epsilon_high", "expected >= 0")
    need(cfg.perturb_token is None or cfg.perturb_token >= 0, "perturb_token", "expected a token id >= 0")
    need("{question}" in cfg.prompt_template, "prompt_template", "expected a template containing {question}")
    need(bool(cfg.model), "model", "expected a model name or path")
    need(bool(cfg.dataset), "dataset", "expected a data set spec")
    need(cfg.resume_from_checkpoint is None or bool(cfg.resume_from_checkpoint), "resume_from_checkpoint",
         "expected 'last' or a checkpoint file")
    if cfg.algo == "oar-g" and cfg.noise_std == 0 and cfg.resolved_pfinal_mode() != "answer_joint":
        raise ConfigError("noise_std: must be > 0 for OAR-G with a KL objective (the gradient is zero at zero "
                          "noise); use pfinal_mode=answer_joint for noise-free scores")
    if cfg.fsdp and cfg.rollout == "vllm":
        raise ConfigError("fsdp: the vLLM rollout is single-process; use rollout=hf with fsdp")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    return cfg


def _unknown_key(key: str, what: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELD_NAMES + tuple(RENAMED), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"{key}: unknown {what}{hint}")


def _renamed(key: str, value, where: str):
    """(new key, value) for an old key, with a deprecation warning; other keys unchanged."""
    if key not in RENAMED:
        return key, value
    new = RENAMED[key]
    warnings.warn(f"{key} is deprecated ({where}); use {new} (TRL's name)", FutureWarning, stacklevel=3)
    return new, value


def from_dict(data: Dict[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """A validated config from `base` (default: defaults) updated with `data` (dashes or
    underscores; old names accepted with a deprecation warning)."""
    values = dataclasses.asdict(base or TrainConfig())
    for key, value in data.items():
        k, value = _renamed(str(key).replace("-", "_"), value, "config key")
        if k not in values:
            raise _unknown_key(str(key), "config key")
        values[k] = _coerce(k, value)
    return validate(TrainConfig(**values))


def load_config_file(path: str) -> Dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) file of flat key: value pairs (JSON works as YAML)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config: no such file {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser as a package (setup.py installs it there)
            import tomli as tomllib

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config: cannot parse {path!r}: {err}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: cannot parse {path!r}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys to values in {path!r}")
    return data


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; each option's default once (not on the `--no_x` complements)."""

    def _get_help_string(self, action):
        if isinstance(action, argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def _parser_class():
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # "argument --tau: invalid float value: 'x'" -> "tau: invalid ..."
            head, _, rest = message.partition(": ")
            if head.startswith("argument --"):
                key = head[len("argument --"):].split("/")[0].replace("-", "_")
                raise ConfigError(f"{key}: {rest}")
            raise ConfigError(f"arguments: {message}")

    return Parser


def build_parser(description: str = "", suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """HfArgumentParser over TrainConfig (+ --config). suppress_defaults: a namespace holds only
    the options given (to tell which keys the user set)."""
    parser = _parser_class()(TrainConfig, prog="python -m oar_kernels.train", description=description,
                             formatter_class=_HelpFormatter)
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML or TOML file whose keys are the options below (flags override it)")
    for action in parser._actions:
        if action.dest in _HINTS and _base_type(action.dest)[2]:  # Optional fields: 'none' on the command line
            action.type = (lambda t: (lambda s: None if s.lower() in ("none", "null") else t(s)))(action.type)
        if suppress_defaults:
            action.default = argparse.SUPPRESS
    return parser


def _rename_flags(argv: List[str]) -> List[str]:
    """Old flag names -> TRL's (`--resume` -> `--resume_from_checkpoint last`), with a warning."""
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if key == "no_resume":  # the old boolean's off switch: a new run, as without it
            _renamed("resume", False, "flag --no_resume")
            continue
        if key in RENAMED:
            new, _ = _renamed(key, None, f"flag --{name}")
            out += [f"--{new}", "last"] if key == "resume" and not eq else [f"--{new}" + (eq + value)]
        else:
            out.append(arg)
    return out


def parse_args_and_given(argv: Optional[List[str]] = None, description: str = "") -> Tuple[TrainConfig, Set[str]]:
    """(validated config, the keys the user set in the config file or on the command line)."""
    argv = _rename_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(description)
    known, _ = parser.parse_known_args(argv)  # --help is handled here
    file_values: Dict[str, Any] = {}
    if known.config:
        for key, value in load_config_file(known.config).items():
            k, value = _renamed(str(key).replace("-", "_"), value, f"config key in {known.config}")
            if k not in _HINTS:
                raise _unknown_key(str(key), "config key")
            file_values[k] = _coerce(k, value)
    parser.set_defaults(**file_values)
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        raise _unknown_key(unknown[0].lstrip("-").split("=")[0], "flag")
    given_ns, _ = build_parser(description, suppress_defaults=True).parse_known_args(argv)
    given = (set(vars(given_ns)) | set(file_values)) - {"config"}
    values = {k: v for k, v in vars(ns).items() if k != "config"}
    return from_dict(values), given


def parse_args(argv: Optional[List[str]] = None, description: str = "") -> TrainConfig:
    """defaults < --config file < flags; validated. Raises ConfigError."""
    return parse_args_and_given(argv, description)[0]


def dump_config(cfg: TrainConfig, path: str) -> None:
    """Writes the resolved config as YAML (atomically); `--config path` reproduces the run (as a
    new run: how this one was started, resumed or overwritten is left out)."""
    import yaml

    data = dataclasses.replace(cfg, resume_from_checkpoint=None, overwrite_output_dir=False).to_dict()
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
