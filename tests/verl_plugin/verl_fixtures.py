"""Shared pieces of the verl plugin tests: a verl batch padded the way verl pads one, in-process
scorers and a Ray worker around a tiny in-process model (nothing is loaded from a hub).

Imported by the tests in this folder and, by module name, by the Ray workers (the tests put
this folder and tests/ on the workers' PYTHONPATH).
"""
from __future__ import annotations

import contextlib
import random
from typing import List, Optional

import torch
from verl.single_controller.base import Worker

from oar_kernels.integrations.verl import OARScoringMixin
from tiny_models import _problem, make_model, make_tokenizer

MODEL_SEED = 3


def tiny_policy():
    return make_model("qwen2", seed=MODEL_SEED)


def make_rows(n: int = 8, seed: int = 0):
    """n (prompt_ids, response_ids, advantage, reference answer) rows, ragged. Row 2 has no final
    answer (its statement is cut), row 5 a zero advantage, every response ends in EOS."""
    tok = make_tokenizer()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q, sol, ans = _problem(rng)
        if i == 2:
            sol = sol.split("\n")[0].split(" Therefore")[0]  # the worked step only: no answer statement
        prompt = tok.encode(q, add_special_tokens=False)[: rng.randint(4, 12)]
        response = tok.encode(sol, add_special_tokens=False)[:40] + [tok.eos_token_id]
        adv = 0.0 if i == 5 else (1.0 if i % 2 == 0 else -0.75)
        rows.append((prompt, response, adv, ans))
    return rows


def verl_batch(rows, pad_id: int = 0, extra_prompt_pad: int = 2, extra_response_pad: int = 3):
    """A DataProto laid out as verl's rollout leaves a batch: prompts left-padded to one width,
    responses right-padded to another, input_ids / attention_mask / position_ids over both, the
    response_mask, per-token GRPO advantages A_i * response_mask and reward_model.ground_truth."""
    import numpy as np
    from verl.protocol import DataProto

    B = len(rows)
    P = max(len(r[0]) for r in rows) + extra_prompt_pad
    T = max(len(r[1]) for r in rows) + extra_response_pad
    prompts = torch.full((B, P), pad_id, dtype=torch.long)
    responses = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros(B, P + T, dtype=torch.long)
    for b, (p, r, _, _) in enumerate(rows):
        prompts[b, P - len(p):] = torch.tensor(p)
        responses[b, : len(r)] = torch.tensor(r)
        attention[b, P - len(p): P] = 1
        attention[b, P: P + len(r)] = 1
    response_mask = attention[:, P:].clone()
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0) * attention
    advantages = torch.tensor([r[2] for r in rows]).unsqueeze(1) * response_mask.float()
    reward_model = np.array([{"ground_truth": r[3], "style": "rule"} for r in rows], dtype=object)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
                 "attention_mask": attention, "position_ids": position_ids, "response_mask": response_mask,
                 "advantages": advantages},
        non_tensors={"reward_model": reward_model},
    )


def nested_batch(rows):
    """The same rows as V1 keeps them in TransferQueue: nested (jagged) prompts / responses /
    advantages, reward_model as a non-tensor stack."""
    from tensordict import TensorDict
    from tensordict.tensorclass import NonTensorStack

    nj = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
    td = TensorDict({
        "prompts": nj([torch.tensor(p) for p, _, _, _ in rows]),
        "responses": nj([torch.tensor(r) for _, r, _, _ in rows]),
        "advantages": nj([torch.full((len(r),), a) for _, r, a, _ in rows]),
    }, batch_size=[len(rows)])
    td["reward_model"] = NonTensorStack(*[{"ground_truth": ans} for _, _, _, ans in rows])
    return td


class _TinyPolicyHooks:
    """The two hooks the scoring mixin asks a worker for, served by self.model / self.tokenizer."""

    def _oar_tokenizer(self):
        return self.tokenizer

    @contextlib.contextmanager
    def _oar_policy(self):
        yield self.model


class LocalScorer(_TinyPolicyHooks, OARScoringMixin):
    """The scoring mixin on a plain object: what a verl actor worker runs, in this process."""

    def __init__(self, rank: int = 0, model=None):
        self.rank = rank
        self.model = model if model is not None else tiny_policy()
        self.tokenizer = make_tokenizer()


class TinyOARWorker(_TinyPolicyHooks, OARScoringMixin, Worker):
    """A verl Worker with the OAR scoring mixin and a tiny model built in the worker, registered
    for verl's nd dispatch on the "actor" mesh (as ActorRolloutRefWorker's actor is)."""

    def __init__(self):
        super().__init__()
        torch.set_num_threads(1)
        self._register_dispatch_collect_info(mesh_name="actor", dp_rank=self.rank, is_collect=True)
        self.model = tiny_policy()
        self.tokenizer = make_tokenizer()


def weights_as_rows(weights: torch.Tensor, rows) -> List[torch.Tensor]:
    return [weights[b, : len(r[1])] for b, r in enumerate(rows)]


def expected_weights(model, rows, settings, reference: bool, generator: Optional[torch.Generator] = None):
    """The oracle: build_segments + gradient_importance / perturbation_importance + bilevel_reshape
    called directly on the unpadded rows (the TRL adapter's rule for which rows are scored, spelled
    out here), one weight row per response."""
    from oar_kernels import bilevel_reshape, build_segments, gradient_importance, perturbation_importance

    tok = make_tokenizer()
    out = [torch.ones(len(r), dtype=torch.float32) for _, r, _, _ in rows]
    picked, segs = [], []
    for b, (p, r, adv, ans) in enumerate(rows):
        if adv == 0:
            continue
        seg = build_segments(p, r, tok, conclude_text=settings.conclude_text,
                             reference_answer=ans if reference else None)
        if (seg.answer_text is None and not reference) or seg.num_reasoning == 0:
            continue
        picked.append(b)
        segs.append(seg)
    if settings.algo == "oar-g":
        scores, mask = gradient_importance(model, segs, mode=settings.pfinal_mode, noise_std=settings.noise_std,
                                           score=settings.score, generator=generator)
    else:
        with torch.no_grad():
            scores, mask = perturbation_importance(model, segs, mode=settings.pfinal_mode,
                                                   perturb_token=settings.perturb_token)
    w = bilevel_reshape(scores, mask, tau=settings.tau, beta=settings.beta, floor=settings.floor)
    for j, b in enumerate(picked):
        R = segs[j].num_reasoning
        out[b][:R] = w[j, :R]
    return out, picked


def no_answer(text: str):
    """An answer extractor that never finds one (as for a model whose outputs it cannot parse)."""
    return None
