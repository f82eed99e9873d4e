"""`python -m oar_kernels.train`: GRPO / OAR-G / OAR-P end to end.

    from oar_kernels.train import TrainConfig, train
    summary = train(TrainConfig(algo="oar-g", max_steps=20))

Modules: config (TrainConfig, flags, config files), run_folder (new run / resume checks),
distributed (process group, DDP / FSDP2), policy (model source and loading), generation
(rollouts, rewards, advantages, evaluation), weights (OAR importance -> Bi-Level weights),
update (log-probs, loss, optimizer step), metrics, checkpoint, report (plots, weights page),
loop (the run).
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .config import ConfigError, TrainConfig, from_dict, parse_args, parse_args_and_given, validate
from .loop import train

__all__ = ["ConfigError", "TrainConfig", "from_dict", "parse_args", "parse_args_and_given", "train", "validate"]
