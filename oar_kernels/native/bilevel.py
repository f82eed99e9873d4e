"""oar.bilevel_reshape's CPU kernel: bilevel.c through ctypes, rows split over threads."""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from ._lib import load

_PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, thread hand-off costs more than it saves
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0


def _lib():
    lib = load("bilevel")
    if lib is not None and not getattr(lib, "_oar_typed", False):
        f = lib.oar_bilevel_rows
        p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        f.argtypes = [p, p, p, i64, i64, i64, f32, f32, f32, ctypes.c_int, p]
        f.restype = ctypes.c_int
        lib._oar_typed = True
    return lib


def available() -> bool:
    """True when the install built the C kernel and OAR_KERNELS_NATIVE does not switch it off."""
    return _lib() is not None


def _threads(n_tasks: int) -> int:
    return max(1, min(torch.get_num_threads(), n_tasks))


def _executor(size: int) -> ThreadPoolExecutor:
    """A pool of `size` threads, made again after a fork (a forked child inherits the pool
    object but none of its threads, and would wait forever on it)."""
    global _pool, _pool_size, _pool_pid
    if _pool is None or _pool_size != size or _pool_pid != os.getpid():
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="oar-native")
        _pool_size, _pool_pid = size, os.getpid()
    return _pool


class NonFiniteScores(ValueError):
    """A NaN or Inf score at a masked position (found by the kernel while it reads them)."""


def bilevel_reshape_native(scores, mask, tau, beta, floor, sum_to_len) -> torch.Tensor:
    """Same contract as reference.bilevel_reshape_reference for CPU scores (computed in
    float32 whatever their dtype). Shapes and parameters are assumed checked by the op; the
    finiteness of masked scores is checked here, in the kernel's own pass over them."""
    lib = _lib()
    if lib is None:
        raise RuntimeError("the native bilevel kernel is not available (no C compiler, or switched off)")
    x = scores.detach().to(torch.float32).contiguous()
    m = mask.contiguous().view(torch.uint8)
    B, T = x.shape
    out = torch.empty((B, T), dtype=torch.float32)
    if B == 0 or T == 0:
        return out
    fn = lib.oar_bilevel_rows
    args = (x.data_ptr(), m.data_ptr(), out.data_ptr(), T)
    params = (float(tau), float(beta), float(floor), int(bool(sum_to_len)))

    def run(r0: int, r1: int) -> int:
        scratch = torch.empty(4 * T + 520, dtype=torch.float32)
        return fn(*args, r0, r1, *params, scratch.data_ptr())

    n = _threads(B) if B * T >= _PARALLEL_MIN_ELEMENTS else 1
    # n equal row ranges, the first on this thread: ragged rows average out over many rows,
    # and each hand-off to the pool costs tens of microseconds.
    bounds = [B * k // n for k in range(n + 1)]
    futures = [_executor(n - 1).submit(run, bounds[k], bounds[k + 1]) for k in range(1, n)] if n > 1 else []
    failed = run(bounds[0], bounds[1])
    for f in futures:
        failed |= f.result()
    if failed:
        raise NonFiniteScores("scores: contains NaN or Inf at masked positions")
    return out
