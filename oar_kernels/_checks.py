"""Input validation shared by every public entry point.

Each check raises ValueError naming the argument and what was expected, so bad input fails
at the op boundary instead of as a shape error (or a silent NaN) deep inside a kernel.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fmt_dtypes(dtypes: Iterable[torch.dtype]) -> str:
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(
    name: str,
    value,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Checks a tensor argument; `shape` entries of None match any size."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(value.shape)}")
    if shape is not None:
        if value.dim() != len(shape) or any(
            s is not None and s != v for s, v in zip(shape, value.shape)
        ):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {list(value.shape)}")
    if dtypes is not None and value.dtype not in dtypes:
        raise ValueError(f"{name}: expected dtype {_fmt_dtypes(dtypes)}, got {value.dtype}")
    if device is not None and value.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {value.device}")
    if finite and value.is_floating_point() and value.numel() and not torch.isfinite(value).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return value


def check_mask(name: str, mask, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """A bool mask with exactly the shape and device of `like`."""
    check_tensor(name, mask, dtypes=(torch.bool,))
    if mask.shape != like.shape:
        raise ValueError(
            f"{name}: expected the shape of {like_name} {list(like.shape)}, got {list(mask.shape)}"
        )
    if mask.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device} like {like_name}, got {mask.device}")
    return mask


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_number(
    name: str,
    value,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """A finite real (or integer) within [lo, hi]; `*_open` makes that end exclusive."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name}: expected a value {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name}: expected a value {'<' if hi_open else '<='} {hi}, got {value!r}")
