#!/usr/bin/env bash
# Install neox and its pinned stack into a virtual environment. One script, two profiles:
#
#   cuda  the image (containers/neox.def %post): torch from the CUDA 12.6 index, DeepSpeed with
#         its ops compiled, flash-attn and Transformer Engine built for sm_90, kernels/ built.
#   cpu   CI and laptops: CPU torch, DeepSpeed without prebuilt ops, no flash-attn/TE. CI runs
#         this profile in a fresh venv, so the install logic the image uses is exercised on every
#         change even though apptainer cannot run there.
#
# Both install the pure-Python packages at the versions of containers/constraints.txt (what CI
# tests) and this repository (editable, so templates and pins stay next to the code), then fail
# if anything installed differs from the pins. Versions come from containers/versions.env unless
# the variable is already set (in the image, from `apptainer build --build-arg`).
#
# usage: containers/install.sh cuda|cpu [--venv DIR] [--python PYTHON] [--dry-run]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

usage() { echo "usage: containers/install.sh cuda|cpu [--venv DIR] [--python PYTHON] [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
profile=$1; shift
case $profile in cuda|cpu) ;; *) echo "install.sh: unknown profile '$profile'; use cuda or cpu" >&2; exit 2 ;; esac
venv= python= dry=0
while [ $# -gt 0 ]; do
    case $1 in
        --venv) venv=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        *) usage ;;
    esac
done

# Pins: versions.env values for variables not already in the environment.
while IFS= read -r line; do
    if [[ $line =~ ^([A-Z_][A-Z0-9_]*)=\"([^\"]*)\"$ ]]; then
        key=${BASH_REMATCH[1]}
        [ -n "${!key+set}" ] || export "$key=${BASH_REMATCH[2]}"
    fi
done <"$here/versions.env"

venv=${venv:-$VENV}
if [ -z "$python" ]; then
    if [ "$profile" = cuda ]; then python=python$PYTHON_VERSION; else python=python3; fi
fi
constraints=$here/constraints.txt

run() {
    echo "+ $*"
    [ "$dry" = 1 ] || "$@"
}
step() { echo "== install.sh ($profile): $*"; }

step "virtual environment $venv ($python)"
run "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-input)

if [ "$profile" = cuda ]; then
    step "torch $TORCH_VERSION from $TORCH_INDEX_URL"
    run "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    # Build tools for the CUDA extensions, at the tested versions; no build isolation below, so
    # every extension compiles against the torch just installed (no resolver swaps torch).
    run "${pip[@]}" -c "$constraints" ninja packaging psutil py-cpuinfo einops hjson pydantic numpy setuptools wheel
    export TORCH_CUDA_ARCH_LIST MAX_JOBS
    step "DeepSpeed $DEEPSPEED_VERSION with prebuilt ops: $DS_BUILD_OPS_LIST"
    ds_env=(DS_BUILD_OPS=0)
    for op in $DS_BUILD_OPS_LIST; do ds_env+=("DS_BUILD_$op=1"); done
    run env "${ds_env[@]}" "${pip[@]}" --no-build-isolation --no-binary deepspeed "deepspeed==$DEEPSPEED_VERSION"
    step "flash-attn $FLASH_ATTN_VERSION for sm_$CUDA_ARCHS (MAX_JOBS=$MAX_JOBS)"
    # FORCE_BUILD: never fetch a prebuilt wheel (there are none for aarch64 + this torch).
    run env FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS="$CUDA_ARCHS" \
        "${pip[@]}" --no-build-isolation --no-binary flash-attn "flash-attn==$FLASH_ATTN_VERSION"
    step "Transformer Engine $TE_VERSION for sm_$CUDA_ARCHS"
    run env NVTE_FRAMEWORK=pytorch NVTE_CUDA_ARCHS="$CUDA_ARCHS" NVTE_BUILD_THREADS_PER_JOB=1 \
        "${pip[@]}" --no-build-isolation "transformer_engine[pytorch] @ $TE_SOURCE"
else
    step "torch $TORCH_CPU_VERSION (CPU build)"
    run "${pip[@]}" "torch==$TORCH_CPU_VERSION" --extra-index-url "$TORCH_CPU_INDEX_URL"
fi

step "neox and the pure-Python packages pinned in containers/constraints.txt"
run "${pip[@]}" -c "$constraints" -e "$repo[dev]"

if [ -f "$repo/kernels/pyproject.toml" ] || [ -f "$repo/kernels/setup.py" ]; then
    step "kernels/ (compiled now, never JIT at run time)"
    run "${pip[@]}" --no-build-isolation -c "$constraints" "$repo/kernels"
else
    step "kernels/: no buildable project (the engine uses its PyTorch fallbacks)"
fi

step "check installed versions against the pins"
run "$venv/bin/python" -m neox.cluster.versions --check "$profile"
if [ "$profile" = cuda ]; then
    run mkdir -p /opt/neox
    run "$venv/bin/python" -m neox.cluster.versions --record /opt/neox/image.json
fi
step "done: $venv"
