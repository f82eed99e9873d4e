"""The LM-head ops and the public alternatives a user would pick instead, as fwd+bwd closures.

Shared by benchmarks/gpu_check.py (CUDA) and benchmarks/bench_baselines.py (CPU). Each entry
computes per-token log-probs of the targets (optionally the entropy) from hidden [N, D] and
the head weight [V, D], then the gradients of sum(logp * g) (+ sum(entropy * g2)) with respect
to hidden and weight, or a GRPO loss and its gradients:

  logprob   oar       oar.fused_linear_logprob (backend auto: Triton on CUDA, chunked torch on
                      CPU; `backend` chooses); "oar:fused" / "oar:chunked" choose its forward_mode
            trl       trl.kernels.chunked_logprob.ChunkedLogProbFunction (TRL's own chunk size)
            liger     liger_kernel LigerFusedLinearScaledCrossEntropyFunction (logp = -nll), or on
                      sm_90 without cutlass its Triton path (see liger_logprob); "liger:scaled",
                      "liger:triton", "liger:fallback" force one path
            cce       cut_cross_entropy.linear_cross_entropy, exact (filter_eps=None), no entropy;
                      its CCE kernels on CUDA, its torch.compile path on CPU
            eager     materialized fp32 logits, log_softmax, gather
            compiled  the eager function under torch.compile
  grpo      oar       oar.fused_linear_grpo_loss
            liger     liger_kernel LigerFusedLinearGRPOLoss, compiled=True as its users run it
            trl+oar   TRL's ChunkedLogProbFunction log-probs + oar.grpo_loss
            eager     materialized logits + oar.grpo_loss; compiled: under torch.compile

make_*(...) returns {name: fn} for the baselines that can be had here and {name: reason} for the
ones that cannot (not installed, no entropy, ...): a missing baseline is reported, not fatal. A
closure may carry a `note` attribute saying which of a library's paths it runs. A baseline can
still fail when called (a torch.compile error, a kernel its library cannot build here): callers
report that as missing too.
"""
from __future__ import annotations

import importlib.util

import torch

LOGPROB = ("oar", "trl", "liger", "cce", "eager", "compiled")
GRPO = ("oar", "liger", "trl+oar", "eager", "compiled")


def _eager_logprob(h, w, t, entropy):
    z = (h @ w.t()).float()
    logp_all = torch.log_softmax(z, dim=-1)
    lp = logp_all.gather(1, t[:, None]).squeeze(1)
    if not entropy:
        return lp, None
    return lp, -(logp_all.exp() * logp_all).sum(-1)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


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


def make_logprob(h, w, t, g, g2=None, entropy=False, names=LOGPROB, trl_chunk=None, backend="auto", grad=True):
    """Closures for per-token log-probs (and entropy): {name: fn}, {name: why missing}.
    grad: each fn returns the gradients of sum(logp * g) (+ sum(entropy * g2)) w.r.t. hidden and
    weight (fwd+bwd); False: the forward alone under no_grad, fn returning (logp, entropy or None)."""
    import oar_kernels as oar

    fns, missing = {}, {}

    def finish(lp, ent):
        if not grad:
            return lp, ent
        loss = (lp.float() * g).sum()
        if entropy:
            loss = loss + (ent.float() * g2).sum()
        return torch.autograd.grad(loss, (h, w))

    for name in names:
        if name.split(":")[0] == "oar":
            def run_oar(mode=name.partition(":")[2] or None):
                out = oar.fused_linear_logprob(h, w, t, return_entropy=entropy, backend=backend, forward_mode=mode)
                return finish(*(out if entropy else (out, None)))
            fns[name] = run_oar
    if "trl" in names:
        try:
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction

            try:
                from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as chunk
            except ImportError:
                chunk = 32768
            chunk = trl_chunk or chunk
            outputs = ("entropy",) if entropy else ()

            def run_trl():
                res = ChunkedLogProbFunction.apply(h, w, None, t, 1.0, chunk, None, 1.0, outputs)
                return finish(res[0], res[1])
            fns["trl"] = run_trl
        except Exception as e:  # noqa: BLE001
            missing["trl"] = f"{type(e).__name__}: {e}"[:120]
    for name in names:
        if name.split(":")[0] != "liger":
            continue
        try:
            fn, note = liger_logprob(h, w, t, entropy, name.partition(":")[2] or "auto")

            def run_liger(fn=fn):
                res = fn()
                nll, ent = (res if entropy else (res, None))
                return finish(-nll, ent)
            run_liger.note = note
            fns[name] = run_liger
        except Exception as e:  # noqa: BLE001
            missing[name] = f"{type(e).__name__}: {e}"[:120]
    if "cce" in names:
        if entropy:
            missing["cce"] = "no entropy output"
        else:
            try:
                from cut_cross_entropy import linear_cross_entropy

                impl = "cce" if h.is_cuda else "torch_compile"  # the CCE kernels need a GPU

                def run_cce():
                    nll = linear_cross_entropy(h, w, t, reduction="none", filter_eps=None, impl=impl)
                    return finish(-nll, None)
                fns["cce"] = run_cce
            except Exception as e:  # noqa: BLE001
                missing["cce"] = f"{type(e).__name__}: {e}"[:120]
    if "eager" in names:
        fns["eager"] = lambda: finish(*_eager_logprob(h, w, t, entropy))
    if "compiled" in names:
        try:
            comp = torch.compile(_eager_logprob, dynamic=False)
            fns["compiled"] = lambda: finish(*comp(h, w, t, entropy))
        except Exception as e:  # noqa: BLE001
            missing["compiled"] = f"{type(e).__name__}: {e}"[:120]
    if not grad:
        fns = {k: torch.no_grad()(fn) for k, fn in fns.items()}
    return fns, missing


def make_grpo(h3, w, t2, old, adv, mask, names=GRPO, liger_compiled=True, backend="auto"):
    """fwd+bwd closures for the GRPO loss (loss_type "grpo", beta 0) from the LM head."""
    import oar_kernels as oar

    B, T, D = h3.shape
    fns, missing = {}, {}
    t1 = t2.reshape(-1)

    def grads(loss):
        return torch.autograd.grad(loss, (h3, w))

    if "oar" in names:
        fns["oar"] = lambda: grads(oar.fused_linear_grpo_loss(h3, w, t2, old, adv, mask, backend=backend)[0])
    if "liger" in names:
        try:
            from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss

            lig = LigerFusedLinearGRPOLoss(beta=0.0, compiled=liger_compiled, use_ref_model=False, loss_type="grpo")
            fns["liger"] = lambda: grads(lig(h3, w, t2, mask.float(), adv, old_per_token_logps=old)[0])
        except Exception as e:  # noqa: BLE001
            missing["liger"] = f"{type(e).__name__}: {e}"[:120]
    if "trl+oar" in names:
        try:
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction

            try:
                from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as chunk
            except ImportError:
                chunk = 32768

            def run_trl():
                lp = ChunkedLogProbFunction.apply(h3.reshape(B * T, D), w, None, t1, 1.0, chunk, None, 1.0, ())[0]
                return grads(oar.grpo_loss(lp.view(B, T).float(), old, adv, mask)[0])
            fns["trl+oar"] = run_trl
        except Exception as e:  # noqa: BLE001
            missing["trl+oar"] = f"{type(e).__name__}: {e}"[:120]

    def eager(h3_, w_):
        lp, _ = _eager_logprob(h3_.reshape(B * T, D), w_, t1, False)
        return oar.grpo_loss(lp.view(B, T), old, adv, mask)[0]

    if "eager" in names:
        fns["eager"] = lambda: grads(eager(h3, w))
    if "compiled" in names:
        try:
            comp = torch.compile(eager, dynamic=False)
            fns["compiled"] = lambda: grads(comp(h3, w))
        except Exception as e:  # noqa: BLE001
            missing["compiled"] = f"{type(e).__name__}: {e}"[:120]
    return fns, missing
