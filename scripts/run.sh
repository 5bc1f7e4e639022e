#!/usr/bin/env bash
# Set up .venv and run the main job (`nla-probe ablate`, default suite on the embedded toy pair).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/nla-probe ablate "$@"
