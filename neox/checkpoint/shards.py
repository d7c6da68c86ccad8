"""Reading every tensor-parallel shard of a NeoX checkpoint, whatever its layout and names.

A ``global_step<N>`` directory holds the weights in one of two layouts (facts §4.1):

- **sequential** (``pipe_parallel_size: 0``): ``mp_rank_TT_model_states.pt`` per TP rank, the
  weights under ``module`` with ``sequential.<idx>.`` keys;
- **pipeline** (``pipe_parallel_size >= 1``): ``layer_LL-model_TT-model_states.pt`` per layer
  index and TP rank; ``mp_rank_XX`` files then hold no weights and number the ranks of the
  pipe x TP group (20B at PP 4, TP 2 has ``mp_rank_00``..``07``), so the TP degree is read from the
  layer files alone.

:func:`scan` describes a directory without loading tensors beyond one file (for the dialect).
:func:`read_shards` gives each TP rank's ``sequential.*`` state dict with the names as on disk;
:func:`read_full_state` merges them (:mod:`neox.checkpoint.tp`) into the state dict of a TP = 1
model in the current names. Anything that does not add up (missing ranks or layers, layer files
beside weights in ``module``) is a :class:`~neox.errors.CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neox.checkpoint import dialects, layout, tp
from neox.checkpoint.weights import torch_load
from neox.errors import CheckpointError


@dataclass
class Scan:
    """What the files of a ``global_step<N>`` directory say about it."""

    path: Path
    layout: str
    """``"sequential"`` (weights in mp_rank files) or ``"pipeline"`` (layer files)."""
    tp: int
    pp: int | None
    """Pipeline stages, from the mp_rank file count (pipeline layout); None when unknowable."""
    layer_indices: list[int] = field(default_factory=list)
    model_state_files: list[Path] = field(default_factory=list)
    layer_files: dict[tuple[int, int], Path] = field(default_factory=dict)
    optimizer_files: list[Path] = field(default_factory=list)


def scan(ckpt_dir: Path) -> Scan:
    """The layout, TP and PP of the checkpoint directory ``ckpt_dir`` (a ``global_step<N>``)."""
    ckpt_dir = Path(ckpt_dir)
    mp_files = sorted(p for p in ckpt_dir.iterdir() if layout.MODEL_STATES_RE.match(p.name))
    optim = sorted(p for p in ckpt_dir.iterdir() if p.name.endswith("_optim_states.pt"))
    files = layout.layer_files(ckpt_dir)
    if files:
        ranks = sorted({r for _, r in files})
        indices = sorted({i for i, _ in files})
        degree = len(ranks)
        if ranks != list(range(degree)):
            raise CheckpointError(f"{ckpt_dir} has layer files of TP ranks {ranks}; some ranks' files are missing")
        missing = [layout.layer_file(i, r) for i in indices for r in ranks if (i, r) not in files]
        if missing:
            raise CheckpointError(f"{ckpt_dir} is missing {missing[0]} (and {len(missing) - 1} more layer files)")
        pp = len(mp_files) // degree if mp_files and len(mp_files) % degree == 0 else None
        return Scan(ckpt_dir, "pipeline", degree, pp, indices, mp_files, files, optim)
    if not mp_files:
        raise CheckpointError(
            f"{ckpt_dir} has neither layer_*-model_*-model_states.pt nor mp_rank_*_model_states.pt files; "
            "it is not a GPT-NeoX checkpoint directory (point at .../global_stepN)"
        )
    ranks = [int(layout.MODEL_STATES_RE.match(p.name).group(1)) for p in mp_files]
    if ranks != list(range(len(ranks))):
        raise CheckpointError(f"{ckpt_dir} has model-state files of ranks {ranks}; some ranks' files are missing")
    return Scan(ckpt_dir, "sequential", len(mp_files), 0, [], mp_files, {}, optim)


def _module_of(path: Path) -> Mapping[str, torch.Tensor]:
    sd = torch_load(path)
    module = sd.get("module") if isinstance(sd, Mapping) else None
    if not isinstance(module, Mapping) or not module:
        raise CheckpointError(
            f"{path} holds no weights ('module' is empty) and there are no layer files beside it; the "
            "checkpoint is incomplete (ZeRO-3 checkpoints need DeepSpeed's zero_to_fp32.py first)"
        )
    return module


def read_shard(info: Scan, rank: int, progress=None) -> dict[str, torch.Tensor]:
    """TP rank ``rank``'s ``sequential.*`` state dict, names as on disk."""
    if info.layout == "sequential":
        state = dict(_module_of(info.model_state_files[rank]))
        if progress is not None:
            progress.update(1)
        return state
    state: dict[str, torch.Tensor] = {}
    for idx in info.layer_indices:
        path = info.layer_files[(idx, rank)]
        sd = torch_load(path)
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{path} does not hold a state dict; the checkpoint is damaged")
        state.update({f"sequential.{idx}.{name}": value for name, value in sd.items()})
        if progress is not None:
            progress.update(1)
    return state


def read_shards(ckpt_dir: Path, *, progress: bool = False) -> list[dict[str, torch.Tensor]]:
    """Every TP rank's state dict (rank order), names as on disk."""
    info = scan(ckpt_dir)
    bar = None
    if progress:
        from tqdm import tqdm

        per_rank = 1 if info.layout == "sequential" else len(info.layer_indices)
        bar = tqdm(total=info.tp * per_rank, desc="reading shards", unit="file")
    try:
        return [read_shard(info, r, bar) for r in range(info.tp)]
    finally:
        if bar is not None:
            bar.close()


def read_full_state(ckpt_dir: Path, cfg, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's full (TP = 1) ``sequential.*`` state dict in the current names.

    ``cfg`` describes the model (its TP degree does not matter: the shards on disk decide).
    """
    shards = [dialects.to_current(s, cfg.norm) for s in read_shards(ckpt_dir, progress=progress)]
    return tp.merge_states(shards, cfg)


def naming_of(ckpt_dir: Path) -> str:
    """The parameter-name dialect of a checkpoint (``current``, ``legacy`` or ``te``), from one file."""
    info = scan(ckpt_dir)
    if info.layout == "sequential":
        return dialects.detect(_module_of(info.model_state_files[0]))
    first_layer = next((i for i in info.layer_indices if i >= 2), info.layer_indices[0])
    return dialects.detect(torch_load(info.layer_files[(first_layer, 0)]).keys())
