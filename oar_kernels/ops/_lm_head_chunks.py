"""The chunk loops of the LM-head ops: logits formed one block at a time, never [N, V] at once.

Three loops, each over blocks of one fp32 logits buffer of at most CHUNK_BYTES:

* `forward_stats`: row chunks -> (logp, entropy, lse). The torch path's forward and the Triton
  backend's "chunked" forward (cuBLAS logits + the row-stats kernel).
* `gradients`: d hidden, d weight, d bias given each row's lse and d loss / d logp (the
  backward of fused_linear_logprob). It walks the axis whose gradient is the smaller one to
  accumulate: over vocabulary blocks (the usual N <= V) every block of d weight is written
  once, in the weight's dtype, from one GEMM over all rows, and only d hidden [N, D] (fp32) is
  accumulated; over row chunks (N > V) d hidden is written once and d weight [V, D] (fp32) is
  accumulated. Each pass is exact to fp32 accumulation; it reads and rewrites the accumulator
  once per block, so the smaller accumulator moves the fewest bytes (at N=8192 D=4096
  V=131072 bf16: 8 x 256 MB for d hidden against 8 x 4 GB for an fp32 d weight).
* `loss_pass`: one pass over row chunks where each chunk's logits give the log-probs, the
  caller turns them into d loss / d logp (fused_linear_grpo_loss: the loss is a scalar, so its
  gradient is known in the forward), and the same block becomes gradients: 3 GEMMs, no
  recomputation.

On CUDA with the Triton backend, 16-bit operands go straight into cuBLAS (fp32 output written
into the logits buffer itself where torch can, fp32 accumulation of d hidden / d weight into
their buffers); the torch path computes in fp32 (fp64 for fp64 inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ._lm_head_torch import block_dlogits, block_stats

# Bytes of one fp32 logits block, per device type. Small on CPU so the block stays in cache;
# larger on GPU so the chunk GEMMs run at full rate. Tests lower these to force many blocks.
CHUNK_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}


def _block_len(n_other: int, n_total: int, device: torch.device) -> int:
    """Rows (or columns) of one fp32 block whose other side is n_other long."""
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"])
    n = max(1, budget // max(1, 4 * n_other))
    if n >= 64:
        n = n // 32 * 32
    return max(1, min(n_total, n))


def chunk_rows(n_rows: int, vocab: int, device: torch.device) -> int:
    """Rows of one [rows, vocab] fp32 logits block."""
    return _block_len(vocab, n_rows, device)


def chunk_cols(n_rows: int, vocab: int, device: torch.device) -> int:
    """Vocabulary columns of one [n_rows, cols] fp32 logits block."""
    return _block_len(n_rows, vocab, device)


def grad_axis(n_rows: int, vocab: int) -> str:
    """The axis `gradients` walks: the one whose accumulated gradient is smaller."""
    return "vocab" if n_rows <= vocab else "rows"


@dataclass(frozen=True)
class LMHead:
    """One LM-head problem: logits = (hidden @ weight.T + bias) / temperature, validated."""

    hidden: torch.Tensor  # [N, D]
    weight: torch.Tensor  # [V, D]
    bias: Optional[torch.Tensor]  # [V]
    targets: torch.Tensor  # [N]
    temperature: float
    use_triton: bool

    @property
    def cd(self) -> torch.dtype:  # compute dtype of logits and accumulators
        return torch.float64 if self.hidden.dtype == torch.float64 else torch.float32

    @property
    def native_gemm(self) -> bool:  # 16-bit operands straight into cuBLAS
        return self.use_triton and self.hidden.is_cuda

    @property
    def inv_t(self) -> float:
        return 1.0 / self.temperature

    def operand(self, x: torch.Tensor) -> torch.Tensor:
        """x as a GEMM operand: as it is for cuBLAS, else in the compute dtype."""
        return x if self.native_gemm else x.to(self.cd)


# ----------------------------------------------------------------------------- GEMM helpers

_F32_MM: dict = {}


def _probe_f32_gemm(device: torch.device, dtype: torch.dtype):
    """(fp32-output mm and addmm work, mm also writes into a given out=) for 16-bit operands,
    checked once per device and dtype on a small product."""
    key = (str(device), dtype)
    if key not in _F32_MM:
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(64, 48, generator=g).to(device, dtype)
        b = torch.randn(48, 80, generator=g).to(device, dtype)
        want = a.float() @ b.float()

        def close(x):
            return bool(x.dtype == torch.float32 and torch.allclose(x, want, atol=1e-3, rtol=1e-3))

        ok = into = False
        try:
            acc = torch.zeros(64, 80, device=device)
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            ok = close(torch.mm(a, b, out_dtype=torch.float32)) and close(acc)
            got = torch.empty(64, 80, device=device)
            torch.mm(a, b, out_dtype=torch.float32, out=got)
            into = ok and close(got)
        except Exception:  # older torch, or no fp32-output GEMM for this backend
            pass
        _F32_MM[key] = (ok, into)
    return _F32_MM[key]


def f32_gemm_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch.mm / torch.addmm take out_dtype=float32 for 16-bit operands here."""
    return _probe_f32_gemm(device, dtype)[0]


def mm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b, out contiguous. 16-bit a, b into an fp32 out: cuBLAS writes fp32 straight
    into out where torch can (no temporary, logits not rounded to 16 bits); else into a
    temporary that is copied; else the 16-bit product is upcast."""
    if a.dtype == out.dtype:
        return torch.mm(a, b, out=out)
    ok, into = _probe_f32_gemm(a.device, a.dtype)
    if into:
        return torch.mm(a, b, out_dtype=out.dtype, out=out)
    return out.copy_(torch.mm(a, b, out_dtype=out.dtype) if ok else torch.mm(a, b))


def addmm_acc_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc fp32/fp64 whatever the operands' dtype (cuBLAS accumulates into
    acc itself where it can: no [.., D] temporary)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif f32_gemm_ok(a.device, a.dtype):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc.add_(torch.mm(a, b))


def _flat_view(buf: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous [rows, cols] view of the front of a flat buffer (GEMMs write into it)."""
    return buf[: rows * cols].view(rows, cols)


def _logits(h_mm, w_mm, bias, buf) -> torch.Tensor:
    """Raw logits h_mm @ w_mm.T (+ bias) written into the front of the flat buffer buf."""
    z = _flat_view(buf, h_mm.shape[0], w_mm.shape[0])
    mm_into(h_mm, w_mm.t(), z)
    if bias is not None:
        z.add_(bias)
    return z


def _view(buf, rows, cols):
    return None if buf is None else _flat_view(buf, rows, cols)


# ----------------------------------------------------------------------------- forward


def forward_stats(head: LMHead, entropy: bool):
    """Row chunks -> (logp, entropy or None, lse), each [N] in the compute dtype."""
    hidden, weight, targets = head.hidden, head.weight, head.targets
    N, V, dev, cd = hidden.shape[0], weight.shape[0], hidden.device, head.cd
    rows = chunk_rows(N, V, dev)
    w_mm = head.operand(weight)
    bias = None if head.bias is None else head.bias.to(cd)
    logp = torch.empty(N, device=dev, dtype=cd)
    ent = torch.empty(N, device=dev, dtype=cd) if entropy else None
    lse = torch.empty(N, device=dev, dtype=cd)
    zbuf, _, scratch = _buffers(head, rows, V, entropy, grads=False)
    for start in range(0, N, rows):
        sl = slice(start, min(N, start + rows))
        n = sl.stop - sl.start
        z = _logits(head.operand(hidden[sl]), w_mm, bias, zbuf)
        if head.use_triton:
            from ..kernels.linear_logprob import chunk_stats

            zt, lse_c, ent_c = chunk_stats(z, targets[sl], head.temperature, entropy)
        else:
            if head.inv_t != 1.0:
                z.mul_(head.inv_t)
            zt, lse_c, ent_c = block_stats(z, targets[sl], entropy, _view(scratch, n, V), keep=False)
        lse[sl] = lse_c
        logp[sl] = zt - lse_c
        if entropy:
            ent[sl] = ent_c
    return logp, ent, lse


# ----------------------------------------------------------------------------- gradients


class _Grads:
    """Gradient buffers of one pass; which are accumulated depends on the axis walked."""

    def __init__(self, head: LMHead, axis: str, need_dh: bool, need_dw: bool, need_db: bool):
        N, D = head.hidden.shape
        V, dev, cd = head.weight.shape[0], head.hidden.device, head.cd
        # over vocabulary blocks d hidden is a sum (fp32); over row chunks d weight and d bias are
        self.dh = (torch.zeros((N, D), device=dev, dtype=cd) if axis == "vocab"
                   else torch.empty((N, D), device=dev, dtype=head.hidden.dtype)) if need_dh else None
        self.dw = ((torch.empty if N else torch.zeros)((V, D), device=dev, dtype=head.weight.dtype) if axis == "vocab"
                   else torch.zeros((V, D), device=dev, dtype=cd)) if need_dw else None
        self.db = torch.zeros((V,), device=dev, dtype=cd) if need_db else None
        self.any = need_dh or need_dw or need_db

    def add_row_chunk(self, dz, sl, h_c, w_mm):
        """dz [n, V] of rows sl: d hidden rows written, d weight and d bias accumulated."""
        if self.dh is not None:
            if dz.dtype == self.dh.dtype:
                torch.mm(dz, w_mm, out=self.dh[sl])
            else:
                self.dh[sl] = torch.mm(dz, w_mm)
        if self.dw is not None:
            addmm_acc_(self.dw, dz.t(), h_c if dz.dtype == h_c.dtype else h_c.to(dz.dtype))
        if self.db is not None:
            self.db.add_(dz.sum(dim=0, dtype=self.db.dtype))

    def add_vocab_block(self, dz, cols, h_mm, w_blk):
        """dz [N, v] of vocabulary columns cols: d weight rows written once, d hidden accumulated."""
        if self.dh is not None:
            addmm_acc_(self.dh, dz, w_blk if dz.dtype == w_blk.dtype else w_blk.to(dz.dtype))
        if self.dw is not None:
            h = h_mm if dz.dtype == h_mm.dtype else h_mm.to(dz.dtype)
            if self.dw.dtype == dz.dtype:
                torch.mm(dz.t(), h, out=self.dw[cols])
            else:  # torch path, 16-bit weight: the fp32 product rounded once
                self.dw[cols] = torch.mm(dz.t(), h)
        if self.db is not None:
            self.db[cols] = dz.sum(dim=0, dtype=self.db.dtype)


def _dlogits(head: LMHead, z, t, lse, g, g_ent, ent, out, scratch, col0, scaled=False):
    """d loss / d raw logits of the logits block z (bias added; divided by the temperature
    already when scaled, which only the torch path does)."""
    if head.use_triton:
        from ..kernels.linear_logprob import chunk_dlogits

        return chunk_dlogits(z, z if out is None else out, t, lse, g, head.temperature, g_ent, ent, col0=col0 or 0)
    if head.inv_t != 1.0 and not scaled:
        z.mul_(head.inv_t)
    return block_dlogits(z, t, lse, g, head.inv_t, g_ent, ent, scratch, col0=col0)


def _grad_dtype(head: LMHead) -> torch.dtype:
    return torch.float32 if head.use_triton else head.cd


def gradients(head: LMHead, lse, g_logp, g_ent=None, ent=None, *, need_dh=True, need_dw=True, need_db=False,
              axis: Optional[str] = None):
    """(d hidden, d weight, d bias) of sum(g_logp * logp + g_ent * entropy), in the dtypes of
    hidden, weight and bias (None where not needed). lse, ent: the forward's statistics."""
    N, V = head.hidden.shape[0], head.weight.shape[0]
    axis = axis or grad_axis(N, V)
    grads = _Grads(head, axis, need_dh, need_dw, need_db and head.bias is not None)
    gd = _grad_dtype(head)
    g_logp = g_logp.to(gd).contiguous()
    lse = lse.to(gd).contiguous()
    if g_ent is not None:
        g_ent, ent = g_ent.to(gd).contiguous(), ent.to(gd).contiguous()
    if N and grads.any:
        (_vocab_pass if axis == "vocab" else _row_pass)(head, grads, lse, g_logp, g_ent, ent)
    dh = None if grads.dh is None else grads.dh.to(head.hidden.dtype)
    dw = None if grads.dw is None else grads.dw.to(head.weight.dtype)
    db = None if grads.db is None else grads.db.to(head.bias.dtype)
    return dh, dw, db


def _buffers(head: LMHead, n: int, v: int, entropy: bool, grads: bool = True):
    """The flat logits buffer, the 16-bit d logits buffer (cuBLAS operands of the gradient
    GEMMs) and the torch path's scratch for one block of n x v."""
    dev, cd = head.hidden.device, head.cd
    zbuf = torch.empty(n * v, device=dev, dtype=cd)
    half = head.native_gemm and head.hidden.dtype != cd
    dzbuf = torch.empty(n * v, device=dev, dtype=head.hidden.dtype) if (grads and half) else None
    scratch = torch.empty(n * v, device=dev, dtype=cd) if (entropy and not head.use_triton) else None
    return zbuf, dzbuf, scratch


def _vocab_pass(head: LMHead, grads: _Grads, lse, g, g_ent, ent):
    hidden, weight, targets = head.hidden, head.weight, head.targets
    N, V = hidden.shape[0], weight.shape[0]
    cols = chunk_cols(N, V, hidden.device)
    h_mm = head.operand(hidden)
    zbuf, dzbuf, scratch = _buffers(head, N, cols, g_ent is not None)
    for v0 in range(0, V, cols):
        vs = slice(v0, min(V, v0 + cols))
        v = vs.stop - vs.start
        w_blk = head.operand(weight[vs])
        z = _logits(h_mm, w_blk, None if head.bias is None else head.bias[vs].to(head.cd), zbuf)
        dz = _dlogits(head, z, targets, lse, g, g_ent, ent, _view(dzbuf, N, v), _view(scratch, N, v), v0)
        grads.add_vocab_block(dz, vs, h_mm, w_blk)


def _row_pass(head: LMHead, grads: _Grads, lse, g, g_ent, ent):
    hidden, weight, targets = head.hidden, head.weight, head.targets
    N, V = hidden.shape[0], weight.shape[0]
    rows = chunk_rows(N, V, hidden.device)
    w_mm = head.operand(weight)
    bias = None if head.bias is None else head.bias.to(head.cd)
    zbuf, dzbuf, scratch = _buffers(head, rows, V, g_ent is not None)
    for start in range(0, N, rows):
        sl = slice(start, min(N, start + rows))
        n = sl.stop - sl.start
        h_c = head.operand(hidden[sl])
        z = _logits(h_c, w_mm, bias, zbuf)
        dz = _dlogits(head, z, targets[sl], lse[sl], g[sl], None if g_ent is None else g_ent[sl],
                      None if ent is None else ent[sl], _view(dzbuf, n, V), _view(scratch, n, V), None)
        grads.add_row_chunk(dz, sl, h_c, w_mm)


# ----------------------------------------------------------------------------- loss pass


def loss_pass(head: LMHead, loss_grad: Callable[[slice, torch.Tensor], Optional[torch.Tensor]], *,
              need_dh=True, need_dw=True, need_db=False):
    """One pass over row chunks for a scalar loss of the log-probs: each chunk's logits give
    logp[sl], loss_grad(sl, logp[sl]) gives d loss / d logp[sl] (None: log-probs only), and
    the same logits block becomes gradients.

    Returns (logp [N], d hidden, d weight, d bias): logp in the compute dtype, d hidden in
    hidden's dtype, d weight and d bias in the compute dtype (fp32 accumulators)."""
    hidden, weight, targets = head.hidden, head.weight, head.targets
    N, V, cd = hidden.shape[0], weight.shape[0], head.cd
    rows = chunk_rows(N, V, hidden.device)
    grads = _Grads(head, "rows", need_dh, need_dw, need_db and head.bias is not None)
    w_mm = head.operand(weight)
    bias = None if head.bias is None else head.bias.to(cd)
    logp = torch.empty(N, device=hidden.device, dtype=cd)
    zbuf, dzbuf, scratch = _buffers(head, rows, V, True)  # the torch stats keep z: scratch
    gd = _grad_dtype(head)
    for start in range(0, N, rows):
        sl = slice(start, min(N, start + rows))
        n = sl.stop - sl.start
        h_c = head.operand(hidden[sl])
        t_c = targets[sl]
        z = _logits(h_c, w_mm, bias, zbuf)
        if head.use_triton:
            from ..kernels.linear_logprob import chunk_stats

            zt, lse_c, _ = chunk_stats(z, t_c, head.temperature, False)
        else:
            if head.inv_t != 1.0:
                z.mul_(head.inv_t)
            zt, lse_c, _ = block_stats(z, t_c, False, _view(scratch, n, V), keep=True)
        logp[sl] = zt.to(cd) - lse_c.to(cd)
        g = loss_grad(sl, logp[sl]) if grads.any else None
        if g is None:
            continue
        dz = _dlogits(head, z, t_c, lse_c.to(gd).contiguous(), g.to(gd).contiguous(), None, None,
                      _view(dzbuf, n, V), None, None, scaled=not head.use_triton)
        grads.add_row_chunk(dz, sl, h_c, w_mm)
    return logp, grads.dh, grads.dw, grads.db
