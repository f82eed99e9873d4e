"""Raw Triton kernels and their launch helpers (no autograd, no model code).

Import a kernel module only after TRITON_INTERPRET is settled: on a CPU-only machine the
interpreter must be switched on before the first import (tests/conftest.py does this).
"""
from ._interpreter import patch_scalar_index

patch_scalar_index()  # Triton < 3.7's interpreter with numpy >= 2.4 (see _interpreter.py)
