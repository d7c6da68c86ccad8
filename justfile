# neox: one recipe per operation. `just --list` is the index; logic lives in Python (neox/, tools/).
set minimum-version := "1.40.0"
set positional-arguments := true

python := env("NEOX_PYTHON", "python3")

# list the recipes
[private]
default:
    @just --list

# ---------------------------------------------------------------- setup

# build the Apptainer image (on a compute node through Slurm, or local=true here)
[group('setup')]
build-image *args:
    @just _todo build-image '"HPC layer"'

# check the runtime: torch/CUDA/NCCL versions, flash-attn, TE, DeepSpeed ops, NCCL plugin
[group('setup')]
verify:
    @just _todo verify '"HPC layer"'

# ---------------------------------------------------------------- train

# validate configs, then train here (no nodes=) or submit a Slurm job (nodes=N); extra key=value override the config
[group('train')]
train *args:
    neox train "$@"

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
demo:
    @just _todo demo '"Training loop"'

# measure tokens/s, TFLOPS, MFU and peak memory of training steps for named model shapes
[group('train')]
bench *args:
    @just _todo bench '"Training loop"'

# ---------------------------------------------------------------- data

# Hugging Face dataset -> token counts -> JSONL -> tokenized .bin/.idx (dataset=org/name or a local path)
[group('data')]
prepare *args:
    {{python}} tools/datasets/prepare_hf_dataset.py "$@"

# ---------------------------------------------------------------- checkpoints

# convert a Hugging Face model (hub name or dir) to a NeoX checkpoint
[group('checkpoints')]
convert-hf *args:
    @just _todo convert-hf '"Checkpoint conversion"'

# convert a NeoX checkpoint (.../global_stepN) to a Hugging Face directory
[group('checkpoints')]
convert-neox *args:
    @just _todo convert-neox '"Checkpoint conversion"'

# ---------------------------------------------------------------- cluster

# a VS Code tunnel on a compute node: submits, waits, prints the login code and URL
[group('cluster')]
tunnel *args:
    @just _todo tunnel '"HPC layer"'

# your Slurm jobs: state, elapsed, last iteration, loss, tokens/s, ETA
[group('cluster')]
status:
    @just _todo status '"HPC layer"'

# ---------------------------------------------------------------- dev

# run the test suite (what CI runs); extra args go to pytest
[group('dev')]
test *args:
    {{python}} -m pytest -q "$@"

# lint with ruff
[group('dev')]
lint:
    ruff check neox tools tests

[private]
_todo recipe issue:
    @echo "just {{recipe}}: not implemented yet (issue {{issue}})" >&2; exit 2
