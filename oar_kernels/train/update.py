"""The update: log-probs of the sampled responses under the policy, the weighted GRPO loss over
micro-batches, and one optimizer step.

`num_iterations` steps are taken on each generation batch (TRL's mu). The first one keeps the
policy's log-probs as the sampling policy's (`Rollout.old_logp`: the parameters have not moved
yet, so no extra forward), the later ones clip the ratio against them. With num_iterations=1
the ratio is 1 at every token, as in plain on-policy GRPO.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np
import torch

from .. import grpo_loss
from ..ops.fused_head_rule import fused_pays_off, plain_linear_head
from ..rollout import left_pad, right_pad
from .config import TrainConfig
from .distributed import no_sync
from .generation import Rollout
from .weights import noise_seed

if TYPE_CHECKING:
    from .loop import Run


def make_optimizer(model, cfg: TrainConfig):
    """(AdamW, transformers.get_scheduler(cfg.lr_scheduler_type)) over max_steps optimizer steps."""
    from transformers import get_scheduler

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.lr_scheduler_type, opt, num_warmup_steps=cfg.warmup_steps,
                          num_training_steps=cfg.max_steps)
    return opt, sched


def completion_logp(model, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0, lm_head=None):
    """log-probs [B, C] of the completion tokens (columns prompt_len..) under `model`, with the
    logits divided by the sampling temperature (the policy that produced the samples, as TRL).

    lm_head: the model's output Linear to take the log-probs with oar.fused_linear_logprob from
    the final hidden states, never building the [B, C, V] logits (the model is asked for one
    position of logits only); None: from the model's logits.
    """
    pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    if lm_head is not None:
        from ..ops.fused_linear_logprob import fused_linear_logprob

        out = model(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=pos,
                    logits_to_keep=1, output_hidden_states=True)
        h = out.hidden_states[-1][:, prompt_len - 1 : -1]  # after the final norm: the LM head's input
        B, C, D = h.shape
        targets = input_ids[:, prompt_len:].reshape(-1)
        logp = fused_linear_logprob(h.reshape(B * C, D), lm_head.weight, targets, bias=lm_head.bias,
                                    temperature=temperature)
        return logp.view(B, C)
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=pos).logits
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    targets = input_ids[:, prompt_len:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def fused_lm_head(model, cfg: TrainConfig, num_tokens: int = 0):
    """The output Linear when the update takes log-probs with the fused op (cfg.fused_lm_head),
    else None. auto: ops.fused_head_rule.AUTO_RULE, for models that also accept
    `logits_to_keep` (so the forward can skip the logits)."""
    if cfg.fused_lm_head == "off":
        return None
    head = plain_linear_head(model)
    if head is not None and "logits_to_keep" not in inspect.signature(model.forward).parameters:
        head = None
    if cfg.fused_lm_head == "on":
        if head is None:
            raise ValueError("fused_lm_head: 'on' needs a model whose logits are a plain nn.Linear of the last "
                             "hidden state (no final_logit_softcapping) and whose forward accepts logits_to_keep")
        return head
    return head if head is not None and fused_pays_off(head, num_tokens) else None


@dataclass(frozen=True)
class PaddedBatch:
    """The generation batch as model inputs: prompts left-padded, responses right-padded."""
    ids: torch.Tensor  # [B, Lp + C]
    attention: torch.Tensor  # [B, Lp + C]
    prompt_len: int  # Lp: the responses start at this column
    loss_mask: torch.Tensor  # [B, C] response tokens in the loss (without truncated ones when masked)


@dataclass(frozen=True)
class MicroBatch:
    """Rows `rows` of a PaddedBatch: one forward + backward of the update."""
    k: int  # its place among the step's micro-batches (the OAR-G noise of the one-forward path)
    rows: torch.Tensor  # indices into the generation batch
    ids: torch.Tensor
    attention: torch.Tensor
    loss_mask: torch.Tensor


def padded(batch: Rollout, pad_id: int, cfg: TrainConfig) -> PaddedBatch:
    p_ids, p_mask = left_pad([r.prompt_ids for r in batch.rows], pad_id)
    c_ids, c_mask = right_pad([r.response_ids for r in batch.rows], pad_id)
    loss_mask = c_mask
    if cfg.mask_truncated_completions:
        loss_mask = c_mask & ~torch.tensor([r.truncated for r in batch.rows]).unsqueeze(1)
    return PaddedBatch(torch.cat([p_ids, c_ids], dim=1), torch.cat([p_mask, c_mask], dim=1), p_ids.shape[1],
                       loss_mask)


def micro_batches(inputs: PaddedBatch, n: int) -> List[MicroBatch]:
    """The batch's rows in `n` contiguous micro-batches (empty ones when n > rows)."""
    out = []
    for k, idx in enumerate(np.array_split(np.arange(inputs.ids.shape[0]), n)):
        idx = torch.as_tensor(idx, dtype=torch.long)
        out.append(MicroBatch(k, idx, inputs.ids[idx], inputs.attention[idx], inputs.loss_mask[idx]))
    return out


def update(run: "Run", batch: Rollout, iteration: int) -> Dict[str, float]:
    """One optimizer step on `batch` (iteration 0 .. num_iterations - 1 of it); returns the
    step's loss (summed over micro-batches and processes), clip ratio (of the whole step's
    tokens), gradient norm (before clipping) and learning rate. On-policy (the first update on a
    batch) the loss is about 0 whenever each response's weights have mean 1 (its value is
    -mean_i A_i, and advantages are centred); its gradient is not.

    Writes to `batch`: old_logp (first iteration, when later ones need it) and, on the
    one-forward OAR-G path, the weights and reasoning mask of the rows its forward scores."""
    cfg, dist, device = run.cfg, run.dist, run.device
    inputs = padded(batch, run.tokenizer.pad_token_id, cfg)
    n_items = dist.sum(inputs.loss_mask.sum().double()).item()  # the whole step's tokens: exact accumulation
    if cfg.num_iterations > 1 and batch.old_logp is None:
        batch.old_logp = torch.zeros(inputs.loss_mask.shape)
    run.model.train()
    run.opt.zero_grad(set_to_none=True)
    head = fused_lm_head(run.model, cfg, inputs.ids.numel())
    ref_head = fused_lm_head(run.ref_model, cfg, inputs.ids.numel()) if cfg.beta > 0 else None
    oarg = _oarg_step(run, head is not None) if iteration == 0 and batch.segments is not None else None
    loss_sum, clipped = 0.0, 0.0
    parts = micro_batches(inputs, cfg.gradient_accumulation_steps)
    for mb in parts:
        with no_sync(run.wrapped, cfg, dist, sync=mb.k == len(parts) - 1):
            if len(mb.rows) == 0:  # more micro-batches than rows: keep the collectives in step
                sum(p.sum() * 0.0 for p in run.wrapped.parameters()).backward()
                continue
            if oarg is None:
                logp = completion_logp(run.wrapped, mb.ids.to(device), mb.attention.to(device), inputs.prompt_len,
                                       cfg.temperature, lm_head=head)
            else:  # the same forward yields these rows' OAR weights
                out = _oarg_forward(run, batch, mb, oarg)
                logp = out.logp
                batch.weights[mb.rows, : logp.shape[1]] = out.weights.detach().float().cpu()
                for i in mb.rows.tolist():
                    batch.reasoning[i, : batch.segments[i].num_reasoning] = True
            N = logp.shape[1]
            old = None
            if iteration > 0:
                old = batch.old_logp[mb.rows, :N].to(device)
            elif batch.old_logp is not None:  # the sampling policy's log-probs, for the later iterations
                batch.old_logp[mb.rows, :N] = logp.detach().float().cpu()
            ref = None
            if cfg.beta > 0:
                with torch.no_grad():
                    ref = completion_logp(run.ref_model, mb.ids.to(device), mb.attention.to(device),
                                          inputs.prompt_len, cfg.temperature, lm_head=ref_head)[:, :N]
            loss, n_clipped = _loss_backward(run, logp, old, ref, batch.advantages[mb.rows],
                                             batch.weights[mb.rows, :N], mb.loss_mask[:, :N], n_items)
        loss_sum += loss
        clipped += n_clipped
    grad_norm, lr = _optimizer_step(run)
    loss_sum, clipped = dist.sum(torch.tensor([loss_sum, clipped], dtype=torch.float64)).tolist()  # all processes
    return {"loss": loss_sum, "clip_ratio": clipped / max(n_items, 1.0), "grad_norm": grad_norm, "lr": lr}


def _oarg_step(run: "Run", fused_head: bool):
    from ..importance import OARGStep

    cfg = run.cfg
    return OARGStep(run.model, mode=cfg.resolved_pfinal_mode(), noise_std=cfg.noise_std, score=cfg.saliency,
                    tau=cfg.tau, beta=cfg.oar_beta, floor=cfg.floor, sum_to_len=cfg.sum_to_len,
                    fused_head=fused_head, temperature=cfg.temperature)


def _oarg_forward(run: "Run", batch: Rollout, mb: MicroBatch, oarg):
    """OARGOutput of the micro-batch's rows: their log-probs and OAR weights from one forward
    (same noise convention as the separate path: one generator per micro-batch, rows in order)."""
    rows = mb.rows.tolist()
    gen = torch.Generator().manual_seed(noise_seed(run.cfg, run.dist, batch.index, mb.k))
    return oarg([batch.segments[i] for i in rows],
                [torch.as_tensor(batch.rows[i].response_ids, dtype=torch.long) for i in rows], generator=gen)


def _loss_backward(run: "Run", logp, old, ref, advantages, weights, mask, n_items) -> Tuple[float, float]:
    """Backward of a micro-batch's share of the step's loss; (its loss, its clipped tokens)."""
    cfg, device = run.cfg, run.device
    loss, m = grpo_loss(logp, old, advantages.to(device), mask.to(device), weights=weights.to(device),
                        ref_logp=ref, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
                        loss_type=cfg.loss_type, max_completion_length=cfg.max_completion_length,
                        num_sequences=cfg.prompts_per_step * cfg.num_generations, num_items_in_batch=n_items)
    (loss * run.dist.world).backward()  # DDP / FSDP average gradients over processes
    return float(loss.detach()), float(m["clip_ratio"]) * float(mask.sum())


def _optimizer_step(run: "Run") -> Tuple[float, float]:
    """Clip, step, schedule; (gradient norm before clipping, learning rate of this step)."""
    params = list(run.wrapped.parameters())
    if run.cfg.max_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, run.cfg.max_grad_norm))
    else:
        grad_norm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
    lr = run.sched.get_last_lr()[0]
    run.opt.step()
    run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    if run.vllm is not None:
        run.vllm.sync_weights(run.model)
    return grad_norm, lr
