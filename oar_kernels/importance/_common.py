"""Shared plumbing of OAR-P and OAR-G: argument checks, model access, P_final math, layout.

Positions follow `Segments.sequence(with_answer)`: the prompt starts at 0, reasoning token t
sits at `reasoning_start + t`, answer token j at `answer_start + j`. P_final needs logits at

    last:            [answer_start - 1]                       (1 position)
    last_after_answer: [answer_start + A - 1]                 (1 position, the last answer token)
    answer_mean/joint: [answer_start - 1, ..., answer_start + A - 2]  (A positions)

so nothing after the last of them is ever fed to the model ("effective length" Le).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .._checks import check_choice, check_number
from ..segments import Segments

# "last_after_answer": the next-token distribution after the appended answer (what the authors'
# OAR-G reads for its `last`; "last" reads after the conclude text, the paper's description).
MODES = ("last", "answer_mean", "answer_joint", "last_after_answer")
SCORES = ("grad_x_input", "grad_norm")

LOG_EPS = 1e-12  # OAR-G's KL uses log(p + 1e-12) (docs/algorithm.md section 4)


# ------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------


def check_mode(mode) -> None:
    check_choice("mode", mode, MODES)


def check_score(score) -> None:
    check_choice("score", score, SCORES)


def check_max_batch_tokens(value) -> None:
    check_number("max_batch_tokens", value, lo=1, integer=True)


def check_segments(segments) -> List[Segments]:
    """The list of Segments, or ValueError naming the bad element."""
    if not isinstance(segments, (list, tuple)):
        raise ValueError(f"segments: expected a list of Segments, got {type(segments).__name__}")
    for b, seg in enumerate(segments):
        if not isinstance(seg, Segments):
            raise ValueError(f"segments[{b}]: expected Segments, got {type(seg).__name__}")
    return list(segments)


def check_lengths(model, segments: Sequence[Segments], with_answer: bool, vocab: int) -> None:
    """ValueError naming the response when a scoring sequence exceeds the context or vocab."""
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    for b, seg in enumerate(segments):
        seq = seg.sequence(with_answer)
        if max_len is not None and seq.numel() > max_len:
            raise ValueError(
                f"segments[{b}]: scoring sequence of response {b} has {seq.numel()} tokens, more "
                f"than the model's context (max_position_embeddings={max_len})"
            )
        if seq.numel() and int(seq.max()) >= vocab:
            raise ValueError(
                f"segments[{b}]: token id {int(seq.max())} of response {b} is outside the "
                f"model's vocabulary of {vocab}"
            )


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")


def default_perturb_token(model) -> int:
    """config.pad_token_id, else config.eos_token_id (the first if a list)."""
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if len(eos) else None
    if eos is not None:
        return int(eos)
    raise ValueError(
        "perturb_token: the model's config has neither pad_token_id nor eos_token_id; pass perturb_token"
    )


def resolve_perturb_token(model, perturb_token, vocab: int) -> int:
    """The perturbation token id: the given one (int or 1-element integer tensor) or the
    model's default, checked to lie in [0, vocab)."""
    if perturb_token is None:
        perturb_token = default_perturb_token(model)
    if isinstance(perturb_token, torch.Tensor) and perturb_token.numel() == 1 and not perturb_token.is_floating_point():
        perturb_token = perturb_token.item()
    if (
        isinstance(perturb_token, bool)
        or not isinstance(perturb_token, numbers.Integral)
        or not 0 <= int(perturb_token) < vocab
    ):
        raise ValueError(f"perturb_token: expected a token id in [0, {vocab}), got {perturb_token!r}")
    return int(perturb_token)


def is_scored(seg: Segments, mode: str) -> bool:
    """Rows with no reasoning, or no answer in the modes that read it (all but "last"), are not
    scored (weights 1)."""
    if seg.num_reasoning == 0:
        return False
    return mode == "last" or seg.answer_ids.numel() > 0


def draw_noise(num: int, dim: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One scored row's standard-normal noise [num, dim] float32 (OAR-G's draw convention,
    docs/importance.md: one draw per scored row, in row order, on the generator's device;
    torch's global CPU RNG when generator is None). The naive oracle draws the same way."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn((num, dim), generator=generator, device=device, dtype=torch.float32)


class EvalMode:
    """Puts every submodule in eval mode (dropout off); restores each one's flag on exit."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False



def input_embeddings(model) -> torch.nn.Module:
    """The model's input-embedding module; TypeError when the model does not expose one."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None or not isinstance(getattr(emb, "weight", None), torch.Tensor):
        raise TypeError(
            "model: OAR importance needs a transformers causal LM whose get_input_embeddings() "
            f"returns the token-embedding module; {type(model).__name__} does not provide one"
        )
    return emb


def decoder_and_head(model):
    """(decoder body, LM head) of a causal LM: body(...)[0] are the final hidden states.

    Applying the head ourselves lets us compute logits only where P_final needs them.
    """
    get_dec = getattr(model, "get_decoder", None)
    body = get_dec() if callable(get_dec) else None
    if body is None:
        body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if body is None or head is None or body is model:
        raise TypeError(
            f"model: expected a transformers causal LM with get_decoder() and get_output_embeddings(); "
            f"{type(model).__name__} has none"
        )
    return body, head


def apply_head(model, head, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on gathered hidden states [N, D] -> logits [N, V], with the model's softcapping."""
    logits = head(hidden)
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def hidden_of(out) -> torch.Tensor:
    """Final hidden states from a decoder body's output (ModelOutput or tuple)."""
    h = getattr(out, "last_hidden_state", None)
    return out[0] if h is None else h




def empty_output(segments: Sequence[Segments], device):
    """Zero scores [B, R_max] float32 and an all-False mask [B, R_max]."""
    r_max = max((s.num_reasoning for s in segments), default=0)
    scores = torch.zeros(len(segments), r_max, dtype=torch.float32, device=device)
    mask = torch.zeros(len(segments), r_max, dtype=torch.bool, device=device)
    return scores, mask


# ------------------------------------------------------------------------------------------
# Per-response layout
# ------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One scored response: its ids up to the last needed position, and where P_final reads.

    ids:    [Le] int64, the scoring sequence cut after the last position P_final needs
    start:  reasoning_start (P); num: R; need: positions whose logits P_final needs
    answer: [A] answer ids (answer_* modes) or None
    """

    index: int
    ids: torch.Tensor
    start: int
    num: int
    need: torch.Tensor
    answer: Optional[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.ids.numel())


def make_row(b: int, seg: Segments, mode: str) -> Row:
    a0 = seg.answer_start
    if mode == "last":
        need = torch.tensor([a0 - 1])
        answer = None
    elif mode == "last_after_answer":
        need = torch.tensor([a0 + int(seg.answer_ids.numel()) - 1])
        answer = None
    else:
        n = int(seg.answer_ids.numel())
        need = torch.arange(a0 - 1, a0 - 1 + n)
        answer = seg.answer_ids
    seq = seg.sequence(mode != "last")
    ids = seq[: int(need[-1]) + 1]
    return Row(b, ids, seg.reasoning_start, seg.num_reasoning, need, answer)


# ------------------------------------------------------------------------------------------
# P_final from the logits at the needed positions
# ------------------------------------------------------------------------------------------


def group_rows(rows: List[Row], budget: int) -> List[List[Row]]:
    """Consecutive rows, as many per group as fit g * max(Le) <= budget (at least one)."""
    out, cur, longest = [], [], 0
    for row in rows:
        new_longest = max(longest, row.length)
        if cur and (len(cur) + 1) * new_longest > budget:
            out.append(cur)
            cur, new_longest = [], row.length
        cur.append(row)
        longest = new_longest
    if cur:
        out.append(cur)
    return out


def pack_first_fit(lengths: Dict[int, int], capacity: int) -> List[List[int]]:
    """Keys of `lengths` packed into bins of at most `capacity` (first fit, longest first; ties
    by key): few padded rows for ragged chunks. A key longer than `capacity` gets a bin alone."""
    bins, fill = [], []
    for key in sorted(lengths, key=lambda k: (-lengths[k], k)):
        k = next((k for k, f in enumerate(fill) if f + lengths[key] <= capacity), None)
        if k is None:
            bins.append([])
            fill.append(0)
            k = len(bins) - 1
        bins[k].append(key)
        fill[k] += lengths[key]
    return bins


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """P_final math runs in the model dtype, but at least float32 (half softmax is too coarse)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def outcome(logits: torch.Tensor, mode: str, answer: Optional[torch.Tensor]) -> torch.Tensor:
    """P_final from logits [..., k, V] at the needed positions of one response.

    Returns log P_final [..., V] (last, last_after_answer: k = 1; answer_mean: log softmax of the mean logits) or
    phi [...] (answer_joint: mean log-prob of the k = A answer tokens).
    """
    z = logits.to(math_dtype(logits.dtype))
    if mode in ("last", "last_after_answer"):
        return torch.log_softmax(z[..., 0, :], dim=-1)
    if mode == "answer_mean":
        return torch.log_softmax(z.mean(dim=-2), dim=-1)
    logp = torch.log_softmax(z, dim=-1)
    ids = answer.to(z.device).expand(*logp.shape[:-1])
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1).mean(dim=-1)


def perturbation_score(base: torch.Tensor, pert: torch.Tensor, mode: str) -> torch.Tensor:
    """OAR-P: KL(P || P^(t)) from log-probs [..., V], or phi - phi^(t)."""
    if mode == "answer_joint":
        return base - pert
    return (base.exp() * (base - pert)).sum(dim=-1)


def gradient_objective(clean: torch.Tensor, noisy: torch.Tensor, mode: str) -> torch.Tensor:
    """OAR-G's J: KL(P_clean || P_noisy) with log(p + 1e-12), or phi_clean - phi_noisy."""
    if mode == "answer_joint":
        return clean - noisy
    p, q = clean.exp(), noisy.exp()
    return (p * (torch.log(p + LOG_EPS) - torch.log(q + LOG_EPS))).sum(dim=-1)


# ------------------------------------------------------------------------------------------
# P_final of many rows at once
# ------------------------------------------------------------------------------------------


class PFinalLayout:
    """The positions P_final reads for a list of rows, flattened, and the rows grouped by how
    many positions they read (rows with equal counts are evaluated as one batch).

    The logits of all rows are one [K, V] tensor (row i at flat[starts[i] : starts[i] + k_i]),
    taken with one gather from the hidden states and one LM-head call: per-row indexing of a
    graph-attached [B, L, D] tensor would make every row's backward allocate and fill a full
    [B, L, D] gradient.
    """

    def __init__(self, rows: Sequence[Row]):
        ks = [int(r.need.numel()) for r in rows]
        self.starts = [0]
        for k in ks:
            self.starts.append(self.starts[-1] + k)
        by_k = {}
        for i, k in enumerate(ks):
            by_k.setdefault(k, []).append(i)
        self.groups = []  # (members, index [G, k] into the flat logits, answers [G, k] or None)
        for k, members in by_k.items():
            idx = torch.tensor([[self.starts[i] + j for j in range(k)] for i in members], dtype=torch.long)
            with_answer = all(rows[i].answer is not None for i in members)
            answers = torch.stack([rows[i].answer for i in members]) if with_answer else None
            self.groups.append((members, idx, answers))

    @property
    def size(self) -> int:
        return self.starts[-1]

    def logits(self, model, head, hidden: torch.Tensor, batch_index, positions) -> torch.Tensor:
        """[K, V] logits at hidden[batch_index[j], positions[j]] (flat order), one head call."""
        dev = hidden.device
        return apply_head(model, head, hidden[torch.as_tensor(batch_index).to(dev), torch.as_tensor(positions).to(dev)])

    def outcomes(self, z: torch.Tensor, mode: str) -> List[torch.Tensor]:
        """Per group, log P_final [G, V] or phi [G] from the flat logits z [K, V]."""
        return [outcome(z[idx.to(z.device)], mode, answers) for _, idx, answers in self.groups]

    def objective(self, clean_z: torch.Tensor, noisy_z: torch.Tensor, mode: str) -> torch.Tensor:
        """OAR-G's J summed over the rows: teacher from clean_z (used detached), student noisy_z."""
        clean, noisy = self.outcomes(clean_z.detach(), mode), self.outcomes(noisy_z, mode)
        return sum(gradient_objective(c, n, mode).sum() for c, n in zip(clean, noisy))
