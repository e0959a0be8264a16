#!/usr/bin/env bash
# Real-size RankDPO LoRA steps (SDXL UNet at 1024^2, SD3-Medium) and SDXL-size generation on one GPU, random-init
# weights, one JSON report (scripts/gpu_check.py). `bash scripts/gpu_check.sh --tiny --device cpu` runs the same
# code at a tiny size. On a machine without a package registry, install the carried wheels first:
#   pip install --no-index --find-links wheels/ diffusers peft
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
exec "$PY" scripts/gpu_check.py "$@"
