"""`python -m oar_kernels.train`: GRPO / OAR-G / OAR-P end to end.

    from oar_kernels.train import TrainConfig, train
    summary = train(TrainConfig(algo="oar-g", max_steps=20))
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .config import ConfigError, TrainConfig, from_dict, parse_args, validate
from .loop import train

__all__ = ["ConfigError", "TrainConfig", "from_dict", "parse_args", "train", "validate"]
