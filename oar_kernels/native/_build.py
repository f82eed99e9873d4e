"""Builds and loads the project's plain-C CPU kernels on first use, then caches the library.

Why C through ctypes rather than a torch C++ extension: the sources need no Python or torch
headers, so any C compiler builds them in well under a second, the library does not depend on
the torch ABI, and ctypes releases the GIL during a call, so row ranges can run on several
Python threads.

The shared library is written to <cache>/native/<name>-<hash>.so, where the hash covers the
source, the compiler command and the platform; it is built into a temporary file and renamed,
so concurrent processes never load a half-written library. No compiler, a failed build, or
OAR_KERNELS_NATIVE=0 in the environment: load() returns None (with one warning for a failed
build) and callers use their torch path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional

ENV_SWITCH = "OAR_KERNELS_NATIVE"
_HERE = Path(__file__).parent
_FLAGS = ["-O3", "-fPIC", "-shared", "-std=c99", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
_lock = threading.Lock()
_loaded: Dict[str, Optional[ctypes.CDLL]] = {}


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _compiler() -> Optional[list]:
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cache_dir() -> Path:
    from ..models.policy import default_cache_dir

    return Path(default_cache_dir()) / "native"


def load(name: str) -> Optional[ctypes.CDLL]:
    """The compiled library of oar_kernels/native/<name>.c, or None when it cannot be had."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        if enabled() and sys.platform != "win32":
            try:
                lib = _build_and_load(name)
            except Exception as e:  # a missing or broken toolchain must not break the library
                warnings.warn(
                    f"oar_kernels: could not build the native CPU kernel {name!r} ({e}); "
                    f"falling back to the torch path. Set {ENV_SWITCH}=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _loaded[name] = lib
        return lib


def _build_and_load(name: str) -> Optional[ctypes.CDLL]:
    cc = _compiler()
    if cc is None:
        return None  # no compiler at all: a normal situation, the torch path is used quietly
    source = (_HERE / f"{name}.c").read_bytes()
    key = hashlib.sha256(
        source + repr((cc, _FLAGS, platform.machine(), platform.system(), sys.implementation.cache_tag)).encode()
    ).hexdigest()[:16]
    out_dir = _cache_dir()
    target = out_dir / f"{name}-{key}.so"
    if not target.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            cmd = [*cc, *_FLAGS, "-o", tmp, str(_HERE / f"{name}.c"), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if res.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed: {res.stderr.strip()[-500:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return ctypes.CDLL(str(target))
