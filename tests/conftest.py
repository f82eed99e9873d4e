"""Test-wide setup.

Triton's interpreter must be switched on before any kernel module is imported, so it is set
here, at collection time, on machines without a GPU (CI). On a GPU machine the kernels are
compiled and run for real instead.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run on 2 shared cores: more threads only adds contention.
torch.set_num_threads(min(2, torch.get_num_threads()))
