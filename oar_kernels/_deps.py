"""The versions of optional and ranged dependencies this package supports, checked where first
needed, so that a missing or unsupported one gives one message that says what to install
instead of a traceback from inside the dependency.

The ranges mirror setup.py's install_requires (its docstring says why each bound is there).
"""
from __future__ import annotations

import functools
import re
import warnings
from importlib import metadata
from typing import Tuple

TRANSFORMERS_RANGE = ((4, 56), (6, 0))  # [lowest, first unsupported)
TRANSFORMERS_SPEC = "transformers>={}.{},<{}".format(*TRANSFORMERS_RANGE[0], TRANSFORMERS_RANGE[1][0])


def _release(version: str) -> Tuple[int, ...]:
    """'5.24.0.dev0' -> (5, 24, 0): the numeric release part only."""
    parts = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


@functools.lru_cache(maxsize=None)
def require_transformers() -> str:
    """The installed transformers version; ImportError naming the supported range otherwise."""
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        raise ImportError(f"oar_kernels needs transformers for this: pip install '{TRANSFORMERS_SPEC}'") from None
    lo, hi = TRANSFORMERS_RANGE
    if not lo <= _release(version)[:2] < hi:
        raise ImportError(f"oar_kernels supports {TRANSFORMERS_SPEC}, found transformers {version}: "
                          f"pip install '{TRANSFORMERS_SPEC}'")
    return version


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def warn_cuda_without_triton() -> None:
    """Once per process: CUDA tensors while triton is missing run on the (slower) torch path."""
    warnings.warn("oar_kernels: triton is not installed, so CUDA tensors take the torch path (correct, but slower "
                  "than the fused kernels): pip install triton", RuntimeWarning, stacklevel=4)
