#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a machine with a CUDA GPU and its own torch, from a copy of this
# checkout, in under 10 minutes on one GPU:
#   bench/gpu_check.sh --wheels DIR --root DATA      (table: bench/results/gpu/gpu_check.md)
#   bench/gpu_check.sh --cpu-smoke --root DATA       (every stage on the CPU, tiny; table in a temp dir)
# --wheels DIR: a folder of wheels; those of packages this Python lacks (hydra-core, omegaconf, ...)
# are installed with pip --no-index into a folder of their own, nothing else is touched.
# bench/gpu_check.py --help lists every option. PYTHON picks the interpreter (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="$root/src:$here${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
