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


def check_supported_version(package: str, version: str, lowest: str, first_unsupported: str, allow_env: str,
                            why: str, allow_any=None) -> None:
    """ImportError unless lowest <= version < first_unsupported (the release part; a .dev or rc of
    a supported release counts). With allow_any (default: the environment variable `allow_env`
    set to anything but 0) an unsupported version only warns. why: what breaks across releases,
    said in the message with the install line and the variable."""
    import os

    from packaging.version import InvalidVersion, Version

    if allow_any is None:
        allow_any = os.environ.get(allow_env, "") not in ("", "0")
    try:
        ok = Version(lowest) <= Version(Version(version).base_version) < Version(first_unsupported)
    except InvalidVersion:
        ok = False
    if ok:
        return
    spec = f"{package}>={lowest},<{first_unsupported}"
    message = (f"oar_kernels.integrations.{package} supports {spec}, found {package} {version!r}: {why}. Install a "
               f"supported version (pip install '{spec}'), or set {allow_env}=1 to try this one anyway.")
    if not allow_any:
        raise ImportError(message)
    warnings.warn(message, stacklevel=3)


def require_optional(module: str, extra: str, user: str):
    """`import module`, or ImportError naming the extra that installs it (user: who needs it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{user} needs {module}; install it with: pip install 'oar_kernels[{extra}]'") from err
