#!/usr/bin/env bash
# The verl plugin's tests (tests/verl_plugin/) in an environment of their own: verl 0.9.1 pins
# transformers below 5.11, while the main suite (scripts/test.sh) runs on the newest transformers
# setup.py allows, so verl never goes into that environment. Called by .ci/run after the main test
# line; runs on CPU (Ray with two CPU workers, tiny models built in process, nothing downloaded
# at run time).
#
#     bash scripts/test_verl.sh                  # a new environment in a temporary folder, removed after
#     OAR_VERL_VENV=DIR bash scripts/test_verl.sh -k ray   # build (or reuse) DIR and keep it; pytest options
#
# torch is installed first and pinned (an unpinned torch would pull a multi-GB CUDA build), then the
# project with its `verl` extra (verl[verl-core]: TransferQueue, which verl's V1 trainer imports).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
venv="${OAR_VERL_VENV:-}"
if [ -z "$venv" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    venv="$tmp/venv-verl"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q -e ".[verl]" "pytest>=8"
"$py" -m pip list 2>/dev/null | grep -iE "^(torch|transformers|verl|ray|transferqueue|tensordict|pytest) " || true
echo "[test_verl] environment ready in $((SECONDS - start)) s"
# the plugin must load through verl's entry point alone, before any test imports it
"$py" -c "import verl; from verl.trainer.ppo.v1 import get_trainer_cls; print('[test_verl] trainer_mode=oar ->', get_trainer_cls('oar').__name__)"
OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
    timeout 900 "$py" -m pytest -q -p no:cacheprovider tests/verl_plugin "$@"
echo "[test_verl] done in $((SECONDS - start)) s"
