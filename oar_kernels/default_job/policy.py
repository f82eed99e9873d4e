"""The default policy: a small Llama-architecture causal LM over a character vocabulary,
warm-started on worked solutions of the arithmetic task. The default recipe's weights ship in
the package (default_policy/, about 2 MB, built by scripts/warm_start_default_policy.py), so the
default job starts at once and every machine starts from the same policy; another recipe is
warm-started in process on first use and cached as a transformers folder.

Half of the warm-start solutions of multi-step problems are shortcuts: they stop after the
first step and report its result ("17 + 8 = 25\nThe answer is 25."). The policy therefore
starts with a habit that a correctness reward punishes and that one early token decides (go
on with the next step, or answer now), while it does the steps themselves well: the
default RL run has something to learn that shows on held-out problems within a few dozen
steps, and OAR something to find (docs/training.md).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .._deps import require_transformers

require_transformers()  # one clear message for a missing or unsupported transformers

from .arithmetic import ArithmeticTask  # noqa: E402
from .tokenizer import build_char_tokenizer  # noqa: E402

CACHE_ENV = "OAR_KERNELS_CACHE"


def default_cache_dir() -> str:
    """$OAR_KERNELS_CACHE, else $XDG_CACHE_HOME/oar_kernels, else ~/.cache/oar_kernels."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "oar_kernels")


@dataclass(frozen=True)
class WarmStartRecipe:
    """Everything that decides the warm-started weights (its hash names the cache folder)."""

    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 256
    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seed: int = 0
    task: str = "arithmetic"
    shortcut_frac: float = 0.5  # share of multi-step solutions that stop after the first step
    num_threads: int = 1  # torch threads of the warm start: the weights depend on the summation order;
    # one thread also keeps it fast on a busy machine (idle OpenMP siblings spin at barriers)
    version: int = 2

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


def build_model(recipe: WarmStartRecipe, vocab_size: int, pad_id: int, eos_id: int, bos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads, max_position_embeddings=recipe.max_positions,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=bos_id, tie_word_embeddings=True,
        rope_theta=10000.0,
    )
    torch.manual_seed(recipe.seed)
    return LlamaForCausalLM(config)


def sft_batch(tokenizer, examples, prompt_template: str):
    """Right-padded (input_ids, attention_mask, labels) with the loss on solution + EOS only."""
    seqs, labels = [], []
    for ex in examples:
        p = tokenizer.encode(prompt_template.format(question=ex.question), add_special_tokens=False)
        s = tokenizer.encode(ex.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        seqs.append(p + s)
        labels.append([-100] * len(p) + s)
    L = max(map(len, seqs))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (L - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs])
    lab = torch.tensor([l + [-100] * (L - len(l)) for l in labels])
    return ids, att, lab


def warm_start(model, tokenizer, task, recipe: WarmStartRecipe, prompt_template: str, progress: bool = True):
    """Supervised training on worked solutions; deterministic under recipe.seed."""
    from tqdm.auto import tqdm

    if isinstance(task, ArithmeticTask) and recipe.shortcut_frac:
        task = dataclasses.replace(task, shortcut_frac=recipe.shortcut_frac)
    torch.manual_seed(recipe.seed)
    rng = random.Random(f"warm:{recipe.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step):
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(recipe.steps - recipe.warmup_steps, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    bar = tqdm(range(recipe.steps), desc="warm start", disable=not progress, dynamic_ncols=True)
    for step in bar:
        examples = [task.train_example(recipe.seed + 7919, rng.randrange(1 << 30)) for _ in range(recipe.batch_size)]
        ids, att, lab = sft_batch(tokenizer, examples, prompt_template)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model


SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_policy")
RECIPE_FILE = "warm_start_recipe.json"


def folder_recipe_key(path: str) -> Optional[str]:
    """The recipe key a policy folder was built with (its warm_start_recipe.json), or None."""
    try:
        with open(os.path.join(path, RECIPE_FILE)) as f:
            return json.load(f).get("key")
    except (OSError, ValueError):
        return None


def build_default_policy(out_dir: str, recipe: WarmStartRecipe = WarmStartRecipe(),
                         prompt_template: str = "{question}\n", progress: bool = True, log=print) -> str:
    """Warm-starts the default policy and writes it to out_dir (config, safetensors weights,
    tokenizer and warm_start_recipe.json with the recipe and its key), atomically: the folder
    appears complete or not at all. Runs with recipe.num_threads torch threads (restored after),
    since the float summation order, and so the weights, depend on the thread count."""
    from ..data import load_task

    t0 = time.time()
    log(f"[oar] building the default policy (warm start, {recipe.steps} steps, {recipe.num_threads} threads) "
        f"into {out_dir}")
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.num_threads)
    try:
        tokenizer = build_char_tokenizer()
        model = build_model(recipe, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id,
                            tokenizer.bos_token_id)
        warm_start(model, tokenizer, load_task(recipe.task), recipe, prompt_template, progress)
    finally:
        torch.set_num_threads(threads)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{os.path.abspath(out_dir)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, RECIPE_FILE), "w") as f:
        json.dump({"key": recipe.key(), "recipe": asdict(recipe), "prompt_template": prompt_template}, f, indent=2)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    try:
        os.replace(tmp, out_dir)  # atomic: a concurrent builder's folder wins, ours is dropped
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[oar] default policy ready in {time.time() - t0:.0f}s")
    return out_dir


def default_policy_path(cache_dir: Optional[str] = None, recipe: WarmStartRecipe = WarmStartRecipe()) -> str:
    """Where the policy of `recipe` lives: the folder shipped in the package when its recipe key
    matches (the default recipe), else a folder under the cache directory."""
    if folder_recipe_key(SHIPPED_DIR) == recipe.key():
        return SHIPPED_DIR
    return os.path.join(cache_dir or default_cache_dir(), f"default-policy-{recipe.key()}")


def ensure_default_policy(cache_dir: Optional[str] = None, recipe: WarmStartRecipe = WarmStartRecipe(),
                          prompt_template: str = "{question}\n", progress: bool = True, log=print) -> str:
    """The folder of `recipe`'s policy: the shipped one, or a cache folder warm-started (minutes on
    2 CPU cores) when it does not exist yet."""
    path = default_policy_path(cache_dir, recipe)
    if folder_recipe_key(path) != recipe.key():
        build_default_policy(path, recipe, prompt_template, progress, log)
    return path


def load_default_policy(cache_dir: Optional[str] = None, recipe: WarmStartRecipe = WarmStartRecipe(),
                        prompt_template: str = "{question}\n", progress: bool = True, log=print):
    """(model, tokenizer, path): the default recipe's policy ships with the package and loads at
    once; another recipe is warm-started into the cache on first use (ensure_default_policy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_default_policy(cache_dir, recipe, prompt_template, progress, log)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tokenizer, path
