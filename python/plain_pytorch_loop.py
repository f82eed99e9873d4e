"""OAR in a plain PyTorch GRPO loop: the drop-in ops, no trainer framework.

One step: sample G completions per prompt -> rewards -> oar.group_advantages ->
oar.build_segments + an importance estimator (OAR-G or OAR-P) on the current policy ->
oar.bilevel_reshape -> weights on the completion positions -> oar.fused_linear_grpo_loss on the
final hidden states and the LM head weight (no [B, T, V] logits) -> backward -> step.

    python python/plain_pytorch_loop.py --steps 3                    # tiny in-process model
    python python/plain_pytorch_loop.py --model /path/to/model_dir   # a local causal LM
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for tiny_setup

import torch

import oar_kernels as oar
from tiny_setup import answer_reward, arithmetic_problems, char_tokenizer, last_number, tiny_model


def importance(model, segments, algo: str, mode: str, generator):
    """OAR-G / OAR-P scores [n, R_max] and their mask, on the model as it is now."""
    if algo == "oar-g":  # gradient with respect to the input embeddings only
        return oar.gradient_importance(model, segments, mode=mode, generator=generator)
    with torch.no_grad():
        return oar.perturbation_importance(model, segments, mode=mode)


def completion_mask(completions: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row (everything when there is none)."""
    is_eos = completions == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), completions.shape[1] - 1)
    return torch.arange(completions.shape[1], device=completions.device)[None, :] <= first[:, None]


def oar_weights(model, tokenizer, prompt_ids, prompt_mask, completions, mask, advantages, args, generator):
    """[B, T] weights: Bi-Level weights on the reasoning prefix of scored completions, 1 elsewhere."""
    B, T = completions.shape
    weights = torch.ones(B, T, device=completions.device)
    rows, segments = [], []
    for b in range(B):
        n = int(mask[b].sum())
        if advantages[b] == 0 or n == 0:  # w * 0 = 0: nothing to reshape
            continue
        seg = oar.build_segments(prompt_ids[b][prompt_mask[b]], completions[b, :n], tokenizer, extractor=last_number)
        if seg.answer_text is not None and seg.num_reasoning > 0:
            rows.append(b)
            segments.append(seg)
    if not rows:
        return weights, 0, 0
    was_training = model.training
    model.eval()  # scores on the current policy, dropout off; no parameter gradient is computed
    scores, smask = importance(model, segments, args.algo, args.pfinal_mode, generator)
    model.train(was_training)
    w = oar.bilevel_reshape(scores, smask, tau=args.tau, beta=args.beta_oar)
    weights[torch.tensor(rows, device=weights.device), : w.shape[1]] = w.to(weights.device)
    return weights, len(rows), int(smask.sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local model folder (default: a tiny in-process model)")
    p.add_argument("--algo", default="oar-g", choices=["oar-g", "oar-p"])
    p.add_argument("--pfinal-mode", default=None, choices=["last", "answer_mean", "answer_joint"])
    p.add_argument("--tau", type=float, default=0.25)
    p.add_argument("--beta-oar", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.pfinal_mode = args.pfinal_mode or ("answer_mean" if args.algo == "oar-g" else "last")
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.model is None:
        tokenizer = char_tokenizer()
        model = tiny_model(tokenizer, seed=args.seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator(device=device).manual_seed(args.seed)  # OAR-G's noise
    problems = arithmetic_problems(64, seed=args.seed)
    G, P = args.num_generations, args.prompts_per_step

    for step in range(args.steps):
        batch = [problems[(step * P + i) % len(problems)] for i in range(P)]
        prompts = [q for q, _ in batch for _ in range(G)]
        golds = [a for _, a in batch for _ in range(G)]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"].bool()

        # 1. rollout with the current policy
        model.eval()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        completions = out[:, prompt_ids.shape[1]:]
        mask = completion_mask(completions, tokenizer.eos_token_id)
        texts = [tokenizer.decode(c[m], skip_special_tokens=True) for c, m in zip(completions, mask)]

        # 2. rewards and GRPO advantages
        rewards = torch.tensor([answer_reward(t, g) for t, g in zip(texts, golds)])
        advantages = oar.group_advantages(rewards, group_size=G).to(device)

        # 3. OAR weights on the current policy (before the update)
        weights, scored, n_reasoning = oar_weights(model, tokenizer, prompt_ids, prompt_mask, completions, mask,
                                      advantages, args, generator)

        # 4. loss from the final hidden states and the LM head weight: no [B, T, V] logits
        model.train()
        ids = torch.cat([prompt_ids, completions], dim=1)
        attn = torch.cat([prompt_mask, mask], dim=1).long()
        positions = (attn.cumsum(-1) - 1).clamp_min(0)
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=positions).last_hidden_state
        T, start = completions.shape[1], prompt_ids.shape[1] - 1  # hidden at t predicts token t + 1
        head = model.get_output_embeddings()
        loss, metrics = oar.fused_linear_grpo_loss(
            hidden[:, start : start + T], head.weight, completions, None, advantages, mask,
            weights=weights, bias=getattr(head, "bias", None), loss_type="grpo",
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

        suppressed = int((weights < 1).sum()) / max(n_reasoning, 1)  # share of scored reasoning tokens
        print(
            f"step={step + 1} loss={loss.item():.4g} reward={rewards.mean().item():.3f} scored={scored}/{len(texts)} "
            f"suppressed_frac={suppressed:.3f} w_min={weights.min().item():.3f} w_max={weights.max().item():.3f} "
            f"adv_abs_mean={metrics['adv_abs_mean'].item():.4g}"
        )
    print("done")


if __name__ == "__main__":
    main()
