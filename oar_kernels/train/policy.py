"""The policy to train: where it comes from (checked before any work), and loading it."""
from __future__ import annotations

import os
import re
from typing import Callable

import torch

from .config import ConfigError, TrainConfig
from .distributed import Dist

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them at import)."""
    from huggingface_hub import constants

    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def check_model_source(name: str, timeout: float = 10.0) -> None:
    """Raises ConfigError (key 'model') unless `name` is 'default', a save_pretrained folder, a
    hub id in the local cache, or (online) a hub id the hub answers for within `timeout` s."""
    if name == "default":
        return
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ConfigError(f"model: {name!r} is a folder without config.json (expected a save_pretrained folder)")
        return
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1 or not _HUB_ID.match(name):
        raise ConfigError(f"model: no model folder {name!r} (and not a hub id of the form NAME or ORG/NAME)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if hub_offline():
        raise ConfigError(f"model: {name!r} is not a local folder and not in the hub cache, and the hub is off "
                          "(HF_HUB_OFFLINE): download it once online, or pass a local folder")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=timeout)
    except GatedRepoError:
        return  # exists; from_pretrained reports the missing access with its own message
    except RepositoryNotFoundError:
        raise ConfigError(f"model: no model {name!r} on the hub (or it is private; log in first)") from None
    except Exception as err:  # no network, DNS, timeout, proxy: fail now, not after a long retry
        raise ConfigError(f"model: cannot reach the hub to download {name!r} ({type(err).__name__}); check the "
                          "network, or set HF_HUB_OFFLINE=1 and use a cached or local model") from None


def load_policy(cfg: TrainConfig, dist: Dist, log: Callable):
    """(model, tokenizer, path) on CPU. The default policy ships in the package (a changed recipe
    is warm-started once, by rank 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, cfg.dtype)
    if cfg.model == "default":
        from ..default_job import ensure_default_policy, load_default_policy

        if dist.main:
            ensure_default_policy(cfg.cache_dir or None, progress=cfg.progress, log=log)
        dist.barrier()
        model, tok, path = load_default_policy(cfg.cache_dir or None, progress=False, log=log)
        return model.to(dtype), tok, path
    local = os.path.isdir(cfg.model) or hub_offline()
    tok = AutoTokenizer.from_pretrained(cfg.model, local_files_only=local)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype, local_files_only=local)
    return model, tok, cfg.model
