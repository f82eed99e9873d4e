"""Checks that run before any work (issue 22): everything a run needs is checked at start, before a
model loads or a problem is evaluated, and a missing piece is one ConfigError line (exit 2, nothing
written):

    device       a CUDA device asked for on a machine without one
    rollout      --rollout vllm without the vllm package
    reward_fn    the reward function imports and is callable
    dataset      the optional package of the data source (datasets, reasoning-gym); a hub data set
                 in the local cache, or (online) answered for by the hub within seconds
                 (HF_HUB_OFFLINE respected), the same mechanism as the --model check
    context      the longest templated training and held-out prompt + max_completion_length fit in
                 the model's context (its config's max_position_embeddings, read without loading
                 weights; prompts tokenized with the model's tokenizer)

`check_before_work` runs the first four and returns the loaded (task, held-out examples), so the
data is read once; `check_context` runs in build_run once the process group is up, before the
policy loads and before anything is written.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, List, Tuple

import torch

from .config import ConfigError, TrainConfig
from .policy import _HUB_ID, hub_offline

MAX_GENERATED_CHECKED = 20000  # training prompts checked of a generated (unlimited) task


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_device(cfg: TrainConfig) -> None:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {cfg.device!r} requested but CUDA is not available on this machine; "
                          "use --device cpu (or auto)")


def check_rollout(cfg: TrainConfig) -> None:
    if cfg.rollout == "vllm" and not _installed("vllm"):
        raise ConfigError("rollout: 'vllm' needs the vllm package, which is not installed "
                          "(pip install 'oar_kernels[vllm]'), or use --rollout hf")


def check_reward(cfg: TrainConfig) -> None:
    from ..rewards import load_reward_fn

    try:
        load_reward_fn(cfg.reward_fn)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _hub_dataset_cached(name: str) -> bool:
    """A hub data set in the hub cache (datasets--ORG--NAME) or in the `datasets` cache (ORG___NAME)."""
    from huggingface_hub import constants

    folders = [os.path.join(constants.HF_HUB_CACHE, "datasets--" + name.replace("/", "--"))]
    try:
        import datasets

        folders.append(os.path.join(datasets.config.HF_DATASETS_CACHE, name.replace("/", "___")))
    except Exception:  # pragma: no cover - datasets is checked before
        pass
    return any(os.path.isdir(f) and os.listdir(f) for f in folders)


def check_hub_dataset(name: str, timeout: float = 10.0) -> None:
    """Raises ConfigError (key 'dataset') unless `name` is a local path, a hub data set in the
    local cache, or (online) a data set the hub answers for within `timeout` s."""
    if os.path.exists(name):
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not _HUB_ID.match(name):
        raise ConfigError(f"dataset: no data set folder {name!r} (and not a hub id of the form NAME or ORG/NAME)")
    if _hub_dataset_cached(name):
        return
    if hub_offline():
        raise ConfigError(f"dataset: {name!r} is not a local folder and not in the hub cache, and the hub is off "
                          "(HF_HUB_OFFLINE): download it once online, or use a local JSONL file or --dataset "
                          "gsm_symbolic (generated offline)")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(name, timeout=timeout)
    except GatedRepoError:
        return
    except RepositoryNotFoundError:
        raise ConfigError(f"dataset: no data set {name!r} on the hub (or it is private; log in first)") from None
    except Exception as err:  # no network, DNS, timeout, proxy: fail now, not after a long retry
        raise ConfigError(f"dataset: cannot reach the hub to download {name!r} ({type(err).__name__}); check the "
                          "network, or set HF_HUB_OFFLINE=1 and use a cached or local data set") from None


def check_data_source(cfg: TrainConfig) -> None:
    """The optional package a data spec needs, and a hub data set's reachability."""
    from ..data.loaders import KNOWN
    from ..data.reasoning_gym import parse_spec

    spec = cfg.dataset
    try:
        rg = parse_spec(spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if rg is not None:
        if not _installed("reasoning_gym"):
            raise ConfigError(f"dataset: {spec!r} needs the `reasoning-gym` package, which is not installed "
                              "(pip install 'oar_kernels[reasoning]')")
        return
    hub = None
    if spec.startswith("hf:"):
        hub = spec[3:].split(":")[0]
    elif spec.lower() in KNOWN:
        hub = KNOWN[spec.lower()][0]
    if hub is None:
        return
    if not _installed("datasets"):
        raise ConfigError(f"dataset: {spec!r} needs the `datasets` package, which is not installed "
                          "(pip install 'oar_kernels[data]')")
    check_hub_dataset(hub)


def load_task_checked(cfg: TrainConfig, log) -> Tuple[Any, list]:
    """(task, held-out examples), a bad data set as one ConfigError line."""
    from .loop import load_data

    try:
        return load_data(cfg, log)
    except ImportError as err:
        raise ConfigError(f"dataset: {cfg.dataset!r}: {err}") from None


def _model_context_and_tokenizer(cfg: TrainConfig):
    """(max_position_embeddings or None, tokenizer, name): the model's config and tokenizer only."""
    from transformers import AutoConfig, AutoTokenizer

    if cfg.model == "default":
        from ..default_job.policy import WarmStartRecipe, default_policy_path
        from ..default_job.tokenizer import build_char_tokenizer

        path = default_policy_path(cfg.cache_dir or None)
        if os.path.isfile(os.path.join(path, "config.json")):
            return (getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None),
                    AutoTokenizer.from_pretrained(path), "the default policy")
        return WarmStartRecipe().max_positions, build_char_tokenizer(), "the default policy"
    local = os.path.isdir(cfg.model) or hub_offline()
    try:
        config = AutoConfig.from_pretrained(cfg.model, local_files_only=local)
        tok = AutoTokenizer.from_pretrained(cfg.model, local_files_only=local)
    except Exception as err:  # noqa: BLE001 - one line, whatever transformers raises
        raise ConfigError(f"model: cannot read the config and tokenizer of {cfg.model!r} "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    ctx = None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        ctx = getattr(config, key, None) or getattr(getattr(config, "text_config", None), key, None)
        if ctx:
            break
    return ctx, tok, repr(cfg.model)


def _training_questions(task, cfg: TrainConfig) -> List[str]:
    train = getattr(task, "train", None)
    if isinstance(train, list):
        return [e.question for e in train]
    n = min(cfg.max_steps * cfg.prompts_per_step, MAX_GENERATED_CHECKED)
    seen = {}
    for i in range(n):
        q = task.train_example(cfg.seed, i).question
        seen[q] = None
    return list(seen)


def check_context(cfg: TrainConfig, task, examples) -> None:
    """The longest templated prompt + max_completion_length within the model's context."""
    from ..data import format_prompt

    ctx, tok, what = _model_context_and_tokenizer(cfg)
    if not ctx:
        return
    longest, where = 0, "training"
    for kind, questions in (("training", _training_questions(task, cfg)), ("held-out", [e.question for e in examples])):
        if not questions:
            continue
        # one batched call: a fast tokenizer encodes the list in parallel
        ids = tok([format_prompt(q, cfg.prompt_template) for q in questions], add_special_tokens=False)["input_ids"]
        n = max(len(x) for x in ids)
        if n > longest:
            longest, where = n, kind
    need = longest + cfg.max_completion_length
    if need <= ctx:
        return
    room = ctx - longest
    smaller = (f"a smaller --max_completion_length (at most {room})" if room > 0
               else "a shorter --prompt_template or shorter problems")
    raise ConfigError(f"max_completion_length: the longest {where} prompt of {cfg.dataset!r} has {longest} tokens "
                      f"(--prompt_template applied), + max_completion_length {cfg.max_completion_length} = {need}, "
                      f"more than the context of {what} (max_position_embeddings={ctx}); use {smaller}, or a model "
                      "with a longer context (--model)")


def check_before_work(cfg: TrainConfig, log) -> Tuple[Any, list]:
    """Every check above but the context one; returns (task, held-out examples) for the run.
    check_context runs in build_run, after the process group is set up (a tokenizer loaded before
    init_process_group made torchrun workers hang at exit, 2 in 5 runs on CPU) and before the
    policy loads."""
    check_device(cfg)
    check_rollout(cfg)
    check_reward(cfg)
    check_data_source(cfg)
    return load_task_checked(cfg, log)
