"""Local stand-ins for the hub models and data sets that TRL's GRPO tests load.

TRL's tests ask the Hugging Face hub for tiny models ("trl-internal-testing/tiny-<Arch>") and a
small prompt data set ("trl-internal-testing/zen"). The hub is not reachable from CI, so
`build(root)` makes equivalents in-process:

* models: randomly initialised from a config of the same family (Qwen2, Qwen3, Qwen3-MoE,
  Llama, Mistral, Gemma2; causal LM and, where the tests use one, sequence classification with
  one label), written in the hub cache layout under root/hub (models--<org>--<name>/snapshots/
  <rev>/ plus refs/main), so that `from_pretrained("<hub id>")` resolves them unchanged with
  HF_HUB_OFFLINE=1 and HF_HUB_CACHE=root/hub;
* tokenizers: a byte-level BPE trained in-process on a generated corpus, with the family's
  special tokens and the family's chat template as installed TRL ships it
  (trl.chat_template_utils), so chat and tool-calling tests render their prompts;
* data sets: "zen" configs standard_prompt_only ({"prompt": str}) and
  conversational_prompt_only ({"prompt": [{"role": "user", "content": str}]}), splits train
  and test, saved with save_to_disk under root/datasets/<org>--<name>/<config>.

Anything not listed here (vision-language models, remote-code models, other families) is
not built: a test that needs it is reported as hub-only.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Dict, List, Tuple

ZEN = "trl-internal-testing/zen"
ZEN_CONFIGS = ("standard_prompt_only", "conversational_prompt_only")
BUILD_VERSION = "3"  # bump when what build() writes changes

# Each tokenizer family: (bos, eos, pad, special tokens, chat template name). The special tokens
# follow the trained BPE vocabulary (ids ~500-600): the real tokenizers' ids (Qwen2.5's eos 151645,
# which one TRL test hard-codes) would need their ~150k-row vocabularies, which make every
# generation step on CPU ~20x slower.
_QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
_QWEN3 = _QWEN + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
_LLAMA = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
          "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
_FAMILIES = {
    "qwen2_5": (None, "<|im_end|>", "<|endoftext|>", _QWEN, "qwen2_5_chat_template"),
    "qwen3": (None, "<|im_end|>", "<|endoftext|>", _QWEN3, "qwen3_chat_template"),
    "llama3_2": ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>", _LLAMA, "llama3_2_chat_template"),
}

# hub id -> (model_type, head, tokenizer family)
MODELS: Dict[str, Tuple[str, str, str]] = {
    "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": ("qwen2", "causal", "qwen2_5"),
    "trl-internal-testing/tiny-Qwen2ForSequenceClassification-2.5": ("qwen2", "seqcls", "qwen2_5"),
    "trl-internal-testing/tiny-Qwen3ForCausalLM": ("qwen3", "causal", "qwen3"),
    "trl-internal-testing/tiny-Qwen3ForSequenceClassification": ("qwen3", "seqcls", "qwen3"),
    "trl-internal-testing/tiny-Qwen3MoeForCausalLM": ("qwen3_moe", "causal", "qwen3"),
    "trl-internal-testing/tiny-LlamaForCausalLM-3.2": ("llama", "causal", "llama3_2"),
    "trl-internal-testing/tiny-LlamaForSequenceClassification-3.2": ("llama", "seqcls", "llama3_2"),
    "trl-internal-testing/tiny-MistralForCausalLM-0.2": ("mistral", "causal", "qwen2_5"),
    "trl-internal-testing/tiny-Gemma2ForCausalLM": ("gemma2", "causal", "qwen2_5"),
}

_WORDS = ("the sky is blue and the sea is deep while birds sing over hills where rivers run to "
          "quiet towns of stone and light some say the answer is near others count one two three four "
          "five six seven eight nine ten numbers add up as time goes by think step by step").split()


def _corpus(n: int = 600, seed: int = 0) -> List[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]
    lines += ["Multiply 3 by 4. The answer is 12.", '{"name": "multiply_tool", "arguments": {"a": 3, "b": 4}}',
              " ".join("0123456789+-*/=().,{}[]:\"'<>|_\n")]
    return lines


def _prompts(n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 7))).capitalize() for _ in range(n)]


def make_tokenizer(family: str, vocab_size: int = 600):
    """A byte-level BPE tokenizer trained in-process, with `family`'s special tokens and chat template."""
    import trl.chat_template_utils as ctu
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, pad, specials, template_name = _FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens(list(specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = getattr(ctu, template_name)
    return fast


def _rarely_stop(model, tokenizer) -> None:
    """Makes the random model's eos (and pad) token improbable, as in TRL's tiny hub models (whose
    ~150k-token vocabularies make it so): the LM head's logits get a spread of ~3 and the eos
    and pad rows give logit 0, so p(eos) is ~1e-5 per token and TRL's tests that expect
    truncated completions from a random model get them."""
    import torch

    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.normal_(0.0, 3.0 / model.config.hidden_size ** 0.5)
        for token_id in {tokenizer.eos_token_id, tokenizer.pad_token_id}:
            head.weight[token_id] = 0.0


def _config(model_type: str, tokenizer, head: str):
    from transformers import AutoConfig

    extra = {}
    if model_type == "qwen3_moe":
        extra = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, decoder_sparse_step=1)
    if model_type in ("qwen3", "qwen3_moe", "gemma2"):
        extra["head_dim"] = 8
    if head == "seqcls":
        extra["num_labels"] = 1
    return AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False, **extra,
    )


def _snapshot_dir(hub: str, repo_id: str, kind: str = "models") -> str:
    rev = hashlib.sha1(f"{repo_id}:{BUILD_VERSION}".encode()).hexdigest()
    base = os.path.join(hub, f"{kind}--{repo_id.replace('/', '--')}")
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    with open(os.path.join(base, "refs", "main"), "w") as f:
        f.write(rev)
    path = os.path.join(base, "snapshots", rev)
    os.makedirs(path, exist_ok=True)
    return path


def dataset_dir(root: str, repo_id: str, config: str) -> str:
    return os.path.join(root, "datasets", repo_id.replace("/", "--"), config)


def build(root: str) -> dict:
    """Builds every stand-in under `root` (skipped when already built); returns the manifest."""
    import torch
    from datasets import Dataset, DatasetDict
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    manifest_path = os.path.join(root, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("version") == BUILD_VERSION:
            return manifest
    hub = os.path.join(root, "hub")
    tokenizers = {family: make_tokenizer(family) for family in _FAMILIES}
    for repo_id, (model_type, head, family) in MODELS.items():
        tok = tokenizers[family]
        config = _config(model_type, tok, head)
        cls = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls.from_config(config)
            if head == "causal":
                _rarely_stop(model, tok)
        path = _snapshot_dir(hub, repo_id)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    for config_name in ZEN_CONFIGS:
        splits = {}
        for split, n, seed in (("train", 17, 1), ("test", 3, 2)):
            prompts = _prompts(n, seed)
            if config_name.startswith("conversational"):
                prompts = [[{"role": "user", "content": p}] for p in prompts]
            splits[split] = Dataset.from_dict({"prompt": prompts})
        DatasetDict(splits).save_to_disk(dataset_dir(root, ZEN, config_name))
    manifest = {"version": BUILD_VERSION, "models": sorted(MODELS), "datasets": {ZEN: list(ZEN_CONFIGS)}}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


if __name__ == "__main__":  # python scripts/trl_suite_fixtures.py OUT_DIR
    import sys

    print(json.dumps(build(sys.argv[1]), indent=1))
