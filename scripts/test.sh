#!/usr/bin/env bash
# Installs the project with its test extras and runs the whole test suite. This is the
# README's test line and what CI runs (in a fresh virtual environment: .ci/run). torch is
# installed first, and only where it is missing, so an existing build (CPU or CUDA) is kept
# and no CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
python -m pip list 2>/dev/null | grep -iE "^(torch|triton|transformers|trl|liger.kernel|pytest|pytest.benchmark) " || true
python -m pytest -q tests "$@"
