"""A character-level tokenizer built in process with `tokenizers`, wrapped as a
transformers PreTrainedTokenizerFast (so save_pretrained / from_pretrained just work)."""
from __future__ import annotations

import string

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
# Printable ASCII (space included) and newline: enough for math prompts in English.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]


def build_char_tokenizer(vocab_size: int = 0):
    """The character tokenizer; with vocab_size > its own size, padded with placeholder
    tokens "<xN>" up to vocab_size (never produced by encoding; any id of a model with that
    vocabulary decodes), e.g. for a randomly initialised model of a real model's shape."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [PAD, EOS, BOS, UNK] + CHARS
    words += [f"<x{i}>" for i in range(max(0, vocab_size - len(words)))]
    vocab = {tok: i for i, tok in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
    )
