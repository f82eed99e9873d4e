"""The default policy: a small Llama-architecture LM over characters, warm-started in process.

    model, tokenizer, path = load_default_policy()   # cached under default_cache_dir()

The first call trains it (a few minutes on 2 CPU cores, deterministic under the recipe's
seed) and saves it with save_pretrained; later calls load the folder at once.
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .policy import (CACHE_ENV, WarmStartRecipe, build_model, default_cache_dir, load_default_policy, sft_batch,
                     warm_start)
from .tokenizer import build_char_tokenizer

__all__ = ["CACHE_ENV", "WarmStartRecipe", "build_model", "build_char_tokenizer", "default_cache_dir",
           "load_default_policy", "sft_batch", "warm_start"]
