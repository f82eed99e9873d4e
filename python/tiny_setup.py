"""Shared by the examples: a tiny character-level tokenizer and causal LM built in process,
a tiny arithmetic prompt set, and an answer extractor / reward that even an untrained model
triggers (so OAR has something to score). Nothing here downloads anything.

Swap these for your real model, tokenizer and dataset (the examples take paths as flags).
"""
from __future__ import annotations

import random
import re
import string
from typing import List, Optional, Tuple

import torch

from oar_kernels.answers import AnswerSpan

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]


def char_tokenizer():
    """One token per printable character plus <pad>=0, <eos>=1, <bos>=2, <unk>=3."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def tiny_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM built from a config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def arithmetic_problems(n: int, seed: int = 0) -> List[Tuple[str, str]]:
    """(prompt, answer) pairs such as ("Q: 3+4=? A:", "7")."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        out.append((f"Q: {a}+{b}=? A:", str(a + b)))
    return out


_NUMBER = re.compile(r"-?\d+")


def last_number(text: str) -> Optional[AnswerSpan]:
    """The last integer in the text is the answer; everything before it is reasoning.

    A demo extractor for untrained models (random text contains digits often). For real
    models use oar_kernels.answers.extract_answer (\\boxed{}, ####, "The answer is").
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    return AnswerSpan(m.group(), m.start(), m.start(), m.end())


def answer_reward(text: str, gold: str, extractor=last_number) -> float:
    """1 for the right answer, 0.2 for a wrong one, 0 when no answer can be extracted."""
    span = extractor(text)
    if span is None:
        return 0.0
    return 1.0 if span.text.strip() == str(gold).strip() else 0.2
