"""OAR-P with prefix reuse: oar.perturbation_importance (docs/algorithm.md section 3).

The sequence perturbed at reasoning position t equals the unperturbed one on its first
P + t tokens (P = prompt length), so their keys/values are the same. For a group of g
responses we

1. run the unperturbed sequences once ([g, Le] tokens, plain causal attention), keeping
   every layer's keys/values as a prefix in a cache with a scratch tail
   (`_cache.PrefixScratchLayer`), and reading P_final at the positions it needs;
2. pack the *suffixes* of many perturbations of response r into row r of a chunk
   ([g, q] tokens): suffix t is the perturbation token followed by the original tokens
   P+t+1 .. Le-1. An explicit 4-D additive mask lets each suffix token see the cached prefix
   positions < P + t and, causally, its own suffix only; explicit position_ids give the
   tokens their positions in the perturbed sequence. The chunk's keys/values go to the
   scratch tail, so the prefix is read, never copied or recomputed. The rows are ordered by
   how much suffix work they hold, so the responses with less reasoning, which run out of
   perturbations first, are the last rows: each round runs only up to the last busy row, on
   views of the cache, instead of carrying idle padding rows;
3. apply the LM head only to the hidden states at P_final's positions (1 per perturbation
   for `last`, A for the answer modes), never to the whole chunk, and to those of a whole
   forward in one call (bounded by HEAD_LOGITS_BYTES).

Each forward holds at most `max_batch_tokens` query tokens (padding included); the only
exception is a single sequence (clean pass) or suffix longer than that, which then runs alone.
`prefix_reuse=False` runs the same P_final on whole perturbed sequences, batched by the same
budget: the plain baseline.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch

from ..segments import Segments
from . import _cache
from ._common import (
    EvalMode,
    Row,
    apply_head,
    check_lengths,
    check_max_batch_tokens,
    check_mode,
    check_segments,
    decoder_and_head,
    empty_output,
    group_rows,
    hidden_of,
    input_embeddings,
    is_scored,
    make_row,
    outcome,
    perturbation_score,
    resolve_perturb_token,
)


# Longest packed row, in sequence lengths: each query scores (sequence + row) keys, most of
# them masked out, so long rows cost attention work without saving anything (benchmarked).
ROW_FACTOR = 1.0
# Most logits one LM-head call of OAR-P produces (counted at 8 bytes a value, for float64).
HEAD_LOGITS_BYTES = 256 << 20


class _Body:
    """Decoder body + LM head of the model, called with the arguments OAR-P needs."""

    def __init__(self, model):
        self.model = model
        self.body, self.head = decoder_and_head(model)
        weight = getattr(self.head, "weight", None)
        self.vocab = int(weight.shape[0]) if weight is not None else int(input_embeddings(model).weight.shape[0])

    def hidden(self, ids, position_ids=None, attention_mask=None, cache=None) -> torch.Tensor:
        out = self.body(
            input_ids=ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=cache is not None,
            **_cache.cache_kwargs(self.body, cache),
        )
        return hidden_of(out)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return apply_head(self.model, self.head, hidden)

    def outcomes(self, hidden: torch.Tensor, items, mode: str, on_outcome) -> None:
        """P_final of many items from one [B, L, D] hidden tensor with few LM-head calls.

        items: (row index into hidden, need [..., k] positions in that row, answer, key). The
        positions of consecutive items are gathered and sent through the head together, up to
        HEAD_LOGITS_BYTES of logits per call (one call per item would read the whole [V, D]
        head weight once per item: on CPU, SmolLM2's head took a fifth of OAR-P's time that
        way). on_outcome(key, outcome(logits [..., k, V], mode, answer)) per item, in order.
        """
        cap = max(1, HEAD_LOGITS_BYTES // (self.vocab * 8))
        i = 0
        while i < len(items):
            j, rows = i, 0
            while j < len(items) and (j == i or rows + items[j][1].numel() <= cap):
                rows += items[j][1].numel()
                j += 1
            batch = items[i:j]
            dev = hidden.device
            b_idx = torch.cat([torch.full((need.numel(),), b, dtype=torch.long) for b, need, _, _ in batch])
            p_idx = torch.cat([need.reshape(-1) for _, need, _, _ in batch])
            z = self.logits(hidden[b_idx.to(dev), p_idx.to(dev)])
            off = 0
            for _, need, answer, key in batch:
                n = need.numel()
                on_outcome(key, outcome(z[off : off + n].view(*need.shape, z.shape[-1]), mode, answer))
                off += n
            del z
            i = j


def _suffix_block(row: Row, t0: int, t1: int, perturb: int):
    """Suffixes of perturbations t0..t1-1 of `row`, concatenated (all 1-D, length n).

    Returns ids, positions, cache bound (prefix positions < bound are visible), owner t, and
    need [t1 - t0, k]: the block indices of the positions P_final reads, per perturbation.
    """
    P, Le = row.start, row.length
    ts = torch.arange(t0, t1)
    lens = Le - P - ts
    owner = torch.repeat_interleave(ts, lens)
    first = torch.cumsum(lens, 0) - lens  # block index where each suffix starts
    offset = torch.arange(int(lens.sum())) - torch.repeat_interleave(first, lens)
    pos = P + owner + offset
    ids = row.ids[pos].clone()
    ids[offset == 0] = perturb
    need = first[:, None] + (row.need[None, :] - P - ts[:, None])
    return ids, pos, P + owner, owner, need


def _chunk_mask(bound, owner, prefix_len: int, dtype, device) -> torch.Tensor:
    """Additive mask [g, 1, q, prefix_len + q]: 0 where a query may attend, dtype-min elsewhere.

    Prefix keys k are visible when k < bound (the query's perturbation point); chunk keys
    when they belong to the same perturbation (owner) and are not later. Padding queries
    (owner -1) see padding keys up to themselves, so no softmax row is empty.
    """
    g, q = owner.shape
    k_pre = torch.arange(prefix_len, device=device)
    see_prefix = k_pre[None, None, :] < bound[:, :, None]
    idx = torch.arange(q, device=device)
    see_chunk = (owner[:, :, None] == owner[:, None, :]) & (idx[None, None, :] <= idx[None, :, None])
    allowed = torch.cat([see_prefix, see_chunk], dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def _suffix_work(r: Row) -> int:
    """Tokens in the suffixes of all perturbations of r."""
    return sum(r.length - r.start - t for t in range(r.num))


def _score_group_reuse(net: _Body, group: List[Row], mode, perturb, budget, scores, device, dtype):
    # most suffix work first: rows that finish early are then the last rows of the batch
    group = sorted(group, key=_suffix_work, reverse=True)
    g = len(group)
    le_max = max(r.length for r in group)
    longest_suffix = max(r.length - r.start for r in group)
    # Row capacity: the budget shared by the g rows, but never below one whole suffix, and at
    # most ~2 sequence lengths (keys per query are prefix + row, so longer rows only add
    # masked-out attention work).
    cap = max(longest_suffix, min(budget // g, int(ROW_FACTOR * le_max)))

    # 1. Unperturbed pass: fills the prefix cache and gives the baseline P_final.
    ids = torch.full((g, le_max), perturb, dtype=torch.long)
    for i, r in enumerate(group):
        ids[i, : r.length] = r.ids
    pos = torch.arange(le_max).expand(g, le_max)
    cache = _cache.prefix_cache(extra=cap)
    h = net.hidden(ids.to(device), pos.to(device), None, cache)
    base = [None] * g
    net.outcomes(h, [(i, r.need, r.answer, i) for i, r in enumerate(group)], mode, base.__setitem__)
    del h

    # 2. Rounds of packed suffixes, one row per response. The rows are in order of decreasing
    # work (see above), so the responses still perturbing are (nearly) the first rows: each
    # round runs only up to the last busy row, on views of the cache (no padding rows).
    nxt = [0] * g
    n_rows = g  # rows of the batch (and of the cache's views)
    while True:
        busy = [i for i in range(n_rows) if nxt[i] < group[i].num]
        if not busy:
            break
        if busy[-1] + 1 < n_rows:
            n_rows = busy[-1] + 1
            cache = _cache.first_rows(cache, n_rows)
        blocks = []
        for i in range(n_rows):
            r, t0 = group[i], nxt[i]
            if t0 >= r.num:
                blocks.append(None)
                continue
            lens = r.length - r.start - torch.arange(t0, r.num)
            fit = int((torch.cumsum(lens, 0) <= cap).sum())
            t1 = t0 + max(1, fit)
            blocks.append((t0, t1, _suffix_block(r, t0, t1, perturb)))
            nxt[i] = t1
        q = max(b[2][0].numel() for b in blocks if b is not None)
        c_ids = torch.full((n_rows, q), perturb, dtype=torch.long)
        c_pos = torch.zeros((n_rows, q), dtype=torch.long)
        c_bound = torch.zeros((n_rows, q), dtype=torch.long)
        c_owner = torch.full((n_rows, q), -1, dtype=torch.long)
        for i, blk in enumerate(blocks):
            if blk is None:
                continue
            b_ids, b_pos, b_bound, b_owner, _ = blk[2]
            n = b_ids.numel()
            c_ids[i, :n], c_pos[i, :n], c_bound[i, :n], c_owner[i, :n] = b_ids, b_pos, b_bound, b_owner
        mask = _chunk_mask(c_bound.to(device), c_owner.to(device), le_max, dtype, device)
        h = net.hidden(c_ids.to(device), c_pos.to(device), mask, cache)
        del mask

        def score(i, pert):  # pert: P_final of perturbations t0..t1-1 of row i, [n_t, V] or [n_t]
            t0, t1 = blocks[i][0], blocks[i][1]
            scores[group[i].index, t0:t1] = perturbation_score(base[i].unsqueeze(0), pert, mode).float()

        items = [(i, blk[2][4], group[i].answer, i) for i, blk in enumerate(blocks) if blk is not None]
        net.outcomes(h, items, mode, score)
        del h


def _score_plain(net: _Body, rows: List[Row], mode, perturb, budget, scores, device):
    """Whole perturbed sequences (and the unperturbed one), batched by the token budget."""
    items = []  # (row, t) with t = -1 the unperturbed sequence
    for r in rows:
        items += [(r, t) for t in range(-1, r.num)]
    base = {}
    i = 0
    while i < len(items):
        j, longest = i, 0
        while j < len(items) and (j == i or (j - i + 1) * max(longest, items[j][0].length) <= budget):
            longest = max(longest, items[j][0].length)
            j += 1
        batch = items[i:j]
        ids = torch.full((len(batch), longest), perturb, dtype=torch.long)
        for k, (r, t) in enumerate(batch):
            ids[k, : r.length] = r.ids
            if t >= 0:
                ids[k, r.start + t] = perturb
        h = net.hidden(ids.to(device))

        def score(item, out):
            r, t = item
            if t < 0:
                base[r.index] = out
            else:
                scores[r.index, t] = perturbation_score(base[r.index], out, mode).float()

        net.outcomes(h, [(k, r.need, r.answer, (r, t)) for k, (r, t) in enumerate(batch)], mode, score)
        i = j


@torch.no_grad()
def perturbation_importance(
    model,
    segments: Sequence[Segments],
    mode: str = "last",
    perturb_token: Optional[int] = None,
    max_batch_tokens: int = 8192,
    prefix_reuse: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """OAR-P token importance of the reasoning tokens, for any transformers causal LM.

    For each reasoning token t of each response, replace it by `perturb_token` and measure how
    P_final moves: KL(P_final || P_final^(t)) for mode "last" / "answer_mean", phi - phi^(t)
    for "answer_joint" (docs/algorithm.md sections 2-3). Equal to
    `oar_kernels.reference.perturbation_importance_naive`, at a fraction of its cost (module
    docstring).

    Args:
        model: a transformers causal LM (decoder body via get_decoder(), LM head via
            get_output_embeddings()); run in eval mode here, its training flags restored.
        segments: list of B Segments.
        mode: "last" | "answer_mean" | "answer_joint".
        perturb_token: replacement id; default config.pad_token_id, else eos_token_id.
        max_batch_tokens: most query tokens (padding included) per forward; bounds memory.
        prefix_reuse: reuse the unperturbed prefix's keys/values (default); False runs whole
            perturbed sequences (the plain batched baseline).

    Returns:
        scores [B, R_max] float32 (I_t of reasoning token t of response b at [b, t]) and
        mask [B, R_max] bool (True at the first R_b columns of each scored row). Rows with
        empty reasoning (or, in the answer modes, no answer) are all False: weights 1.
    """
    segments = check_segments(segments)
    check_mode(mode)
    check_max_batch_tokens(max_batch_tokens)
    if not isinstance(prefix_reuse, bool):
        raise ValueError(f"prefix_reuse: expected a bool, got {prefix_reuse!r}")
    emb = input_embeddings(model)
    vocab = int(emb.weight.shape[0])
    perturb = resolve_perturb_token(model, perturb_token, vocab)
    check_lengths(model, segments, mode != "last", vocab)
    device, dtype = emb.weight.device, emb.weight.dtype
    scores, mask = empty_output(segments, device)
    rows = [make_row(b, s, mode) for b, s in enumerate(segments) if is_scored(s, mode)]
    if not rows:
        return scores, mask
    if prefix_reuse and not _cache.available():  # pragma: no cover - old transformers
        warnings.warn("perturbation_importance: this transformers has no layered Cache; prefix_reuse off")
        prefix_reuse = False
    net = _Body(model)
    with EvalMode(model):
        if prefix_reuse:
            for group in group_rows(rows, max_batch_tokens):
                _score_group_reuse(net, group, mode, perturb, max_batch_tokens, scores, device, dtype)
        else:
            _score_plain(net, rows, mode, perturb, max_batch_tokens, scores, device)
    for r in rows:
        mask[r.index, : r.num] = True
    return scores, mask
