"""Names and places of the files in a GPT-NeoX checkpoint directory.

The on-disk layout is upstream GPT-NeoX's (DeepSpeed's file names), whatever engine wrote it:

    <save>/latest                                   text "global_step<N>", no newline
    <save>/global_step<N>/configs/<each yml>        the config files of the run (+ overrides.txt:
                                                    the command-line key=value overrides, JSON)
    <save>/global_step<N>/mp_rank_TT_model_states.pt           engine + client state; holds the
                                                    weights ("module") when pipe_parallel_size = 0
    <save>/global_step<N>/layer_LL-model_TT-model_states.pt    one per layer index and TP rank
                                                    when pipe_parallel_size >= 1 ("module" is None)
    <save>/global_step<N>/[bf16_]zero_pp_rank_D_mp_rank_TT_optim_states.pt   ZeRO / bf16 optimizer

Layer indices are those of upstream's pipeline spec: 0 embedding, 1 and L+2 parameter-free,
2..L+1 transformer layers, L+3 final norm, L+4 the untied head. In the pp = 0 layout the same
indices are key prefixes: ``sequential.<idx>.<name>``.

Parameter names come in three dialects: current (``mlp.linear1``), legacy (``mlp.dense_h_to_4h``,
Pythia and 20B checkpoints, before upstream PR #1212) and Transformer Engine (``attention.qkv``,
``mlp.fc1_weight``, ``_extra_state``). :func:`rename_for` maps a checkpoint's names onto the names
a model expects.

A directory being written by neox is named ``global_step<N>.tmp-<id>`` until every rank has
finished; only then is it renamed and ``latest`` rewritten (:mod:`neox.checkpoint.commit`). Such
staging directories are never loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from neox.errors import CheckpointError

LATEST = "latest"
CONFIGS_DIR = "configs"
# Keys given as key=value on the command line (JSON), beside the config files in configs/: the
# files alone would not rebuild the run's model. Upstream has no overrides, so it has no such file.
OVERRIDES_FILE = "overrides.txt"
TAG_RE = re.compile(r"^global_step(\d+)$")
STAGING_MARK = ".tmp-"
LAYER_FILE_RE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
MODEL_STATES_RE = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")


# The model-shape keys upstream NeoX stores as client state "args" and asserts on load (facts §4.2).
UPSTREAM_ARGS_KEYS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "max_position_embeddings",
    "make_vocab_size_divisible_by",
    "padded_vocab_size",
    "tokenizer_type",
    "model_parallel_size",
)


def upstream_args(cfg) -> dict:
    """The ``args`` client state of a checkpoint written for ``cfg``."""
    return {k: getattr(cfg, k) for k in UPSTREAM_ARGS_KEYS}


def tag(iteration: int) -> str:
    """The directory name of the checkpoint saved after ``iteration`` steps."""
    return f"global_step{iteration}"


def iteration_of(tag_name: str) -> int | None:
    m = TAG_RE.match(tag_name)
    return int(m.group(1)) if m else None


def model_states_file(mp_rank: int = 0) -> str:
    return f"mp_rank_{mp_rank:02d}_model_states.pt"


def zero3_model_states_file(dp_rank: int, mp_rank: int = 0) -> str:
    return f"zero_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_model_states.pt"


def layer_file(layer_idx: int, tp_rank: int = 0) -> str:
    return f"layer_{layer_idx:02d}-model_{tp_rank:02d}-model_states.pt"


def optim_states_file(dp_rank: int, mp_rank: int = 0, bf16: bool = False) -> str:
    return f"{'bf16_' if bf16 else ''}zero_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_optim_states.pt"


def final_norm_index(num_layers: int) -> int:
    return num_layers + 3


def head_index(num_layers: int) -> int:
    return num_layers + 4


def split_key(key: str) -> tuple[int, str]:
    """``sequential.12.mlp.linear1.weight`` -> (12, ``mlp.linear1.weight``)."""
    m = re.match(r"^sequential\.(\d+)\.(.+)$", key)
    if not m:
        raise CheckpointError(
            f"parameter {key!r} is not under 'sequential.<layer>.'; this is not a GPT-NeoX model state dict"
        )
    return int(m.group(1)), m.group(2)


def group_by_layer(state: Mapping[str, object]) -> dict[int, dict[str, object]]:
    """Split a ``sequential.*`` state dict into per-layer dicts without the prefix (layer-file contents)."""
    layers: dict[int, dict[str, object]] = {}
    for key, value in state.items():
        idx, name = split_key(key)
        layers.setdefault(idx, {})[name] = value
    return dict(sorted(layers.items()))


# ---------------------------------------------------------------- locating checkpoints


def is_staging(path: Path) -> bool:
    return STAGING_MARK in path.name


def read_latest(root: Path) -> str | None:
    """The tag named in ``<root>/latest``, or None without that file."""
    f = root / LATEST
    if not f.is_file():
        return None
    text = f.read_text().strip()
    if not text:
        raise CheckpointError(f"{f} is empty; point it at a checkpoint (e.g. global_step1000) or delete it")
    return text


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete ``global_step<N>`` directories under ``root``, oldest first (staging dirs excluded)."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            n = iteration_of(p.name)
            if n is not None and p.is_dir():
                found.append((n, p))
    return sorted(found)


def resolve(path: str | Path, iteration: int | None = None) -> Path:
    """The ``global_step<N>`` directory to load from ``path``.

    ``path`` is a save directory (then ``iteration`` picks ``global_step<iteration>``, else the
    tag in ``latest``) or a ``global_step<N>`` directory itself. Anything else, a staging
    directory, or a directory missing its model-state file, is a :class:`CheckpointError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist; check 'load' (or the path you passed)")
    if is_staging(p):
        raise CheckpointError(
            f"{p} is a checkpoint that was never completed (its writer stopped mid-save); "
            f"load the previous one named in {p.parent / LATEST}"
        )
    if iteration_of(p.name) is None and not has_model_states(p):
        if iteration is not None:
            name = tag(iteration)
        else:
            name = read_latest(p)
            if name is None:
                available = ", ".join(d.name for _, d in list_checkpoints(p)) or "none"
                raise CheckpointError(
                    f"{p} has no 'latest' file (checkpoints present: {available}); "
                    "set iteration: N to pick global_stepN, or point load at a global_stepN directory"
                )
        candidate = p / name
        if not candidate.is_dir():
            available = ", ".join(d.name for _, d in list_checkpoints(p)) or "none"
            raise CheckpointError(f"checkpoint {candidate} does not exist (checkpoints present: {available})")
        p = candidate
    if not has_model_states(p):
        raise CheckpointError(
            f"{p} has no {model_states_file(0)} (nor a ZeRO-3 model-state file); the checkpoint is "
            "incomplete or not a GPT-NeoX/DeepSpeed checkpoint"
        )
    return p


def has_model_states(ckpt_dir: Path) -> bool:
    return (ckpt_dir / model_states_file(0)).is_file() or (ckpt_dir / zero3_model_states_file(0)).is_file()


def layer_files(ckpt_dir: Path) -> dict[tuple[int, int], Path]:
    """``{(layer index, tp rank): path}`` of the layer files in ``ckpt_dir`` (empty for the pp = 0 layout)."""
    out = {}
    for p in ckpt_dir.iterdir():
        m = LAYER_FILE_RE.match(p.name)
        if m:
            out[(int(m.group(1)), int(m.group(2)))] = p
    return out


def tp_size_on_disk(ckpt_dir: Path) -> int:
    """How many tensor-parallel shards the checkpoint was written with.

    With layer files, their ``model_TT`` ranks alone: the ``mp_rank_XX`` files then number the
    ranks of the pipe x TP group (facts §4.1: 20B at PP 4, TP 2 has mp_rank_00..07).
    """
    ranks = {tp for _, tp in layer_files(ckpt_dir)}
    if not ranks:
        ranks = {int(m.group(1)) for p in ckpt_dir.iterdir() if (m := MODEL_STATES_RE.match(p.name))}
    return max(ranks) + 1 if ranks else 1


# ---------------------------------------------------------------- parameter-name dialects

# (checkpoint name suffix, current name suffix), within a transformer layer.
LEGACY_NAMES = (
    ("mlp.dense_h_to_4h.", "mlp.linear1."),
    ("mlp.dense_4h_to_h.", "mlp.linear2."),
)
TE_NAMES = (
    ("attention.qkv.", "attention.query_key_value."),
    ("attention.proj.", "attention.dense."),
    ("mlp.layer_norm_weight", "post_attention_layernorm.weight"),
    ("mlp.layer_norm_bias", "post_attention_layernorm.bias"),
    ("mlp.fc1_weight", "mlp.linear1.weight"),
    ("mlp.fc1_bias", "mlp.linear1.bias"),
    ("mlp.fc2_weight", "mlp.linear2.weight"),
    ("mlp.fc2_bias", "mlp.linear2.bias"),
    ("input_layernorm.norm.", "input_layernorm."),
)
# Present in some checkpoints, never needed to rebuild the model when the model does not keep them.
OPTIONAL_SUFFIXES = ("attention.rotary_emb.inv_freq", "._extra_state", "_extra_state")


def _variants(name: str) -> Iterable[str]:
    """Other spellings of a parameter name: legacy <-> current <-> Transformer Engine."""
    for table in (LEGACY_NAMES, TE_NAMES):
        for a, b in table:
            if a in name:
                yield name.replace(a, b)
            if b in name:
                yield name.replace(b, a)


def rename_for(state: Mapping[str, object], expected: Iterable[str]) -> dict[str, object]:
    """Rename ``state``'s keys to the spelling of ``expected`` (a model's state-dict keys).

    A key already expected is kept; otherwise its legacy/current/TE variants are tried. Keys that
    stay unmatched are kept only if they are not optional (rotary ``inv_freq``, TE ``_extra_state``),
    so a strict load then names exactly what is missing or unexpected.
    """
    want = set(expected)
    out: dict[str, object] = {}
    for key, value in state.items():
        if key in want:
            out[key] = value
            continue
        match = next((v for v in _variants(key) if v in want), None)
        if match is not None:
            out[match] = value
        elif not key.endswith(OPTIONAL_SUFFIXES):
            out[key] = value
    return out
