#!/usr/bin/env bash
# GPU check of nla-probe on the embedded toy pair (data/toy/qwen_small), with no network: bfloat16
# decodes and AR scores on the GPU (transformers, and vLLM when it is installed; with two or more
# GPUs also device="auto") against float32 decodes on the CPU, throughput at batch 1/32/256 and
# peak GPU memory, printed as one table.  Takes a few minutes at most.  Definitions of every column:
# nla_probe/bench/gpu_check.py (module doc) and docs/scaling.md ("Checking a GPU machine").
#
#   scripts/gpu_check.sh                    # on a CUDA machine; exits with status 2 without CUDA
#   CUDA_VISIBLE_DEVICES=0,1 scripts/gpu_check.sh
#   scripts/gpu_check.sh --device cpu --quick   # exercises the same code on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, nla_probe" 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch and nla_probe; run scripts/setup.sh first or set PYTHON=/path/to/python" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_ENABLE_V1_MULTIPROCESSING=${VLLM_ENABLE_V1_MULTIPROCESSING:-0}
exec "$PY" -m nla_probe.bench.gpu_check "$@"
