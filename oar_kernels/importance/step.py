"""OAR-G in the training step: one policy forward serves the GRPO log-probs and the saliency.

    step = OARGStep(model, mode="answer_mean")
    out = step(segments, response_ids)           # forward (graph kept), saliency, weights
    loss, metrics = out.loss(advantages, old_logp=old_logp)   # oar.grpo_loss with out.weights
    loss.backward()                              # through the same graph
    optimizer.step()

How one forward serves both (docs/importance.md has the full argument):

* Policy rows are prompt + response, right-padded, plain causal attention: exactly the
  forward of a GRPO step, run through the decoder body with use_cache=True so that every
  layer's keys/values (graph attached) are kept. logp [B, N] comes from the LM head at the
  response positions.
* The scoring sequence prompt + reasoning + conclude (+ answer) shares its first P + R
  tokens with the policy row. Its remaining tokens (conclude, answer without its last token:
  a short "branch") run as a continuation of the same forward: a second, small decoder call
  with the cache = the policy's keys/values, an explicit 4-D mask that lets branch
  token j see policy positions < P + R only (and the branch causally) and position ids
  P + R + j. Gradients flow from the branch back into the policy forward's graph. A row whose
  response itself goes on with exactly the branch tokens needs none: its policy states are the
  branch's.
* The policy's input embeddings e go through the saliency probe. A partial backward
  torch.autograd.grad(z_branch, [e], grad_outputs=c, retain_graph=True) to the embeddings
  only (no parameter gradient) gives |<dJ/de_t, e_t>| / ||dJ/de_t|| at the reasoning tokens.
  c = dJ/dz is the cotangent of the objective at the branch logits z:
    - answer_joint: J = phi_clean - phi is first order; c is taken at the clean logits, so
      the scores are OAR-G's exactly at noise 0 (gradient_importance(noise_std=0)).
    - last / answer_mean (J = KL(P_clean || P_noisy), zero gradient at zero noise): the
      clean teacher comes free (the detached branch logits). kl_grad="exact" (default)
      runs the noisy forward over reasoning + conclude (+ answer) only, on the policy's
      prompt keys/values (detached; the prompt is never noised), with the clean reasoning
      embeddings under a second probe, and differentiates that small graph: OAR-G's
      gradient exactly. kl_grad="linearized" makes that forward no-grad and pulls
      c = dJ/dz at z_noisy back through the clean policy graph instead (one graph: less
      memory; a relative O(noise_std) away from the oracle).
* The weights (oar.bilevel_reshape of the scores) go into oar.grpo_loss, whose backward
  runs through the same graph. The branch does not enter the loss, so the parameter
  gradients equal those of a separate GRPO forward + backward with the same weights.

Scores are formed under the model's current mode (the step does not switch to eval): with
dropout on, teacher and student see the policy forward's dropout mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .._checks import check_choice, check_number
from ..segments import Segments
from ..ops.fused_head_rule import fused_pays_off, plain_linear_head
from ._common import (
    PFinalLayout,
    apply_head,
    check_mode,
    check_score,
    check_segments,
    decoder_and_head,
    draw_noise,
    hidden_of,
    input_embeddings,
    is_scored,
    make_row,
)
from . import _cache
from ._noisy import noisy_chunk_logits
from ._saliency import Saliency
from ._common import check_generator


@dataclass
class OARGOutput:
    """What one OAR-G training step's forward yields.

    logp:       [B, N] log-probs of the response tokens at the step's temperature (graph
                attached; N = longest response)
    mask:       [B, N] bool, True at real response tokens
    scores:     [B, R_max] float32 OAR-G saliency of the reasoning tokens
    score_mask: [B, R_max] bool (rows not scored are all False)
    weights:    [B, N] float32 OAR weights on the response positions (1 outside reasoning)
    """

    logp: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor
    score_mask: torch.Tensor
    weights: torch.Tensor

    def loss(self, advantages: torch.Tensor, old_logp: Optional[torch.Tensor] = None, **grpo_kwargs):
        """oar.grpo_loss(logp, old_logp, advantages, mask, weights=self.weights, **grpo_kwargs).

        Returns (loss, metrics); loss.backward() runs through the step's graph.
        """
        from ..ops.grpo_loss import grpo_loss

        return grpo_loss(self.logp, old_logp, advantages, self.mask, weights=self.weights, **grpo_kwargs)


def _reusable(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and _cache.available() and all(getattr(l, "keys", None) is not None for l in layers)


def _as_responses(response_ids, n: int) -> List[torch.Tensor]:
    if isinstance(response_ids, torch.Tensor):
        raise ValueError("response_ids: expected a list of 1-D token-id tensors (one per response)")
    if not isinstance(response_ids, (list, tuple)) or len(response_ids) != n:
        got = len(response_ids) if isinstance(response_ids, (list, tuple)) else type(response_ids).__name__
        raise ValueError(f"response_ids: expected a list of {n} 1-D token-id sequences, got {got}")
    out = []
    for b, r in enumerate(response_ids):
        t = torch.as_tensor(r).to(torch.long).cpu() if not isinstance(r, torch.Tensor) else r.to(torch.long).cpu()
        if t.dim() != 1:
            raise ValueError(f"response_ids[{b}]: expected a 1-D sequence, got shape {tuple(t.shape)}")
        out.append(t)
    return out


class OARGStep:
    """OAR-G for the training step of a GRPO trainer (module docstring).

    Args:
        model: a transformers causal LM, in the mode it trains in.
        mode: "last" | "answer_mean" | "answer_joint" (P_final; see docs/algorithm.md).
        noise_std: OAR-G noise of the KL modes (answer_joint uses none: first order).
        score: "grad_x_input" | "grad_norm".
        tau, beta, floor, sum_to_len: oar.bilevel_reshape's arguments.
        max_noisy_tokens: token budget per batch of the KL modes' noisy forward when the
            prompt's keys/values cannot be reused (fallback path).
        kl_grad: KL modes only. "exact" (default): a grad-enabled noisy forward of reasoning +
            conclude (+ answer) on the policy's prompt keys/values and a backward through that
            small graph: OAR-G's gradient exactly (equal to the oracle under the same draw),
            and fewer FLOPs than "linearized". "linearized": a no-grad noisy forward, its
            cotangent pulled back through the policy graph (one graph only, so the least
            memory); differs from the oracle by a relative O(noise_std).
        fused_head: the policy log-probs through oar.fused_linear_logprob instead of logits
            (None: automatically, by ops.fused_head_rule.AUTO_RULE: plain linear heads with
            vocabularies >= 32768, on CPU once the [tokens, V] logits would reach 1 GiB).
        temperature: the policy log-probs (logp, the loss's) are taken of logits / temperature,
            the sampling temperature, as a GRPO trainer does; P_final (the saliency) always
            uses the model's own logits, as the oracles do.
    """

    def __init__(
        self,
        model,
        mode: str = "answer_mean",
        noise_std: float = 1e-3,
        score: str = "grad_x_input",
        tau: float = 0.25,
        beta: float = 1.0,
        floor: float = 0.1,
        sum_to_len: bool = True,
        max_noisy_tokens: int = 16384,
        kl_grad: str = "exact",
        fused_head: Optional[bool] = None,
        temperature: float = 1.0,
    ):
        check_mode(mode)
        check_choice("kl_grad", kl_grad, ("exact", "linearized"))
        check_score(score)
        check_number("noise_std", noise_std, lo=0.0)
        check_number("max_noisy_tokens", max_noisy_tokens, lo=1, integer=True)
        self.model = model
        self.emb = input_embeddings(model)
        self.body, self.head = decoder_and_head(model)
        self.mode, self.noise_std, self.score = mode, float(noise_std), score
        self.reshape = dict(tau=tau, beta=beta, floor=floor, sum_to_len=sum_to_len)
        self.max_noisy_tokens = max_noisy_tokens
        self.kl_grad = kl_grad
        if fused_head is not None and not isinstance(fused_head, bool):
            raise ValueError(f"fused_head: expected None, True or False, got {fused_head!r}")
        if fused_head and plain_linear_head(model, self.head) is None:
            raise ValueError("fused_head: True needs a plain nn.Linear LM head without final_logit_softcapping")
        self.fused_head = fused_head
        check_number("temperature", temperature, lo=0.0)
        if temperature == 0:
            raise ValueError("temperature: expected > 0, got 0")
        self.temperature = float(temperature)

    # ------------------------------------------------------------------------------------
    def __call__(self, segments: Sequence[Segments], response_ids, generator: Optional[torch.Generator] = None) -> OARGOutput:
        """One policy forward with OAR-G saliency; see OARGOutput for the fields.

        Args:
            segments: B Segments; segments[b].prompt_ids is the policy prompt and
                segments[b].reasoning_ids a prefix of response_ids[b].
            response_ids: B 1-D token-id tensors, the sampled responses (EOS included or not).
            generator: torch.Generator for the KL modes' noise (None: torch's global RNG).
        """
        from ..ops.bilevel import bilevel_reshape

        segments = check_segments(segments)
        responses = _as_responses(response_ids, len(segments))
        check_generator(generator)
        model, mode = self.model, self.mode
        emb, body, head = self.emb, self.body, self.head
        device = emb.weight.device
        B = len(segments)
        vocab, dim = int(emb.weight.shape[0]), int(emb.weight.shape[1])
        max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        rows = {}
        for b, (seg, resp) in enumerate(zip(segments, responses)):
            R = seg.num_reasoning
            if resp.numel() < R or not torch.equal(resp[:R], seg.reasoning_ids):
                raise ValueError(f"response_ids[{b}]: segments[{b}].reasoning_ids is not a prefix of response {b}")
            if resp.numel() == 0:
                raise ValueError(f"response_ids[{b}]: response {b} is empty")
            if seg.prompt_ids.numel() == 0:  # the first response token needs a predicting position
                raise ValueError(f"segments[{b}]: the prompt of response {b} is empty")
            for what, seq in (("policy sequence", torch.cat([seg.prompt_ids, resp])), ("scoring sequence", seg.sequence(mode != "last"))):
                if max_len is not None and seq.numel() > max_len:
                    raise ValueError(
                        f"segments[{b}]: the {what} of response {b} has {seq.numel()} tokens, more than "
                        f"the model's context (max_position_embeddings={max_len})"
                    )
                if int(seq.max()) >= vocab:
                    raise ValueError(f"segments[{b}]: token id {int(seq.max())} of response {b} is outside the vocabulary of {vocab}")
            if is_scored(seg, mode):
                rows[b] = make_row(b, seg, mode)

        # ---- 1. policy forward (the GRPO forward), keys/values kept --------------------
        P = [int(s.prompt_ids.numel()) for s in segments]
        Nr = [int(r.numel()) for r in responses]
        T = max(p + n for p, n in zip(P, Nr))
        N = max(Nr)
        ids = torch.zeros((B, T), dtype=torch.long)
        for b in range(B):
            ids[b, : P[b] + Nr[b]] = torch.cat([segments[b].prompt_ids, responses[b]])
        ids = ids.to(device)
        e = emb(ids)  # [B, T, D], graph to the embedding weights
        # kl_grad="exact" differentiates its own small noisy graph, so the policy forward needs
        # no probe and its branch no graph; the other paths backpropagate through both.
        exact = bool(rows) and mode != "answer_joint" and self.kl_grad == "exact" and _cache.available()
        sal = None if exact else Saliency(e)
        from transformers import DynamicCache

        cache = DynamicCache()
        hidden = hidden_of(body(inputs_embeds=e if exact else sal.output, use_cache=True,
                                   **_cache.cache_kwargs(body, cache)))
        # response token j of row b sits at P_b + j and is predicted at P_b + j - 1
        pred = torch.tensor(P)[:, None] - 1 + torch.arange(N)[None, :]
        mask = torch.arange(N)[None, :] < torch.tensor(Nr)[:, None]
        pred = torch.where(mask, pred, 0).to(device)
        targets = torch.where(mask, ids.cpu().gather(1, (pred.cpu() + 1).clamp_max(T - 1)), 0).to(device)
        h_resp = hidden.gather(1, pred[:, :, None].expand(B, N, hidden.shape[-1]))
        if self._fused_head(head, B * N):  # large vocabulary: no [B, N, V] logits
            from ..ops.fused_linear_logprob import fused_linear_logprob

            D = h_resp.shape[-1]
            logp = fused_linear_logprob(h_resp.reshape(B * N, D), head.weight, targets.reshape(-1),
                                        bias=head.bias, temperature=self.temperature).view(B, N)
        else:
            logits = apply_head(model, head, h_resp)
            logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            if self.temperature != 1.0:
                logits = logits / self.temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, :, None]).squeeze(-1)  # [B, N]
            del logits
        mask = mask.to(device)

        R_max = max((s.num_reasoning for s in segments), default=0)
        scores = torch.zeros(B, R_max, dtype=torch.float32, device=device)
        score_mask = torch.zeros(B, R_max, dtype=torch.bool, device=device)
        weights = torch.ones(B, N, dtype=torch.float32, device=device)
        if rows:
            order = sorted(rows)
            layout = PFinalLayout([rows[b] for b in order])  # P_final's logits of all rows: [K, V]
            with torch.set_grad_enabled(not exact and torch.is_grad_enabled()):
                z_sel = self._branch(rows, order, layout, cache, hidden, T, device, responses)
            if exact:
                if not _reusable(cache):  # pragma: no cover - a cache without per-layer tensors
                    raise RuntimeError("kl_grad='exact' needs transformers' layered cache; use kl_grad='linearized'")
                per_row = self._exact_kl(rows, order, layout, z_sel, generator, dim, device, cache)
            else:
                cot = self._cotangents(rows, order, layout, z_sel, generator, dim, device, cache)
                gxi, gn = sal.backward([z_sel], [cot], retain_graph=True)
                value = gxi if self.score == "grad_x_input" else gn
                per_row = {b: value[b, r.start : r.start + r.num] for b, r in rows.items()}
            for b, r in rows.items():
                scores[b, : r.num] = per_row[b]
                score_mask[b, : r.num] = True
            w = bilevel_reshape(scores, score_mask, **self.reshape)
            if R_max:
                weights[:, :R_max] = torch.where(score_mask, w, weights[:, :R_max])
        del cache
        return OARGOutput(logp, mask, scores, score_mask, weights)

    def _fused_head(self, head, num_tokens: int = 0) -> bool:
        """The policy log-probs go through oar.fused_linear_logprob (fused_head=None: by
        ops.fused_head_rule.AUTO_RULE)."""
        if self.fused_head is not None:
            return self.fused_head
        return plain_linear_head(self.model, head) is not None and fused_pays_off(head, num_tokens)

    # ------------------------------------------------------------------------------------
    def _branch(self, rows, order, layout, cache, hidden, T, device, responses) -> torch.Tensor:
        """Conclude/answer continuation of the policy forward; P_final's logits [K, V] (flat,
        rows in `order`, see PFinalLayout)."""
        model, body, head = self.model, self.body, self.head
        B = hidden.shape[0]
        # Branch of row b: scoring positions P + R .. Le - 1 (may be empty when P_final reads a
        # reasoning position, e.g. an empty conclude in mode "last"). Where the response itself
        # goes on with exactly those tokens (a conclude text the response writes itself followed
        # by the answer, as in the built-in task), causal attention makes the policy row's hidden
        # states at those positions the branch's: no branch forward for that row.
        br = {}
        for b, r in rows.items():
            t = r.ids[r.start + r.num :]
            cont = responses[b][r.num : r.num + t.numel()]
            br[b] = t[:0] if torch.equal(cont, t) else t
        Q = max(t.numel() for t in br.values())
        if Q > 0:
            b_ids = torch.zeros((B, Q), dtype=torch.long)
            b_pos = torch.zeros((B, Q), dtype=torch.long)
            bound = torch.zeros((B, Q), dtype=torch.long)  # policy keys < bound are visible
            valid = torch.zeros((B, Q), dtype=torch.bool)
            for b, t in br.items():
                r = rows[b]
                n = t.numel()
                b_ids[b, :n] = t
                b_pos[b, :n] = r.start + r.num + torch.arange(n)
                bound[b, :n] = r.start + r.num
                valid[b, :n] = True
            dtype = self.emb.weight.dtype
            kq = torch.arange(T)
            see_policy = kq[None, None, :] < bound[:, :, None]
            qi = torch.arange(Q)
            see_branch = (qi[None, None, :] <= qi[None, :, None]) & valid[:, None, :]
            see_branch = see_branch | torch.eye(Q, dtype=torch.bool)[None]  # padding sees itself
            allowed = torch.cat([see_policy, see_branch], dim=-1)
            mask4 = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
            out = body(
                input_ids=b_ids.to(device),
                attention_mask=mask4[:, None].to(device),
                position_ids=b_pos.to(device),
                use_cache=True,
                **_cache.cache_kwargs(body, cache),
            )
            h_branch = hidden_of(out)  # [B, Q, D]
        # flat position k of P_final reads the policy states or the branch's: gather each source
        # once, then put the rows back in flat order (no copy of the whole [B, T, D] states)
        src = {False: ([], [], []), True: ([], [], [])}  # from the branch? -> (flat k, row, position)
        k = 0
        for b in order:
            r = rows[b]
            split = r.start + r.num if br[b].numel() else r.length  # no branch: all policy positions
            for pos in r.need.tolist():
                ks, bs, ps = src[pos >= split]
                ks.append(k)
                bs.append(b)
                ps.append(pos - split if pos >= split else pos)
                k += 1
        if not src[True][0]:
            return layout.logits(model, head, hidden, src[False][1], src[False][2])
        parts, flat = [], []
        for from_branch, states in ((False, hidden), (True, h_branch)):
            ks, bs, ps = src[from_branch]
            if ks:
                parts.append(states[torch.tensor(bs, device=device), torch.tensor(ps, device=device)])
                flat += ks
        h_sel = torch.cat(parts)[torch.argsort(torch.tensor(flat)).to(device)]  # [K, D] in flat order
        return apply_head(model, head, h_sel)

    # ------------------------------------------------------------------------------------
    def _cotangents(self, rows, order, layout, z_sel, generator, dim, device, cache=None) -> torch.Tensor:
        """c = dJ/dz [K, V]: at the clean logits (answer_joint) or at the noisy ones (KL modes)."""
        mode = self.mode
        if mode == "answer_joint":
            leaf = z_sel.detach().requires_grad_(True)
            with torch.enable_grad():
                (c,) = torch.autograd.grad(layout.objective(leaf, leaf, mode), [leaf])
            return c.to(z_sel.dtype)
        noises = {b: draw_noise(rows[b].num, dim, generator) for b in order}  # the oracle's order
        if _reusable(cache):
            noisy = noisy_chunk_logits(self.model, rows, order, layout, noises, self.noise_std, cache.layers, device)
        else:  # pragma: no cover - caches without per-layer tensors
            noisy = self._noisy_logits(rows, order, noises, device)
        leaf = noisy.detach().requires_grad_(True)
        with torch.enable_grad():
            (c,) = torch.autograd.grad(layout.objective(z_sel, leaf, mode), [leaf])
        return c.to(z_sel.dtype)

    def _exact_kl(self, rows, order, layout, z_sel, generator, dim, device, cache) -> Dict[int, torch.Tensor]:
        """kl_grad="exact": OAR-G's own gradient at the noisy embeddings (equal to the oracle).

        A grad-enabled noisy forward of reasoning + conclude (+ answer) on the policy's prompt
        keys/values (detached: the prompt is never noised and no prompt score is needed), the
        clean reasoning embeddings under the probe, J against the teacher from the branch
        (detached), and autograd.grad to those embeddings only. Its graph is freed at once.
        """
        noises = {b: draw_noise(rows[b].num, dim, generator) for b in order}  # the oracle's order
        with torch.enable_grad():
            noisy, sal, where = noisy_chunk_logits(self.model, rows, order, layout, noises, self.noise_std,
                                                   cache.layers, device, with_grad=True)
            gxi, gn = sal.backward(layout.objective(z_sel, noisy, self.mode))
        value = gxi if self.score == "grad_x_input" else gn
        return {b: value[k, o : o + rows[b].num] for b, (k, o) in where.items()}

    @torch.no_grad()
    def _noisy_logits(self, rows, order, noises, device) -> torch.Tensor:  # pragma: no cover - no layered cache
        """No-grad forward of the whole scoring sequences with noise at the reasoning embeddings."""
        model, emb, body, head = self.model, self.emb, self.body, self.head
        dtype = emb.weight.dtype
        out = {}
        i = 0
        while i < len(order):
            j, longest = i, 0
            while j < len(order) and (j == i or (j - i + 1) * max(longest, rows[order[j]].length) <= self.max_noisy_tokens):
                longest = max(longest, rows[order[j]].length)
                j += 1
            group = [rows[b] for b in order[i:j]]
            ids = torch.zeros((len(group), longest), dtype=torch.long)
            for k, r in enumerate(group):
                ids[k, : r.length] = r.ids
            x = emb(ids.to(device))
            for k, r in enumerate(group):
                x[k, r.start : r.start + r.num] += noises[r.index].to(device=device, dtype=dtype) * self.noise_std
            h = hidden_of(body(inputs_embeds=x))
            for k, r in enumerate(group):
                out[r.index] = apply_head(model, head, h[k, r.need.to(device)])
            i = j
        return torch.cat([out[b] for b in order])


def oarg_step(
    model,
    segments: Sequence[Segments],
    response_ids,
    mode: str = "answer_mean",
    noise_std: float = 1e-3,
    score: str = "grad_x_input",
    generator: Optional[torch.Generator] = None,
    **reshape,
) -> OARGOutput:
    """Functional form of OARGStep: OARGStep(model, mode, noise_std, score, **reshape)(...)."""
    return OARGStep(model, mode=mode, noise_std=noise_std, score=score, **reshape)(segments, response_ids, generator)
