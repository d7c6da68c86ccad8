# neox: one recipe per operation. `just --list` is the index; logic lives in Python (neox/, tools/).
set minimum-version := "1.40.0"
set positional-arguments := true

python := env("NEOX_PYTHON", "python3")

# list the recipes
[private]
default:
    @just --list

# ---------------------------------------------------------------- setup

# build the Apptainer image (on a compute node through Slurm, or local=true here); KEY=value overrides containers/versions.env
[group('setup')]
build-image *args:
    neox cluster build-image "$@"

# check the runtime: torch/CUDA/NCCL versions, flash-attn, TE, DeepSpeed ops, NCCL plugin (in $NEOX_SIF when set)
[group('setup')]
verify:
    #!/usr/bin/env bash
    if [ -n "${NEOX_SIF:-}" ]; then exec apptainer exec --nv "$NEOX_SIF" neox verify; fi
    exec neox verify

# ---------------------------------------------------------------- train

# validate configs, then train here (no nodes=) or submit a Slurm job (nodes=N); extra key=value override the config
[group('train')]
train *args:
    #!/usr/bin/env bash
    for arg in "$@"; do case $arg in nodes=*) exec neox slurm submit "$@" ;; esac; done
    exec neox train "$@"

# dry run: parameter count, FLOPs/token, batch arithmetic, layout and memory for a world size
[group('train')]
plan config world_size="1" *overrides:
    neox config show "{{config}}" --world-size {{world_size}} "${@:3}"

# check that config files load and validate (exit 0/1)
[group('train')]
check +configs:
    neox config check "$@"

# train a tiny model end to end on this machine's CPU: data, training, checkpoint, resume, sampling
[group('train')]
demo *args:
    {{python}} tools/demo.py "$@"

# measure tokens/s, TFLOPS, MFU and peak memory of training steps for named model shapes
[group('train')]
bench *args:
    neox bench "$@"

# ---------------------------------------------------------------- data

# Hugging Face dataset -> token counts -> JSONL -> tokenized .bin/.idx (dataset=org/name or a local path)
[group('data')]
prepare *args:
    {{python}} tools/datasets/prepare_hf_dataset.py "$@"

# ---------------------------------------------------------------- checkpoints

# HF model (hub name or dir) -> NeoX checkpoint to train from (model= revision= tp= pp= iteration= te= output= verify=)
[group('checkpoints')]
convert-hf *args:
    {{python}} tools/ckpts/convert_hf_to_neox.py "$@"

# NeoX checkpoint (any TP/PP layout and names) -> HF directory (ckpt= output= config= precision= verify=)
[group('checkpoints')]
convert-neox *args:
    {{python}} tools/ckpts/convert_neox_to_hf.py "$@"

# every global_stepN of a run -> HF, each uploaded as a Hub branch (save_dir= hf_repo= upload_delay= slurm=)
[group('checkpoints')]
convert-all *args:
    {{python}} tools/ckpts/convert_all.py "$@"

# ---------------------------------------------------------------- cluster

# run a command on a compute node, in the image when the site has one: just run [nodes=N gpus=G time=..] -- cmd
[group('cluster')]
run *args:
    neox slurm run "$@"

# your Slurm jobs: state, elapsed, last iteration, loss, tokens/s, ETA
[group('cluster')]
status:
    neox slurm status

# print a job's log and follow it across chained links (default: your latest job)
[group('cluster')]
logs *job:
    neox slurm logs "$@"

# cancel a job and the chain links queued after it
[group('cluster')]
cancel job:
    neox slurm cancel "$@"

# a VS Code tunnel on a compute node: submits, waits, prints the login code and URL (name= time=)
[group('cluster')]
tunnel *args:
    neox slurm tunnel "$@"

# download the standalone VS Code CLI into a per-architecture directory (arch=aarch64 for GH200 nodes)
[group('cluster')]
install-vscode-cli *args:
    neox cluster install-vscode-cli "$@"

# all-reduce bandwidth over N nodes, and whether it means Slingshot or TCP sockets
[group('cluster')]
nccl-test *args:
    neox slurm nccl-test "$@"

# ---------------------------------------------------------------- dev

# run the test suite (what CI runs); extra args go to pytest
[group('dev')]
test *args:
    {{python}} -m pytest -q "$@"

# lint with ruff
[group('dev')]
lint:
    ruff check neox tools tests

# exactly what CI runs on a fresh clone: Slurm daemons, then the README quick start in a new .venv (needs root)
[group('dev')]
ci:
    bash .ci/run
