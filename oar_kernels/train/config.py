"""The trainer's configuration: ONE dataclass, its CLI flags and its config file.

Every field is a flag (`--learning_rate 1e-5`, booleans as `--flag/--no-flag`) and a key of
the YAML or TOML file given with `--config` (keys match the flags). Precedence: defaults <
config file < flags. Everything is validated before any work starts; errors name the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from ..data.arithmetic import CONCLUDE_TEXT as ARITHMETIC_CONCLUDE_TEXT
from ..segments import DEFAULT_CONCLUDE_TEXT


def _f(default, help, choices=None, **kw):
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


@dataclass
class TrainConfig:
    # what to train
    algo: str = _f("oar-g", "algorithm: GRPO, or GRPO with OAR weights from OAR-G (gradient) / OAR-P (perturbation)",
                   ("grpo", "oar-g", "oar-p"))
    model: str = _f("default", "policy: 'default' (the built-in small model, shipped in the package) "
                    "or a transformers model name / local folder")
    cache_dir: str = _f("", "where the default policy is cached (default: $OAR_KERNELS_CACHE or ~/.cache/oar_kernels)")
    dataset: str = _f("arithmetic", "data: 'arithmetic[:MIN-MAX]' or 'arithmetic_plan[:MIN-MAX]' (generated), "
                      "'gsm_symbolic[:SIZE]' or 'rg:NAME[:SIZE]' (reasoning-gym, generated offline), PATH.jsonl "
                      "(question/answer fields), 'hf:NAME[:CONFIG]', 'gsm8k' or 'math' (the last three need `datasets`)")
    eval_dataset: str = _f("", "held-out JSONL for file data sets (default: a seeded slice of the training file)")
    prompt_template: str = _f("{question}\n", "prompt format; {question} is replaced by the question")
    reward_fn: str = _f("oar_kernels.rewards:accuracy_reward",
                        "reward function import path 'module:function', called as f(prompts, completions, answers)")
    rollout: str = _f("hf", "generation backend: transformers generate (any device) or vLLM (GPU, optional extra)",
                      ("hf", "vllm"))
    device: str = _f("auto", "'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = _f("float32", "parameter dtype of the policy", ("float32", "bfloat16", "float16"))
    seed: int = _f(0, "seed of data order, sampling, OAR-G noise and initialisation")
    num_threads: int = _f(0, "CPU threads for torch; 0: auto (the cores not already busy, per the load average, "
                          "at least 1: oversubscribed OpenMP threads slow small models down many times)")
    # batch and schedule
    max_steps: int = _f(20, "optimizer steps")
    prompts_per_step: int = _f(8, "prompts per optimizer step, over all processes (each gets num_generations responses)")
    num_generations: int = _f(8, "responses sampled per prompt (the GRPO group size), >= 2")
    gradient_accumulation_steps: int = _f(1, "micro-batches each process splits its step's responses into (exact: "
                                          "losses are normalised by the whole step's counts)")
    generation_batch_size: int = _f(0, "prompts per generate call, each call seeded from (seed, step, chunk); 0: all of "
                                    "a process's prompts at once. Set it to compare runs with different process counts")
    max_completion_length: int = _f(48, "largest number of generated tokens per response")
    temperature: float = _f(0.7, "sampling temperature")
    top_p: float = _f(1.0, "nucleus sampling mass")
    mask_truncated_completions: bool = _f(False, "exclude responses that hit max_completion_length from the loss")
    # optimisation (TRL's names)
    learning_rate: float = _f(2e-5, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear learning-rate warmup steps")
    lr_scheduler: str = _f("constant", "learning-rate schedule after warmup", ("constant", "linear", "cosine"))
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    fused_lm_head: str = _f("auto", "policy log-probs with oar.fused_linear_logprob, never building the [tokens, "
                            "vocab] logits: 'auto' for vocabularies >= 32768, 'on', 'off'", ("auto", "on", "off"))
    epsilon: float = _f(0.2, "lower clip range of the ratio")
    epsilon_high: Optional[float] = _f(None, "upper clip range (default: epsilon)")
    beta: float = _f(0.0, "KL penalty coefficient against the initial policy (0: no reference model)")
    loss_type: str = _f("grpo", "loss aggregation: per-sequence mean (grpo), token mean (bnpo/dapo), "
                        "sum / max length (dr_grpo)", ("grpo", "bnpo", "dapo", "dr_grpo"))
    scale_rewards: str = _f("group", "divide advantages by the group std, the batch std or nothing",
                            ("group", "batch", "none"))
    # OAR
    tau: float = _f(0.25, "quantile level in [0, 1] between suppressed and boosted reasoning tokens")
    oar_beta: float = _f(1.0, "boost strength of the Bi-Level reshaping, >= 0")
    floor: float = _f(0.1, "smallest weight of a suppressed token (before rescaling), in [0, 1]")
    sum_to_len: bool = _f(True, "rescale each response's reasoning weights to mean 1")
    pfinal_mode: str = _f("auto", "P_final: 'auto' (answer_mean for oar-g, last for oar-p), last, answer_mean, "
                          "answer_joint, last_after_answer (the authors' OAR-G 'last': after the appended answer)",
                          ("auto", "last", "answer_mean", "answer_joint", "last_after_answer"))
    answer_source: str = _f("response", "the answer P_final's answer modes condition on: 'response' (each "
                            "response's own extracted answer; responses without one keep weight 1) or 'reference' "
                            "(the data's answer, as the authors' code; every response is scored)",
                            ("response", "reference"))
    noise_std: float = _f(1e-3, "OAR-G: std of the Gaussian noise on reasoning embeddings")
    oarg_step: str = _f("auto", "OAR-G: 'one-forward' (importance.OARGStep: the update's own forward also yields "
                        "the saliency; single process), 'separate' (gradient_importance before the update), 'auto' "
                        "(one-forward in a single process, separate under torchrun)", ("auto", "one-forward", "separate"))
    saliency: str = _f("grad_x_input", "OAR-G score: |<dJ/de, e>| or ||dJ/de||", ("grad_x_input", "grad_norm"))
    conclude_text: str = _f("auto", "text appended after the reasoning to ask for the final answer; 'auto': the "
                            "built-in task's own 'The answer is ' (its responses end in 'The answer is N.', so "
                            f"the scoring sequence is the response itself), else {DEFAULT_CONCLUDE_TEXT!r}")
    perturb_token: Optional[int] = _f(None, "OAR-P: token id that replaces each reasoning token (default: the model "
                                      "config's pad_token_id, else its eos_token_id)")
    max_batch_tokens: int = _f(8192, "OAR-P: tokens per scoring forward")
    # evaluation, logging, checkpoints
    output_dir: str = _f("", "run directory (default: runs/<algo>-seed<seed>)")
    resume: bool = _f(False, "continue from the last checkpoint in output_dir (optimizer, scheduler, RNG, data position)")
    eval_size: int = _f(500, "held-out problems evaluated (greedy) before and after training")
    eval_every: int = _f(0, "also evaluate every N steps (0: only before and after)")
    save_every: int = _f(10, "checkpoint every N steps (0: only at the end and on Ctrl-C)")
    keep_checkpoints: int = _f(2, "checkpoints kept in output_dir/checkpoints")
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
        return ARITHMETIC_CONCLUDE_TEXT if self.dataset.split(":", 1)[0] == "arithmetic" else DEFAULT_CONCLUDE_TEXT

    def resolved_output_dir(self) -> str:
        return self.output_dir or os.path.join("runs", f"{self.algo}-seed{self.seed}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key."""


_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(name):
    t = _HINTS[name]
    args = typing.get_args(t)
    optional = type(None) in args
    if optional:
        t = next(a for a in args if a is not type(None))
    return t, optional


def _coerce(name: str, value, from_text: bool):
    """Checks (and, for CLI text, converts) one value against its field type."""
    t, optional = _base_type(name)
    if value is None or (from_text and optional and str(value).lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{name}: expected {t.__name__}, got None")
    if from_text and isinstance(value, str):
        try:
            if t is bool:
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            return t(value)
        except ValueError:
            raise ConfigError(f"{name}: expected {t.__name__}, got {value!r}") from None
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t is str and name == "scale_rewards" and isinstance(value, bool):  # TRL's old boolean form
        return "group" if value else "none"
    if not isinstance(value, t) or (t is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {t.__name__}, got {type(value).__name__} {value!r}")
    return value


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raises ConfigError naming the first bad key."""
    for f in fields(cfg):
        _coerce(f.name, getattr(cfg, f.name), from_text=False)
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            raise ConfigError(f"{f.name}: expected one of {list(choices)}, got {getattr(cfg, f.name)!r}")

    def need(cond, key, msg):
        if not cond:
            raise ConfigError(f"{key}: {msg}, got {getattr(cfg, key)!r}")

    need(cfg.num_generations >= 2, "num_generations", "expected >= 2 (GRPO compares responses within a group)")
    for key in ("max_steps", "prompts_per_step", "gradient_accumulation_steps", "max_completion_length",
                "max_batch_tokens"):
        need(getattr(cfg, key) >= 1, key, "expected >= 1")
    for key in ("num_threads", "generation_batch_size", "warmup_steps", "eval_size", "eval_every", "save_every", "html_samples",
                "seed"):
        need(getattr(cfg, key) >= 0, key, "expected >= 0")
    need(cfg.keep_checkpoints >= 1, "keep_checkpoints", "expected >= 1")
    need(0.0 <= cfg.tau <= 1.0, "tau", "expected a quantile level in [0, 1]")
    need(0.0 <= cfg.floor <= 1.0, "floor", "expected a value in [0, 1]")
    need(cfg.oar_beta >= 0, "oar_beta", "expected >= 0")
    need(cfg.noise_std >= 0, "noise_std", "expected >= 0")
    need(cfg.learning_rate > 0, "learning_rate", "expected > 0")
    need(cfg.temperature > 0, "temperature", "expected > 0")
    need(0 < cfg.top_p <= 1, "top_p", "expected a value in (0, 1]")
    need(cfg.epsilon >= 0, "epsilon", "expected >= 0")
    need(cfg.epsilon_high is None or cfg.epsilon_high >= 0, "epsilon_high", "expected >= 0")
    need(cfg.beta >= 0, "beta", "expected >= 0")
    need(cfg.weight_decay >= 0, "weight_decay", "expected >= 0")
    need(cfg.max_grad_norm >= 0, "max_grad_norm", "expected >= 0")
    need(cfg.perturb_token is None or cfg.perturb_token >= 0, "perturb_token", "expected a token id >= 0")
    need("{question}" in cfg.prompt_template, "prompt_template", "expected a template containing {question}")
    need(bool(cfg.model), "model", "expected a model name or path")
    need(bool(cfg.dataset), "dataset", "expected a data set spec")
    if cfg.algo == "oar-g" and cfg.noise_std == 0 and cfg.resolved_pfinal_mode() != "answer_joint":
        raise ConfigError("noise_std: must be > 0 for OAR-G with a KL objective (the gradient is zero at zero "
                          "noise); use pfinal_mode=answer_joint for noise-free scores")
    if cfg.fsdp and cfg.rollout == "vllm":
        raise ConfigError("fsdp: the vLLM rollout is single-process; use rollout=hf with fsdp")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    return cfg


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


def from_dict(data: Dict[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """A validated config from `base` (default: defaults) updated with `data`."""
    known = {f.name for f in fields(TrainConfig)}
    values = dataclasses.asdict(base or TrainConfig())
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in known:
            close = [n for n in known if n.startswith(k[:4])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"{key}: unknown config key{hint}")
        values[k] = _coerce(k, value, from_text=False)
    return validate(TrainConfig(**values))


def build_parser(description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oar_kernels.train", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file whose keys are the flags below")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        t, optional = _base_type(f.name)
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata['help']} (default: {default!r})"
        flags = [f"--{f.name}"]
        if t is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, metavar=t.__name__.upper(), type=str,
                                choices=f.metadata.get("choices"), help=help_text)
    return parser


def parse_args(argv: Optional[List[str]] = None, description: str = "") -> TrainConfig:
    """defaults < --config file < flags; validated. Raises ConfigError."""
    ns = vars(build_parser(description).parse_args(argv))
    data = load_config_file(ns.pop("config")) if "config" in ns else {}
    cfg = from_dict(data)
    cli = {k: _coerce(k, v, from_text=True) for k, v in ns.items()}
    return from_dict(cli, base=cfg)


def dump_config(cfg: TrainConfig, path: str) -> None:
    """Writes the resolved config as YAML (atomically); `--config path` reproduces the run."""
    import yaml

    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
