"""Tiny, fully in-process models, tokenizer and segments for the tests.

Nothing here touches a model hub: the tokenizer is trained with the `tokenizers` library on
a generated corpus of arithmetic word problems, and the models are randomly initialised from
a config. Shared by every test file; the API is kept small and stable:

    make_tokenizer()                      -> PreTrainedTokenizerFast (cached per process)
    make_model(arch, vocab_size, ...)     -> Qwen2ForCausalLM / LlamaForCausalLM, eval mode
    make_segments(tokenizer, n, seed)     -> list of ragged Segments

Token ids of the trained tokenizer are stable within a process; tests must not hard-code
them (ask the tokenizer instead). Special tokens: <pad>, <eos>, <bos>.
"""
from __future__ import annotations

import functools
import random
from typing import List

import torch

from oar_kernels.segments import DEFAULT_CONCLUDE_TEXT, Segments

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"

_NAMES = ["Tom", "Anna", "Sam", "Lily", "Ben", "Maria", "Ravi", "Chen"]
_ITEMS = ["apples", "books", "coins", "marbles", "pencils", "cookies", "stamps", "cards"]
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _problem(rng: random.Random):
    """(question, worked solution, answer string) for one random arithmetic problem."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    op = rng.choice(["+", "-", "*", "/"])
    if op == "/":
        a = a * b  # exact division keeps answers integral
        ans = str(a // b)
        q = f"{name} has {a} {item} and shares them equally among {b} friends. How many {item} does each friend get?"
        steps = f"Each friend gets {a} / {b} = {ans} {item}."
    else:
        ans = str(_OPS[op](a, b))
        verb = {"+": "finds", "-": "gives away", "*": "has boxes of"}[op]
        q = f"{name} has {a} {item} and {verb} {b} more. How many {item} are there now?"
        steps = f"We compute {a} {op} {b} = {ans}. So there are {ans} {item}."
    if rng.random() < 0.2:
        ans = f"{ans}.5"  # decimals appear in answers too
    style = rng.randrange(3)
    if style == 0:
        sol = f"{steps}\nThe answer is {ans}."
    elif style == 1:
        sol = f"{steps}\n#### {ans}"
    else:
        sol = f"{steps} Therefore, the final answer is \\boxed{{{ans}}}."
    return q, sol, ans


def _corpus(n: int = 1500, seed: int = 1234) -> List[str]:
    rng = random.Random(seed)
    lines = [DEFAULT_CONCLUDE_TEXT, "Let us think step by step.", "The answer is", "####", "\\boxed{}"]
    for _ in range(n):
        q, sol, _ = _problem(rng)
        lines += [q, sol]
    # Every digit and operator on its own, so any number can be spelled.
    lines += [" ".join("0123456789+-*/=().,{}\\$")]
    return lines


@functools.lru_cache(maxsize=None)
def make_tokenizer(vocab_size: int = 512):
    """A byte-level BPE PreTrainedTokenizerFast trained in-process (cached per process).

    Byte-level pre-tokenization and decoding make decode(encode(text)) == text exactly, which
    the segment tests rely on. Special tokens <pad>, <eos>, <bos> get ids 0, 1, 2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=BOS, clean_up_tokenization_spaces=False
    )


def make_model(
    arch: str = "qwen2",
    vocab_size: int = 512,
    num_layers: int = 2,
    hidden_size: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    max_position_embeddings: int = 256,
    exact: bool = False,
):
    """A randomly initialised causal LM ("qwen2" or "llama") in eval mode.

    exact=False: the stock transformers model with eager attention. Note that its RMSNorm and
    eager softmax compute in float32 whatever the model dtype, so even a float64 model is only
    float32-accurate as a function of its input. exact=True (meant with float64) swaps in
    sdpa attention and an RMSNorm that stays in the model dtype, making the whole forward
    float64-accurate (finite differences, 1e-12 comparisons); the rotary tables stay float32
    but depend on positions only.

    pad/eos/bos ids in its config are those of make_tokenizer() (0/1/2) when they fit the
    vocabulary. Weights depend only on `seed` (the global RNG is left untouched). Initial
    weights use std 0.2 instead of 0.02 so that a 2-layer random model has peaked enough
    output distributions for importance scores to differ clearly from position to position.
    Eager attention: works in float64 and is the plainest implementation.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    if arch not in classes:
        raise ValueError(f"arch: expected one of {sorted(classes)}, got {arch!r}")
    config_cls, model_cls = classes[arch]
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=0 if vocab_size > 0 else None,
        eos_token_id=1 if vocab_size > 1 else None,
        bos_token_id=2 if vocab_size > 2 else None,
    )
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model = model.to(dtype).eval()
    if exact:
        model.set_attn_implementation("sdpa")
        for name, module in list(model.named_modules()):
            if type(module).__name__.endswith("RMSNorm"):
                model.set_submodule(name, _RMSNormInDtype(module.weight, module.variance_epsilon))
    return model


class _RMSNormInDtype(torch.nn.Module):
    """RMSNorm computed in the input's dtype (transformers' upcasts to float32 and back)."""

    def __init__(self, weight: torch.nn.Parameter, eps: float):
        super().__init__()
        self.weight = weight  # the same Parameter: state_dict keys are unchanged
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


# Conclude texts of different lengths, so that ragged batches differ in that segment too.
_CONCLUDES = [DEFAULT_CONCLUDE_TEXT, "\nSo the answer is ", " Answer: ", "\n"]


def make_segments(
    tokenizer,
    n: int,
    seed: int = 0,
    max_prompt: int = 10,
    max_reasoning: int = 14,
) -> List[Segments]:
    """n ragged Segments built from generated problems (deterministic in `seed`).

    Prompt lengths 2..max_prompt, reasoning 1..max_reasoning, conclude 1..8 tokens (one of
    four texts), answer 1..3 tokens; every third response (i % 3 == 2) has an empty answer
    (answer_text None), as when no answer could be extracted. Reasoning is never empty here:
    tests of empty reasoning build their own Segments.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q, sol, ans = _problem(rng)
        prompt = tokenizer.encode(q, add_special_tokens=False)[: rng.randint(2, max_prompt)]
        reasoning = tokenizer.encode(sol, add_special_tokens=False)[: rng.randint(1, max_reasoning)]
        conclude = tokenizer.encode(rng.choice(_CONCLUDES), add_special_tokens=False)[:8]
        if i % 3 == 2:
            answer, text = [], None
        else:
            answer = tokenizer.encode(ans, add_special_tokens=False)[: rng.randint(1, 3)]
            text = tokenizer.decode(answer)
        out.append(Segments(prompt, reasoning, conclude, answer, answer_text=text))
    return out


def save_warm_tiny_policy(path: str) -> str:
    """A 2-layer, width-32 character LM warm-started for a few seconds, saved (with its
    tokenizer) to `path`: it already writes "... The answer is N." often enough for OAR to
    have answers to score. Used by the trainer's end-to-end and multi-process tests."""
    from oar_kernels.data import load_task
    from oar_kernels.default_job import WarmStartRecipe, build_char_tokenizer, build_model, warm_start

    recipe = WarmStartRecipe(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=60,
                             batch_size=16, learning_rate=1e-2)
    tok = build_char_tokenizer()
    model = build_model(recipe, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    warm_start(model, tok, load_task("arithmetic:2-2"), recipe, "{question}\n", progress=False)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# The trainer tests' shared run settings: a tiny, deterministic (1 thread) OAR-G run on the
# two-operand arithmetic task with a format reward, so short runs have answers to score.
TRAINER_SETTINGS = dict(dataset="arithmetic:2-2", prompts_per_step=4, num_generations=4, max_completion_length=24,
                        eval_size=4, progress=False, reward_fn="oar_kernels.rewards:format_reward", learning_rate=1e-3,
                        html_samples=2, num_threads=1, algo="oar-g")


def trainer_settings(model: str, out, **over) -> dict:
    """TrainConfig values (for from_dict or as flags) of a tiny run of `model` into `out`."""
    return {"model": model, "output_dir": str(out), **TRAINER_SETTINGS, **over}


def metrics_rows(out, kind: str = "train") -> list:
    """The metrics.jsonl rows of one kind ("train" or "eval") of the run folder `out`."""
    import os

    from oar_kernels.train.report import read_jsonl

    return [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if r.get("kind") == kind]
