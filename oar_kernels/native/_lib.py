"""Loads the project's plain-C CPU kernels, built from csrc/ when the package was installed.

Why C through ctypes rather than a torch C++ extension: the sources need no Python or torch
headers, so any C compiler builds them in well under a second, the library does not depend on
the torch ABI, and ctypes releases the GIL during a call, so row ranges can run on several
Python threads.

setup.py builds csrc/<name>.c into this folder as _<name> + the extension suffix (a setuptools
Extension marked optional: it holds no Python module, only C symbols for ctypes). Nothing is
compiled at run time, so a read-only install works. No library (no compiler at install time,
a failed build, a platform without one) or OAR_KERNELS_NATIVE=0 in the environment: load()
returns None and callers use their torch path.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import threading
from pathlib import Path
from typing import Dict, Optional

ENV_SWITCH = "OAR_KERNELS_NATIVE"
_HERE = Path(__file__).parent
_lock = threading.Lock()
_loaded: Dict[str, Optional[ctypes.CDLL]] = {}


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def library_path(name: str) -> Optional[Path]:
    """The installed library of csrc/<name>.c, or None when the install built none."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"_{name}{suffix}"
        if path.is_file():
            return path
    return None


def load(name: str) -> Optional[ctypes.CDLL]:
    """The loaded library of csrc/<name>.c, or None when it is absent or switched off."""
    with _lock:
        if name not in _loaded:
            path = library_path(name) if enabled() else None
            _loaded[name] = ctypes.CDLL(str(path)) if path is not None else None
        return _loaded[name]
