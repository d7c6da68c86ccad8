"""Model weights in a checkpoint directory: read them whole, write them in either layout.

Reading gives one ``sequential.<idx>.<name>`` state dict — the keys of ``model.state_dict()``
of :func:`neox.model.build` — from either layout: the ``module`` entry of
``mp_rank_00_model_states.pt`` (pipe_parallel_size = 0) or the ``layer_LL-model_00-*`` files
(pipe_parallel_size >= 1). Writing produces the layer files; the pp = 0 layout needs no writer of
its own because the weights travel inside the model-state file that DeepSpeed writes.

One tensor-parallel shard is read here: the one a TP rank of a run with the checkpoint's own TP
degree loads (training resumes with the TP it saved). A checkpoint of another TP degree is
refused with a message; merging or re-cutting shards belongs to the checkpoint tools
(:mod:`neox.checkpoint.shards`, ``tools/ckpts/reshard.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from neox.checkpoint import layout
from neox.errors import CheckpointError


def torch_load(path: Path) -> object:
    """``torch.load`` of a checkpoint file, with a CheckpointError naming the file on failure.

    ``weights_only=False``: DeepSpeed model-state files hold python objects (the ds_config, RNG
    states, argparse-free dicts); these are the user's own checkpoints.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete") from None
    except Exception as err:  # pickle/zip errors of a truncated file come in many types
        raise CheckpointError(
            f"cannot read checkpoint file {path} ({type(err).__name__}: {err}); it is truncated or not a torch file"
        ) from None


def read_module_state(ckpt_dir: Path, *, tp_rank: int = 0, tp_size: int = 1) -> dict[str, torch.Tensor]:
    """TP rank ``tp_rank``'s model state dict (``sequential.*`` keys, names as on disk) of a
    checkpoint saved with ``tp_size`` tensor-parallel ranks (the whole model for TP = 1)."""
    tp = layout.tp_size_on_disk(ckpt_dir)
    if tp != tp_size:
        raise CheckpointError(
            f"{ckpt_dir} was saved with tensor parallelism {tp} but this run has model_parallel_size {tp_size}; "
            f"re-cut it with tools/ckpts/reshard.py --tp {tp_size} (or train with model_parallel_size {tp})"
        )
    files = layout.layer_files(ckpt_dir)
    if files:
        state: dict[str, torch.Tensor] = {}
        for (idx, rank), path in sorted(files.items()):
            if rank != tp_rank:
                continue
            sd = torch_load(path)
            if not isinstance(sd, Mapping):
                raise CheckpointError(f"{path} does not hold a state dict; the checkpoint is damaged")
            for name, value in sd.items():
                state[f"sequential.{idx}.{name}"] = value
        return state
    states_file = ckpt_dir / layout.model_states_file(tp_rank)
    if not states_file.is_file():
        raise CheckpointError(
            f"{ckpt_dir} has neither layer files nor {states_file.name}; ZeRO-3 checkpoints keep partitioned "
            "weights: convert them with DeepSpeed's zero_to_fp32.py first"
        )
    sd = torch_load(states_file)
    module = sd.get("module") if isinstance(sd, Mapping) else None
    if not isinstance(module, Mapping):
        raise CheckpointError(
            f"{states_file} has no weights ('module' is empty) and there are no layer_*-model_{tp_rank:02d} files; "
            "the checkpoint is incomplete"
        )
    return dict(module)


def layer_indices_to_write(state: Mapping[str, object], rank: int, world: int) -> list[int]:
    """The layer indices this rank writes: layer files are spread round-robin over ``world`` writers."""
    indices = sorted(layout.group_by_layer(state))
    return indices[rank::world]


def write_layer_files(
    ckpt_dir: Path, state: Mapping[str, torch.Tensor], *, tp_rank: int = 0, writer: int = 0, writers: int = 1
) -> list[Path]:
    """Write this writer's share of ``layer_LL-model_TT-model_states.pt`` files from a ``sequential.*`` state dict.

    Tensors are cloned to CPU before saving so a file holds only its own data (a view would drag
    its whole storage into the file).
    """
    by_layer = layout.group_by_layer(state)
    mine = set(layer_indices_to_write(state, writer, writers))
    written = []
    for idx, sd in by_layer.items():
        if idx not in mine:
            continue
        path = ckpt_dir / layout.layer_file(idx, tp_rank)
        torch.save({k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in sd.items()}, path)
        written.append(path)
    return written
