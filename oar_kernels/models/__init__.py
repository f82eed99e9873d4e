"""The default policy: a small Llama-architecture LM over characters, shipped with the package.

    model, tokenizer, path = load_default_policy()   # the weights shipped in default_policy/

The default recipe's weights ship with the package (scripts/warm_start_default_policy.py
rebuilds them); another WarmStartRecipe is warm-started on first use (minutes on 2 CPU cores,
deterministic under the recipe's seed and threads) and cached under default_cache_dir().
"""
from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .policy import (CACHE_ENV, SHIPPED_DIR, WarmStartRecipe, build_default_policy, build_model, default_cache_dir,
                     default_policy_path, ensure_default_policy, folder_recipe_key, load_default_policy, sft_batch,
                     warm_start)
from .tokenizer import build_char_tokenizer

__all__ = ["CACHE_ENV", "SHIPPED_DIR", "WarmStartRecipe", "build_default_policy", "build_model", "build_char_tokenizer",
           "default_cache_dir", "default_policy_path", "ensure_default_policy", "folder_recipe_key",
           "load_default_policy", "sft_batch", "warm_start"]
