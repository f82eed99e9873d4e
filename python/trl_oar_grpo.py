"""OAR inside TRL: GRPOTrainer -> OARGRPOTrainer, GRPOConfig -> OARConfig, nothing else.

Runs as is on a CPU with a tiny model and dataset built in process (no download):

    python python/trl_oar_grpo.py --steps 2

With your own model and data (local paths; nothing is fetched from a hub):

    python python/trl_oar_grpo.py --model /path/to/model_dir --dataset /path/to/train.jsonl \
        --prompt-field question --answer-field answer --algo oar-g --steps 200 \
        --num-generations 8 --prompts-per-step 4 --max-completion-length 512 --bf16

--dataset takes a .json/.jsonl/.csv/.parquet file or a folder written by
datasets.Dataset.save_to_disk. The reward is 1 when the extracted final answer equals the
answer column (0.2 for a wrong answer, 0 for none); use your own reward function in practice.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for tiny_setup

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local model folder (default: a tiny in-process model)")
    p.add_argument("--dataset", default=None,
                   help="local dataset file or save_to_disk folder (default: tiny arithmetic)")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--extractor", default=None,
                   help="answer extractor import path (default: tiny_setup.last_number for the tiny model, "
                        "oar_kernels.answers.extract_answer otherwise)")
    p.add_argument("--algo", default="oar-g", choices=["oar-g", "oar-p"])
    p.add_argument("--pfinal-mode", default=None, choices=["last", "answer_mean", "answer_joint"])
    p.add_argument("--tau", type=float, default=0.25)
    p.add_argument("--beta-oar", type=float, default=1.0, help="OAR boost strength (oar_beta)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--max-completion-length", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--loss-type", default="grpo", help="TRL loss_type (grpo, bnpo, dr_grpo, dapo, ...)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--use-liger", action="store_true", help="TRL's use_liger_kernel (Liger's layer kernels)")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_model_and_tokenizer(args):
    if args.model is None:
        from tiny_setup import char_tokenizer, tiny_model

        tokenizer = char_tokenizer()
        return tiny_model(tokenizer, seed=args.seed), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True, dtype=dtype)
    return model, tokenizer


def load_dataset(args):
    from datasets import Dataset, load_dataset, load_from_disk

    if args.dataset is None:
        from tiny_setup import arithmetic_problems

        rows = arithmetic_problems(8 * args.prompts_per_step, seed=args.seed)
        return Dataset.from_list([{"prompt": q, "answer": a} for q, a in rows])
    path = args.dataset
    if os.path.isdir(path):
        ds = load_from_disk(path)
    else:
        kind = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}[path.rsplit(".", 1)[-1]]
        ds = load_dataset(kind, data_files=path, split="train")
    ds = ds.rename_columns({k: v for k, v in ((args.prompt_field, "prompt"), (args.answer_field, "answer")) if k != v})
    return ds.select_columns(["prompt", "answer"])


def main(argv=None):
    args = parse_args(argv)
    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer, resolve_extractor

    model, tokenizer = load_model_and_tokenizer(args)
    dataset = load_dataset(args)
    extractor_path = args.extractor or ("tiny_setup.last_number" if args.model is None
                                        else "oar_kernels.answers.extract_answer")
    extractor = resolve_extractor(extractor_path)

    def answer_reward(completions, answer, **kwargs):
        from tiny_setup import answer_reward as score

        return [score(c, a, extractor) for c, a in zip(completions, answer)]

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="oar_trl_")
    config = OARConfig(
        output_dir=output_dir,
        # TRL's GRPO options, unchanged
        per_device_train_batch_size=args.num_generations * args.prompts_per_step,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.steps,
        learning_rate=args.lr,
        loss_type=args.loss_type,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        use_liger_kernel=args.use_liger,
        seed=args.seed,
        # OAR's options
        oar_algo=args.algo,
        oar_pfinal_mode=args.pfinal_mode,
        oar_tau=args.tau,
        oar_beta=args.beta_oar,
        oar_answer_extractor=extractor_path,
    )
    trainer = OARGRPOTrainer(
        model=model, reward_funcs=answer_reward, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "loss" in entry:
            keys = ("step", "loss", "reward", "oar/weight_mean", "oar/weight_std", "oar/suppressed_frac",
                    "oar/scored_frac", "oar/time")
            print(" ".join(f"{k}={entry[k]:.4g}" for k in keys if k in entry))
    if args.output_dir:
        trainer.save_model(args.output_dir)
    print("done")


if __name__ == "__main__":
    main()
