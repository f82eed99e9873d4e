#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels worth carrying to the GPU machine, whose image
# (Python 3.12, manylinux x86_64, no network) lacks them: the baselines benchmarks/gpu_check.py
# times our ops against, and only those of their requirements the image does not have.
# gpu_check.py installs .whl/ offline (no dependencies) before anything else.
#
#     bash scripts/gpu_carry.sh        # then carry .whl with the working tree (at most 64 MiB travel)
#
# The image has torch, triton, transformers, accelerate, numpy, pyyaml, tqdm, huggingface-hub,
# safetensors, tokenizers, pyarrow, pandas, xxhash, fsspec, requests, rich, matplotlib, pytest,
# pytest-benchmark (and what those require: jinja2, psutil, packaging, filelock, sympy).
# Versions are those of the dev environment the baselines are tested with here.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.whl"
PYTHON="${PYTHON:-python3}"
LIMIT_MIB=60
WHEELS=(
    liger-kernel==0.8.5                 # baseline (requires torch, triton)
    trl==1.16.0                         # baseline; GRPOTrainer for gpu_check's trainer rows
    cut-cross-entropy==25.1.1           # baseline (requires torch, triton)
    datasets==5.2.0                     # trl's requirement; the trainer rows' data
    dill==0.4.1                         # datasets' requirement
    multiprocess==0.70.19               # datasets' requirement
    math-verify==0.9.0                  # oar_kernels' own install_requires (answers that are not numbers)
    latex2sympy2_extended==1.11.0       # math-verify's requirement
    antlr4-python3-runtime==4.13.2      # latex2sympy2_extended's requirement
)

rm -rf "$DEST"
mkdir -p "$DEST"
for spec in "${WHEELS[@]}"; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$DEST" "$spec"
done
ls -l "$DEST"
bytes=$(cat "$DEST"/*.whl | wc -c)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(( bytes / 1024 )) KiB in $DEST"
if (( bytes > LIMIT_MIB << 20 )); then
    echo "gpu_carry.sh: over ${LIMIT_MIB} MiB" >&2
    exit 1
fi
