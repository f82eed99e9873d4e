"""The shapes, inputs and baselines every benchmark uses, in one place: what each op is compared
with is the strongest alternative a user would pick instead.

LM head (fwd+bwd closures; make_logprob / make_grpo return {name: fn}, {name: why missing}):

  logprob   oar       oar.fused_linear_logprob ("oar:fused" / "oar:chunked" choose forward_mode)
            trl       trl.kernels.chunked_logprob.ChunkedLogProbFunction (TRL's own chunk size)
            liger     liger_kernel's LigerFusedLinearScaledCrossEntropyFunction (logp = -nll), or on
                      sm_90 without cutlass its Triton path (liger_logprob); "liger:scaled",
                      "liger:triton", "liger:fallback" force one path
            cce       cut_cross_entropy.linear_cross_entropy, exact (filter_eps=None), no entropy;
                      its kernels on CUDA, its torch.compile path on CPU
            eager     materialized fp32 logits, log_softmax, gather; compiled: under torch.compile
  grpo      oar       oar.fused_linear_grpo_loss
            liger     LigerFusedLinearGRPOLoss, compiled=True as its users run it
            trl+oar   TRL's ChunkedLogProbFunction log-probs + oar.grpo_loss
            eager     materialized logits + oar.grpo_loss; compiled: under torch.compile

A baseline whose package is absent is missing (reported, not fatal); a closure may carry a
`note` naming which of a library's paths it runs.

Bi-Level: numpy_loop (docs/algorithm.md section 5 row by row). Saliency probe: a backward
through an MLP block with and without the probe. Importance: a model from a config, synthetic
Segments, the plain GRPO step, OAR-P's batched path without prefix reuse (every perturbed
sequence a full-length forward) and the naive oracle, the three-pass OAR-G. Trainer:
OARGRPOTrainer against TRL's GRPOTrainer on python/tiny_setup.py's policy, one child process
each (`python benchmarks/baselines.py JOB`: the child entry of run_job).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time

import harness
import numpy as np
import torch

import oar_kernels as oar
from oar_kernels.reference import gradient_importance_naive, perturbation_importance_naive
from oar_kernels.segments import Segments

# (B, T, D, V): liger's published Hopper shape (M = B*T = 8192, H = 4096, V = 131072) and a
# Qwen2.5-size vocabulary at N=16384 D=2048 (gpu_check); a dry run maps each to a tiny one.
PUBLISHED = (8, 1024, 4096, 131072)
QWEN = (16, 1024, 2048, 151936)
DRY_SHAPES = {PUBLISHED: (2, 16, 32, 500), QWEN: (2, 12, 16, 300)}
# CPU suite (test_bench_ops.py): small enough for seconds per variant on 2 cores
CPU_LM = (4, 128, 128, 8192)
CPU_GRPO = CPU_LM
CPU_BILEVEL = (128, 1024)
# `--bench-size readme`: the shapes of README.md's CPU rows (minutes per LM-head variant)
README_SHAPES = dict(CPU_LM=(8, 512, 512, 32768), CPU_GRPO=(4, 256, 256, 32768), CPU_BILEVEL=(256, 2048))
CPU_SALIENCY = (4, 256, 512)
CPU_MODEL = dict(hidden=64, layers=2, heads=4, kv_heads=2, vocab=512)
CPU_SEGMENTS = dict(n=4, prompt=32, reasoning=48, conclude=4, answer=2)

LOGPROB = ("oar", "trl", "liger", "cce", "eager", "compiled")
GRPO = ("oar", "liger", "trl+oar", "eager", "compiled")
BILEVEL = dict(tau=0.25, beta=1.0, floor=0.1, sum_to_len=True)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


def _missing(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:120]


# ----------------------------------------------------------------------------- LM head


def lm_inputs(shape, device="cpu", dtype=torch.float32, seed=1, backend="auto"):
    """Random LM-head inputs at (B, T, D, V) on the device: h [N, D], w [V, D], targets t, output
    gradients g, g2; h3 / t2 / mask / old / adv for the GRPO loss; label names the shape."""
    B, T, D, V = shape
    N, dev = B * T, torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)

    def randn(*size, scale=1.0):
        return (torch.randn(*size, generator=gen, device=dev) * scale).to(dtype)

    x = argparse.Namespace(N=N, D=D, V=V, dtype=dtype, label=f"N={N} D={D} V={V} {str(dtype)[6:]}")
    x.h = randn(N, D, scale=0.5).requires_grad_(True)
    x.w = randn(V, D, scale=1 / math.sqrt(D)).requires_grad_(True)
    x.t = torch.randint(0, V, (N,), generator=gen, device=dev)
    x.g, x.g2 = torch.randn(N, generator=gen, device=dev), torch.randn(N, generator=gen, device=dev)
    x.h3, x.t2 = x.h.detach().view(B, T, D).requires_grad_(True), x.t.view(B, T)
    x.mask = torch.ones(B, T, dtype=torch.bool, device=dev)
    x.mask[:, T * 3 // 4:] = torch.rand(B, T - T * 3 // 4, generator=gen, device=dev) > 0.5
    with torch.no_grad():
        lp = oar.fused_linear_logprob(x.h, x.w, x.t, backend=backend)
    x.old = lp.view(B, T) + 0.05 * torch.randn(B, T, generator=gen, device=dev)
    x.adv = torch.randn(B, generator=gen, device=dev)
    return x


def _eager_logprob(h, w, t, entropy):
    z = (h @ w.t()).float()
    logp_all = torch.log_softmax(z, dim=-1)
    lp = logp_all.gather(1, t[:, None]).squeeze(1)
    if not entropy:
        return lp, None
    return lp, -(logp_all.exp() * logp_all).sum(-1)


def _trl_chunked():
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    try:
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as chunk
    except ImportError:
        chunk = 32768
    return ChunkedLogProbFunction, chunk


def liger_logprob(h, w, t, entropy, impl="auto"):
    """(fn, note): fn() gives liger's per-token NLL (and entropy) for h, w, t; note names the path.

    LigerFusedLinearScaledCrossEntropyFunction ("scaled") runs a chunked torch fallback (Verl's
    formulas, 512 rows a chunk) everywhere except sm_90, where liger 0.8.5 dispatches it to a
    CuTe-DSL kernel importing `cutlass` and `cuda.bindings`; liger does not install them, so
    there it fails at call time. "auto" keeps "scaled" unless that would happen, and then takes
    liger's Triton path, LigerFusedLinearCrossEntropyFunction(reduction="none") ("triton": no
    entropy output), or for the entropy the fallback liger runs on other GPUs ("fallback")."""
    from liger_kernel.ops import fused_linear_scaled_cross_entropy as sce

    note = ""
    if impl == "auto":
        impl = "scaled"
        if h.is_cuda and torch.version.hip is None and torch.cuda.get_device_capability(h.device) == (9, 0):
            if not (_importable("cutlass") and _importable("cuda.bindings")):
                impl = "fallback" if entropy else "triton"
                note = "its scaled CE needs CuTe-DSL (cutlass, cuda.bindings) on sm_90, absent: "
    if impl == "scaled":
        return (lambda: sce.LigerFusedLinearScaledCrossEntropyFunction.apply(h, w, t, 1.0, -100, 1, entropy)), \
            note + "scaled CE"
    if impl == "fallback":
        return (lambda: sce._FusedLinearPPOFallbackFunction.apply(h, w, t, 1.0, -100, entropy)), \
            note + "scaled CE's torch fallback"
    if entropy:
        raise ValueError("liger's Triton LigerFusedLinearCrossEntropyFunction has no entropy output")
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction as F

    return (lambda: F.apply(h, w, t, None, None, -100, 0.0, 0.0, "none")[0]), \
        note + "Triton LigerFusedLinearCrossEntropyFunction, reduction=none"


def make_logprob(h, w, t, g, g2=None, entropy=False, names=LOGPROB, backend="auto", grad=True):
    """Closures for per-token log-probs (and entropy): {name: fn}, {name: why missing}.
    grad: each fn returns the gradients of sum(logp * g) (+ sum(entropy * g2)) w.r.t. hidden and
    weight (fwd+bwd); False: the forward alone under no_grad, fn returning (logp, entropy or None)."""
    fns, missing = {}, {}

    def finish(lp, ent):
        if not grad:
            return lp, ent
        loss = (lp.float() * g).sum()
        if entropy:
            loss = loss + (ent.float() * g2).sum()
        return torch.autograd.grad(loss, (h, w))

    for name in names:
        kind, _, impl = name.partition(":")
        try:
            if kind == "oar":
                def fn(mode=impl or None):
                    out = oar.fused_linear_logprob(h, w, t, return_entropy=entropy, backend=backend, forward_mode=mode)
                    return finish(*(out if entropy else (out, None)))
            elif kind == "trl":
                F, chunk = _trl_chunked()

                def fn(F=F, chunk=chunk):
                    res = F.apply(h, w, None, t, 1.0, chunk, None, 1.0, ("entropy",) if entropy else ())
                    return finish(res[0], res[1])
            elif kind == "liger":
                run, note = liger_logprob(h, w, t, entropy, impl or "auto")

                def fn(run=run):
                    res = run()
                    nll, ent = res if entropy else (res, None)
                    return finish(-nll, ent)
                fn.note = note
            elif kind == "cce":
                if entropy:
                    missing[name] = "no entropy output"
                    continue
                from cut_cross_entropy import linear_cross_entropy

                cce = "cce" if h.is_cuda else "torch_compile"  # the CCE kernels need a GPU

                def fn(cce=cce):
                    return finish(-linear_cross_entropy(h, w, t, reduction="none", filter_eps=None, impl=cce), None)
            elif kind == "eager":
                def fn():
                    return finish(*_eager_logprob(h, w, t, entropy))
            elif kind == "compiled":
                comp = torch.compile(_eager_logprob, dynamic=False)

                def fn(comp=comp):
                    return finish(*comp(h, w, t, entropy))
            else:
                raise ValueError(f"unknown variant {name!r}")
            fns[name] = fn
        except ImportError as e:
            missing[name] = _missing(e)
        except Exception as e:  # noqa: BLE001 - a baseline its library cannot build here
            missing[name] = _missing(e)
    if not grad:
        fns = {k: torch.no_grad()(fn) for k, fn in fns.items()}
    return fns, missing


def make_grpo(h3, w, t2, old, adv, mask, names=GRPO, liger_compiled=True, backend="auto"):
    """fwd+bwd closures for the GRPO loss (loss_type "grpo", beta 0) from the LM head."""
    B, T, D = h3.shape
    fns, missing = {}, {}
    t1 = t2.reshape(-1)

    def grads(loss):
        return torch.autograd.grad(loss, (h3, w))

    def eager(h3_, w_):
        lp, _ = _eager_logprob(h3_.reshape(B * T, D), w_, t1, False)
        return oar.grpo_loss(lp.view(B, T), old, adv, mask)[0]

    for name in names:
        try:
            if name == "oar":
                def fn():
                    return grads(oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, backend=backend)[0])
            elif name == "liger":
                from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss

                lig = LigerFusedLinearGRPOLoss(beta=0.0, compiled=liger_compiled, use_ref_model=False, loss_type="grpo")

                def fn(lig=lig):
                    return grads(lig(h3, w, t2, mask.float(), adv, old_per_token_logps=old)[0])
            elif name == "trl+oar":
                F, chunk = _trl_chunked()

                def fn(F=F, chunk=chunk):
                    lp = F.apply(h3.reshape(B * T, D), w, None, t1, 1.0, chunk, None, 1.0, ())[0]
                    return grads(oar.grpo_loss(lp.view(B, T).float(), old, adv, mask)[0])
            elif name == "eager":
                def fn():
                    return grads(eager(h3, w))
            elif name == "compiled":
                comp = torch.compile(eager, dynamic=False)

                def fn(comp=comp):
                    return grads(comp(h3, w))
            else:
                raise ValueError(f"unknown variant {name!r}")
            fns[name] = fn
        except Exception as e:  # noqa: BLE001 - absent, or its library cannot build it here
            missing[name] = _missing(e)
    return fns, missing


# ----------------------------------------------------------------------------- Bi-Level, saliency


def numpy_loop(scores: np.ndarray, mask: np.ndarray, tau=0.25, beta=1.0, floor=0.1, sum_to_len=True):
    """The Bi-Level baseline: docs/algorithm.md section 5 written row by row with numpy."""
    out = np.ones(scores.shape, dtype=np.float32)
    for b in range(scores.shape[0]):
        keep = mask[b]
        if not keep.any():
            continue
        s = np.log1p(np.maximum(scores[b, keep].astype(np.float32), 0))
        lo, hi = s.min(), s.max()
        n = (s - lo) / (hi - lo if hi > lo else 1.0)
        q = np.quantile(n, tau)
        w = np.where(n < q, np.maximum(n / (q + 1e-8), floor), 1 + beta * (n - q) / (1 - q + 1e-8))
        if sum_to_len:
            total = w.sum()
            w = w * len(w) / (total + 1e-8) if total > 0 else np.ones_like(w)
        out[b, keep] = w
    return out


def bilevel_inputs(batch: int, seq: int, seed: int = 0, device="cpu"):
    """Scores with a heavy tail and ragged masks: a random-length span per row, at a random
    offset, with a few holes (masks need not be contiguous), plus one empty row."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, seq, generator=g).exp() * torch.rand(batch, 1, generator=g) * 5
    lengths = torch.randint(0, seq + 1, (batch,), generator=g)
    starts = (torch.rand(batch, generator=g) * (seq - lengths + 1)).long()
    pos = torch.arange(seq)
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    mask &= torch.rand(batch, seq, generator=g) > 0.05
    mask[0] = False
    return scores.to(device), mask.to(device)


def saliency_backward(batch, seq, dim, device="cpu", dtype=torch.float32, hidden_mult=4, probe=True):
    """(setup, run, probe): setup() builds J = sum(mlp(x)^2) for x [B, T, D] (through the probe
    or not); run() is its backward w.r.t. x only, as OAR-G takes it."""
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(hidden_mult * dim, dim, generator=g) / dim**0.5).to(device, dtype)
    w2 = (torch.randn(dim, hidden_mult * dim, generator=g) / (hidden_mult * dim) ** 0.5).to(device, dtype)
    x = torch.randn(batch, seq, dim, generator=torch.Generator().manual_seed(1)).to(device, dtype).requires_grad_(True)
    sp, state = oar.SaliencyProbe(), {}

    def setup():
        y = sp(x) if probe else x
        state["J"] = (torch.nn.functional.gelu(y @ w1.t()) @ w2.t()).float().pow(2).sum()

    return setup, lambda: torch.autograd.grad(state["J"], [x]), sp


# ----------------------------------------------------------------------------- importance


QWEN_05B = dict(arch="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936,
                max_pos=32768, dtype=torch.bfloat16)
FLOOR = "lower bound, exact KL modes (GRPO step + chunk forward + input backward)"
GRPO_STEP = "GRPO step (forward + loss backward)"
THREE_PASS = "three-pass (naive OAR-G + GRPO step), answer_mean"


def build_model(arch="llama", hidden=512, layers=4, heads=8, kv_heads=4, intermediate=None, vocab=32000,
                max_pos=4096, dtype=torch.float32, device="cpu", seed=0, path=None):
    """A causal LM from a config (random init, sdpa), or from a local folder (path)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if path:  # e.g. scripts/export_smollm2.py's output
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    cfg = cfg_cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 3 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_pos, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    )
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(cfg)
    return model.to(device=device, dtype=dtype).eval()


def make_segments(n, prompt, reasoning, conclude, answer, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, vocab, (k,), generator=g)  # noqa: E731 - no special ids
    concl = ids(conclude)  # one fixed conclude text for all
    return [Segments(ids(prompt), ids(reasoning), concl, ids(answer)) for _ in range(n)]


def responses_of(segs, tail=1):
    """Sampled responses: reasoning + the answer statement (answer ids) + EOS."""
    return [torch.cat([s.reasoning_ids, s.answer_ids, torch.ones(tail, dtype=torch.long)]) for s in segs]


def probe_segment(s: Segments, k: int) -> Segments:
    """s with only its last k reasoning tokens scored (the others moved into the prompt)."""
    cut = s.num_reasoning - k
    return Segments(torch.cat([s.prompt_ids, s.reasoning_ids[:cut]]), s.reasoning_ids[cut:], s.conclude_ids, s.answer_ids)


def oarp_fns(model, segs, mode="last", budget=8192):
    """OAR-P with prefix reuse against the batched path without it (every perturbed sequence a
    full-length forward: the batched naive a user would write) and the one-forward-per-token oracle."""
    return {"prefix reuse": lambda: oar.perturbation_importance(model, segs, mode, max_batch_tokens=budget),
            "batched naive (prefix_reuse=False)": lambda: oar.perturbation_importance(
                model, segs, mode, max_batch_tokens=budget, prefix_reuse=False),
            "naive oracle": lambda: perturbation_importance_naive(model, segs, mode)}


def _grpo_inputs(segs, resps, device):
    """(ids [B, T] prompt + response, right-padded with 0; the positions predicting each response
    token; those tokens; their mask)."""
    P = torch.tensor([s.prompt_ids.numel() for s in segs])
    N = torch.tensor([r.numel() for r in resps])
    ids = torch.nn.utils.rnn.pad_sequence([torch.cat([s.prompt_ids, r]) for s, r in zip(segs, resps)], batch_first=True)
    cols = torch.arange(int(N.max()))[None, :]
    mask = cols < N[:, None]
    pred = torch.where(mask, P[:, None] - 1 + cols, 0)
    targets = torch.where(mask, ids.gather(1, (pred + 1).clamp_max(ids.shape[1] - 1)), 0)
    return ids.to(device), pred.to(device), targets.to(device), mask.to(device)


def grpo_step(model, inputs, adv, weights=None):
    """The plain GRPO step the OAR-G step is compared with: body forward, LM head at the
    response positions, log-probs, oar.grpo_loss, backward (same code path as OARGStep)."""
    ids, pred, targets, mask = inputs
    h = model.get_decoder()(input_ids=ids).last_hidden_state
    h = h.gather(1, pred[:, :, None].expand(*pred.shape, h.shape[-1]))
    logits = model.get_output_embeddings()(h)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, :, None]).squeeze(-1)
    loss, _ = oar.grpo_loss(logp, None, adv, mask, weights=weights)
    loss.backward()
    model.zero_grad(set_to_none=True)


def chunk_pass(model, segs, device, mode="answer_mean"):
    """The least work any exact KL-mode (answer_mean, last) OAR-G step adds to the GRPO step:
    one forward of reasoning + conclude (+ answer) of every response and a backward to those
    input embeddings only, LM head at the positions P_final reads; without the prompts (fewer
    keys than the real noisy pass sees) and with ragged chunks packed into rows of the longest
    chunk's length, as OARGStep packs them (block-diagonal causal mask). KL(P_clean ||
    P_noisy) has zero gradient at zero noise, so its gradient needs a forward at the noisy
    embeddings: the policy forward cannot serve it exactly."""
    from oar_kernels.importance._common import pack_first_fit

    body, head = model.get_decoder(), model.get_output_embeddings()
    if mode == "last":
        chunks, need = [torch.cat([s.reasoning_ids, s.conclude_ids]) for s in segs], [1] * len(segs)
    else:
        chunks = [torch.cat([s.reasoning_ids, s.conclude_ids, s.answer_ids[:-1]]) for s in segs]
        need = [s.answer_ids.numel() for s in segs]
    q = max(c.numel() for c in chunks)
    bins = pack_first_fit({i: c.numel() for i, c in enumerate(chunks)}, q)
    ids = torch.zeros(len(bins), q, dtype=torch.long)
    pos = torch.zeros(len(bins), q, dtype=torch.long)
    owner = torch.full((len(bins), q), -1, dtype=torch.long)
    rows, cols = [], []
    for k, members in enumerate(bins):
        o = 0
        for i in members:
            n = chunks[i].numel()
            ids[k, o : o + n], pos[k, o : o + n], owner[k, o : o + n] = chunks[i], torch.arange(n), i
            rows += [k] * need[i]
            cols += range(o + n - need[i], o + n)
            o += n
    qi = torch.arange(q)
    allowed = (owner[:, None, :] == owner[:, :, None]) & (qi[None, None, :] <= qi[None, :, None])
    dtype = model.get_input_embeddings().weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    with torch.no_grad():
        x = model.get_input_embeddings()(ids.to(device))
    x.requires_grad_(True)
    h = body(inputs_embeds=x, attention_mask=mask.to(device), position_ids=pos.to(device)).last_hidden_state
    obj = torch.log_softmax(head(h[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]).float(), -1).mean()
    torch.autograd.grad(obj, [x])


def step_fns(model, segs, device, modes=("answer_mean",), three_pass=False, floor=False):
    """{name: fn} of training steps on the same responses: the plain GRPO step, the OAR-G step
    (OARGStep) per mode (exact KL gradient, and linearized where it exists), optionally the
    authors' three-pass procedure and the GRPO step plus chunk_pass (FLOOR)."""
    from oar_kernels.importance import OARGStep

    resps = responses_of(segs)
    inputs = _grpo_inputs(segs, resps, device)
    adv = torch.linspace(-1, 1, len(segs), device=device)
    fns = {GRPO_STEP: lambda: grpo_step(model, inputs, adv)}
    for mode, kl in [(m, "exact") for m in modes] + [(m, "linearized") for m in modes if m != "answer_joint"]:
        def oarg(step=OARGStep(model, mode=mode, kl_grad=kl)):
            loss, _ = step(segs, resps).loss(adv)
            loss.backward()
            model.zero_grad(set_to_none=True)

        fns[f"OAR-G step ({mode})" if kl == "exact" else f"OAR-G step ({mode}, linearized)"] = oarg
    if three_pass:
        def three():
            s, m = gradient_importance_naive(model, segs, "answer_mean")
            w = oar.bilevel_reshape(s, m)
            full = torch.ones(inputs[3].shape, device=device)
            full[:, : w.shape[1]] = w
            grpo_step(model, inputs, adv, full)

        fns[THREE_PASS] = three
    if floor:
        fns[FLOOR] = lambda: (grpo_step(model, inputs, adv), chunk_pass(model, segs, device))
    return fns


# ----------------------------------------------------------------------------- child jobs


TRAINERS = ("GRPOTrainer", "OARGRPOTrainer oar-g", "OARGRPOTrainer oar-p")


def trainer_step(which: str, steps: int, threads: int, hidden: int, layers: int, gens: int, prompts: int,
                 completion: int, device: str) -> dict:
    """Median seconds per optimizer step of one trainer (the first step dropped) on
    python/tiny_setup.py's policy and prompts; same seed and GRPO options for every trainer,
    only the class (and OARConfig's oar_algo) differ. A step is timed between the callbacks
    on_step_begin and on_step_end (generation, rewards, OAR weights, loss, backward, step)."""
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import TrainerCallback

    spec = importlib.util.spec_from_file_location("tiny_setup", os.path.join(harness.ROOT, "python", "tiny_setup.py"))
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)
    tok = ts.char_tokenizer()
    model = ts.tiny_model(tok, hidden_size=hidden, num_layers=layers, seed=0)
    data = Dataset.from_list([{"prompt": q, "answer": a} for q, a in ts.arithmetic_problems(prompts * (steps + 1), seed=0)])

    def reward(completions, answer, **kwargs):
        return [ts.answer_reward(c, a, ts.last_number) for c, a in zip(completions, answer)]

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="oar_bench_trainer_"), per_device_train_batch_size=gens * prompts,
        num_generations=gens, max_completion_length=completion, max_steps=steps, learning_rate=1e-4,
        loss_type="grpo", logging_steps=1, save_strategy="no", report_to="none", bf16=False,
        use_cpu=device == "cpu", gradient_checkpointing=False, seed=0,
    )
    if which == "GRPOTrainer":
        from trl import GRPOConfig, GRPOTrainer

        cls, args = GRPOTrainer, GRPOConfig(**common)
    else:
        from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer

        cls, args = OARGRPOTrainer, OARConfig(**common, oar_algo=which.split()[-1], oar_answer_extractor=ts.last_number)
    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            harness.sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            harness.sync(device)
            times.append(time.perf_counter() - self.t0)

    cls(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok, callbacks=[Clock()]).train()
    return {"step_s": statistics.median(times[1:] or times), "steps": len(times)}


def importance_job(job: dict) -> dict:
    """One measured importance call (kind: oarp, naive_probe, plain_probe, naive_full,
    budget_forward) on a model from job["model"]: {"seconds", "peak_extra_bytes"}."""
    torch.set_num_threads(job["threads"])
    a = job["shape"]
    model = build_model(**job["model"])
    segs = make_segments(a["n"], a["prompt"], a["reasoning"], a["conclude"], a["answer"], job["model"]["vocab"])
    kind, mode = job["kind"], job.get("mode", "last")
    if kind in ("naive_probe", "plain_probe"):
        # Same total length as a real row, only `k` reasoning tokens: k + 1 sequences of that
        # shape, each costing what one sequence of the real run costs.
        segs = [probe_segment(segs[0], job["k"])]
    fns = oarp_fns(model, segs, mode, job["budget"])
    if kind == "budget_forward":
        le = a["prompt"] + a["reasoning"] + a["conclude"] + a["answer"]
        ids = torch.randint(3, job["model"]["vocab"], (max(1, job["budget"] // le), le))

        def fn():
            with torch.no_grad():
                return model.get_decoder()(input_ids=ids).last_hidden_state.sum()
    else:
        fn = fns[{"oarp": "prefix reuse", "plain_probe": "batched naive (prefix_reuse=False)"}.get(kind, "naive oracle")]
    t, mem, out = harness.peak_memory(fn)
    if job.get("save") and isinstance(out, tuple):
        torch.save(out, job["save"])
    return {"seconds": t, "peak_extra_bytes": mem}


def run_job(job: dict) -> dict:
    return trainer_step(**job["args"]) if job["job"] == "trainer" else importance_job(job)


def in_child(job: dict, timeout: float = float("inf")) -> dict:
    """run_job(job) in a fresh process."""
    return harness.run_child([os.path.abspath(__file__), json.dumps(job)], timeout)


if __name__ == "__main__":
    print(json.dumps(run_job(json.loads(sys.argv[1]))))
