#!/usr/bin/env bash
# Tensor/sequence/pipeline parallelism on one multi-GPU machine (2 or 4 GPUs): parity over NCCL
# against one GPU, then `neox bench` throughput. All logic is in gpu_parallel.py beside this file;
# this wrapper records the GPUs and runs it. Each run has its own time limit and the whole script
# a budget (default 480 s); failures are recorded and the script goes on.
#
#   tools/bench/gpu_parallel.sh OUT_DIR                  # all visible GPUs
#   tools/bench/gpu_parallel.sh OUT_DIR --gpus 2 --budget 300
#   tools/bench/gpu_parallel.sh OUT_DIR --cpu-smoke      # the same logic on a CPU (gloo), tiny
#
# Results: OUT_DIR/results.md (markdown tables, device named), parity.json, bench.json, logs/.
# PYTHON picks the interpreter (default python3). NVLink multicast stays off (NCCL_NVLS_ENABLE=0 ...).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: tools/bench/gpu_parallel.sh OUT_DIR [--gpus N] [--budget SECONDS] [--skip-parity] [--skip-bench] [--cpu-smoke]}"
shift
mkdir -p "$out"
{ nvidia-smi -L || echo "no nvidia-smi"; } > "$out/gpus.txt" 2>&1
exec "${PYTHON:-python3}" "$here/gpu_parallel.py" "$out" "$@"
