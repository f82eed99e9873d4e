"""What only the built-in default job (`python -m oar_kernels.train` with no --model / --dataset)
needs, kept apart from the library core:

    arithmetic.py       the generated task: ArithmeticTask, is_held_out, CONCLUDE_TEXT
    tokenizer.py        the character tokenizer: build_char_tokenizer
    policy.py           the small Llama-architecture policy and its warm-start trainer
    default_policy/     the default recipe's weights, shipped with the package
                        (rebuilt by scripts/warm_start_default_policy.py)

    model, tokenizer, path = load_default_policy()   # the shipped weights, loaded at once
    task = ArithmeticTask()                          # or oar_kernels.data.load_task("arithmetic")

Importing this package registers "arithmetic" and "arithmetic_plan" with oar_kernels.data (the
data layer does not import the default job).

Names resolve lazily: the task and the tokenizer builder load without transformers; the policy
names check the supported transformers range on first use.
"""
from .._lazy import lazy_getattr
from ..data import register_task
from .arithmetic import task_from_spec

for _name in ("arithmetic", "arithmetic_plan"):
    register_task(_name, task_from_spec)

# public name -> module that defines it (relative to this package)
_EXPORTS = {
    "ArithmeticTask": ".arithmetic",
    "CONCLUDE_TEXT": ".arithmetic",
    "HELD_OUT_BUCKETS": ".arithmetic",
    "is_held_out": ".arithmetic",
    "task_from_spec": ".arithmetic",
    "build_char_tokenizer": ".tokenizer",
    "CACHE_ENV": ".policy",
    "SHIPPED_DIR": ".policy",
    "WarmStartRecipe": ".policy",
    "build_default_policy": ".policy",
    "build_model": ".policy",
    "default_cache_dir": ".policy",
    "default_policy_path": ".policy",
    "ensure_default_policy": ".policy",
    "folder_recipe_key": ".policy",
    "load_default_policy": ".policy",
    "sft_batch": ".policy",
    "warm_start": ".policy",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__():
    return __all__
