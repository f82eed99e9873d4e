"""Test-wide setup.

Triton's interpreter must be switched on before any kernel module is imported, so it is set
here, at collection time, on machines without a GPU (CI). On a GPU machine the kernels are
compiled and run for real instead.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Test tensors are small: one thread avoids thread-pool overhead and contention on the
# 2-core CI machine (measured 10-20x faster for tiny-model forwards than 2 threads under load).
torch.set_num_threads(1)


import random
import zlib

import pytest


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """Each test gets its own reproducible seed (from its id), so random inputs do not depend
    on which tests ran before it, and a failure reproduces when the test is run alone."""
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    torch.manual_seed(seed)
    yield
