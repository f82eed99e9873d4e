#!/usr/bin/env bash
# Rehearses the GPU machine's image on a CPU machine: builds a virtual environment at $1 with
# that image's package set, so `python -m pytest --co -q -m kernels tests/` (collection) and
# `TRITON_INTERPRET=1 python -m pytest -q -m kernels tests/` (the kernels in Triton's
# interpreter) can be tried before the GPU run (`pytest --gpu -m kernels tests/`).
#
# The GPU image has: Python 3.12, torch 2.11 (CUDA), Triton 3.6.0, transformers 5.17.0,
# numpy 2.5.x, accelerate, pytest, pytest-benchmark; and NOT liger-kernel, trl,
# cut-cross-entropy, datasets, reasoning-gym. What differs here:
# - Python: whatever `python3` is (torch's CPU wheel must exist for it);
# - torch: the CPU build of 2.13.0 (no CPU build of 2.11 is installable here);
# - numpy: the newest 2.5.x, else the newest 2.4.x (the pin below takes the newest < 2.6).
# The project is installed without its extras, plus its plain install_requires.
#
# Triton 3.6.0's interpreter turns a loop bound into an int with int() on a one-element array,
# which numpy >= 2.4 refuses (triton-lang/triton#9171, fixed in Triton 3.7.0); the package
# works around it when its kernels are imported (oar_kernels/kernels/_interpreter.py), so the
# interpreter run above passes here too.
#
#     bash scripts/gpu_image_venv.sh /path/to/venv-gpuimg
#     . /path/to/venv-gpuimg/bin/activate && python -m pytest --co -q -m kernels tests/
set -euo pipefail
VENV="${1:?usage: gpu_image_venv.sh VENV_PATH}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "triton==3.6.0" "transformers==5.17.0" "numpy>=2.4,<2.6" \
    accelerate pytest pytest-benchmark scipy tokenizers
# the project itself, without extras, then its plain install_requires (setup.py)
"${PIP[@]}" --no-deps -e "$ROOT"
"${PIP[@]}" "math-verify>=0.7" tqdm matplotlib pyyaml

# none of the optional packages the GPU image lacks may have come in as a dependency
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys
present = [m for m in ("liger_kernel", "trl", "cut_cross_entropy", "datasets", "reasoning_gym")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"gpu_image_venv.sh: the GPU image lacks these, but they got installed: {present}")
EOF
"$VENV/bin/python" -m pip list 2>/dev/null \
    | grep -iE "^(torch|triton|transformers|numpy|accelerate|pytest|pytest.benchmark) " || true
