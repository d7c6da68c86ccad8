"""Writing a complete NeoX checkpoint directory from per-rank weights (conversion and resharding).

The result is what a NeoX training run saves and resumes from (facts §4.1-4.2), for any TP and
either layout:

- ``pp = 0`` (sequential): ``mp_rank_TT_model_states.pt`` per TP rank with the weights in ``module``;
- ``pp >= 1``: ``layer_LL-model_TT-model_states.pt`` per layer and TP rank, plus one
  ``mp_rank_XX_model_states.pt`` (``module`` None) per rank of the pipe x TP group.

Each model-state file carries DeepSpeed's keys (``optimizer`` None: a converted checkpoint has no
optimizer state) and NeoX's client state: ``iteration`` and ``args``, the model-shape keys
upstream compares with the config on load. The directory is written as ``global_step<N>.tmp-*``
and committed with :func:`neox.checkpoint.commit.commit` (rename, then ``latest``), so a crash
never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import torch

from neox.checkpoint import commit, dialects, layout
from neox.checkpoint.layout import upstream_args
from neox.checkpoint.weights import write_layer_files


def model_states(cfg, iteration: int, *, module, mp_world_size: int, lr_scheduler=None, extra=None) -> dict:
    """The content of one ``mp_rank_XX_model_states.pt``."""
    try:
        ds_version = metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        ds_version = None
    return {
        "module": module,
        "buffer_names": [],
        "optimizer": None,
        "lr_scheduler": lr_scheduler,
        "global_steps": iteration,
        "global_samples": 0,
        "skipped_steps": 0,
        "dp_world_size": 1,
        "mp_world_size": mp_world_size,
        "ds_config": None,
        "ds_version": ds_version,
        "iteration": iteration,
        "args": upstream_args(cfg),
        **(extra or {}),
    }


def _clone(state: Mapping[str, object]) -> dict[str, object]:
    """Own copies on the CPU: a saved view would drag its whole storage into the file."""
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in state.items()}


def write_checkpoint(
    save: Path,
    iteration: int,
    shards: Sequence[Mapping[str, torch.Tensor]],
    cfg,
    *,
    pp: int = 0,
    naming: str = "current",
    config_files: Mapping[str, str] | None = None,
    lr_scheduler=None,
    extra_state: Mapping[str, object] | None = None,
    progress: bool = False,
) -> Path:
    """Write ``<save>/global_step<iteration>`` from TP shards (current names) and point ``latest`` at it.

    ``cfg`` supplies the ``args`` recorded with the checkpoint (its ``model_parallel_size`` must
    be ``len(shards)``); ``config_files`` (name -> text) go to ``configs/``.
    """
    tp = len(shards)
    assert cfg.model_parallel_size == tp, (cfg.model_parallel_size, tp)
    save.mkdir(parents=True, exist_ok=True)
    staged = commit.staging_dir(save, iteration, f"convert-{os.getpid()}")
    staged.mkdir()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tp, desc="writing shards", unit="rank")
    for rank, shard in enumerate(shards):
        named = dialects.from_current(shard, naming)
        if pp == 0:
            states = model_states(
                cfg, iteration, module=_clone(named), mp_world_size=tp, lr_scheduler=lr_scheduler, extra=extra_state
            )
            torch.save(states, staged / layout.model_states_file(rank))
        else:
            write_layer_files(staged, named, tp_rank=rank)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if pp >= 1:
        for mp_rank in range(pp * tp):
            states = model_states(
                cfg, iteration, module=None, mp_world_size=pp * tp, lr_scheduler=lr_scheduler, extra=extra_state
            )
            torch.save(states, staged / layout.model_states_file(mp_rank))
    if config_files:
        configs = staged / layout.CONFIGS_DIR
        configs.mkdir()
        for name, text in config_files.items():
            (configs / name).write_text(text)
    return commit.commit(save, staged, iteration)
