"""Keeps Triton's CPU interpreter usable with the numpy it meets.

Before Triton 3.7 the interpreter turns a scalar (every plain int argument is held as a
one-element array) into a Python int with int(array), which numpy >= 2.4 refuses ("only
0-dimensional arrays can be converted to Python scalars"): every `range` over a runtime bound
then fails (triton-lang/triton issue 9171, fixed in 3.7). Where that pairing is found, the
conversion takes the array's single element instead. Compiled GPU kernels never go through the
interpreter and are untouched.
"""
from __future__ import annotations

import os


def _version(text: str) -> tuple:
    import re

    return tuple(int(m.group(0)) if (m := re.match(r"\d+", p)) else 0 for p in text.split("+")[0].split(".")[:3])


def patch_scalar_index() -> bool:
    """Applies the conversion fix when the interpreter is on and needs it; True if applied."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    import numpy as np
    import triton
    from triton.runtime import interpreter

    if _version(triton.__version__) >= (3, 7) or _version(np.__version__) < (2, 4):
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_oar_scalar_index", False):
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patch_lang_tensor._oar_scalar_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True
