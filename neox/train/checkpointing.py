"""Saving and resuming a training run in the GPT-NeoX checkpoint layout.

**Save** (:func:`save`, every rank): DeepSpeed writes the engine state — ``mp_rank_XX_model_states.pt``
per tensor (× pipeline) rank XX (weights when pipe_parallel_size = 0, else None beside the
``layer_LL-model_TT`` files of each TP rank TT), the LR schedule
(``lr_scheduler``), ``global_steps``/``skipped_steps``, and the ZeRO / bf16 optimizer shards — plus
upstream NeoX's client state: ``iteration``, ``args`` (the model-shape keys upstream checks on load),
the RNG states (unless ``no_save_rng``), and our ``consumed_train_samples`` /
``consumed_valid_samples`` (data position; upstream derives it from the iteration). Rank 0 copies
the config files into ``configs/``. Everything goes into a staging directory that becomes
``global_step<N>`` and is named in ``latest`` only after every rank has finished
(:mod:`neox.checkpoint.commit`); then ``keep_last_n_checkpoints`` prunes.
``no_save_optim`` leaves out the optimizer state (such a checkpoint resumes only with
``no_load_optim`` or ``finetune``).

**Load** (:func:`load`): ``load`` (a save directory or a ``global_stepN`` directory; ``iteration``
picks a step) is resolved and checked before anything is read; a checkpoint that cannot be loaded
is an error, never a silent fresh start. One exception, for chained Slurm jobs that set
``load`` = ``save``: if that directory holds no checkpoint yet, training starts at iteration 0 and
says so. As upstream: ``finetune`` loads the weights only and starts at iteration 0 without RNG;
``no_load_optim`` loads the weights and the iteration (the LR schedule continues at that
iteration, where upstream restarts it); otherwise everything is restored. The checkpoint's
``args`` must equal the config's (upstream asserts this; changing them needs a conversion).
Legacy (``dense_h_to_4h``) and Transformer Engine names are mapped on load. Each rank loads its own
shard; a checkpoint saved with another TP or pipeline degree is refused with the reshard command
(``tools/ckpts/reshard.py``), since its optimizer shards and RNG states belong to other ranks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from neox.checkpoint import commit, layout, load_weights
from neox.checkpoint.weights import read_module_state
from neox.errors import CheckpointError
from neox.train import rng


@dataclass
class Resumed:
    """Where a loaded checkpoint puts the run."""

    iteration: int = 0
    consumed_train_samples: int | None = None
    consumed_valid_samples: int | None = None
    path: Path | None = None


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def save_iterations(cfg) -> set[int]:
    """Iterations at which to save: every ``checkpoint_factor`` (linear) or its powers (log), plus ``extra_save_iters``."""
    its: set[int] = set(int(i) for i in (cfg.extra_save_iters or []))
    factor = cfg.checkpoint_factor
    if factor and cfg.train_iters:
        if cfg.checkpoint_scale == "log":
            if factor > 1:
                k = 0
                while factor**k <= cfg.train_iters:
                    its.add(int(factor**k))
                    k += 1
        else:
            its.update(range(int(factor), cfg.train_iters + 1, int(factor)))
    return its


def command_line_overrides(cfg) -> dict:
    """Top-level keys set on the command line, with their final values (saved beside the config files)."""
    return {
        k: v for k, v in cfg.to_dict(derived=False).items() if (cfg.source(k) or "").startswith("command line")
    }


def client_state(cfg, iteration: int, consumed_train: int, consumed_valid: int) -> dict:
    state = {
        "iteration": iteration,
        "args": layout.upstream_args(cfg),
        "consumed_train_samples": consumed_train,
        "consumed_valid_samples": consumed_valid,
    }
    if not cfg.no_save_rng:
        state.update(rng.rng_state())
    return state


def save(engine, cfg, iteration: int, *, run_id: str, consumed_train: int, consumed_valid: int) -> Path:
    """Write ``global_step<iteration>`` under ``cfg.save`` on every rank, crash-safely (module docstring)."""
    root = Path(cfg.save)
    staged = commit.staging_dir(root, iteration, run_id)
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
    _barrier()
    state = client_state(cfg, iteration, consumed_train, consumed_valid)
    if cfg.no_save_optim and engine.zero_stage < 3:
        _save_without_optimizer(engine, cfg, staged, state)
    elif not cfg.no_save_optim:
        engine.ds.save_checkpoint(str(root), tag=staged.name, client_state=state, save_latest=False)
    if engine.zero_stage == 3:
        _save_zero3_weights(engine, staged, state)
    if _rank() == 0:
        configs = staged / layout.CONFIGS_DIR
        configs.mkdir(parents=True, exist_ok=True)
        for name, text in (cfg.config_files or {}).items():
            (configs / name).write_text(text)
        overrides = command_line_overrides(cfg)
        if overrides:
            (configs / layout.OVERRIDES_FILE).write_text(json.dumps(overrides, indent=1, default=str) + "\n")
    _barrier()  # every rank's files are on disk before the checkpoint becomes visible
    final = root / layout.tag(iteration)
    if _rank() == 0:
        commit.commit(root, staged, iteration)
        if cfg.keep_last_n_checkpoints is not None:
            commit.prune(root, cfg.keep_last_n_checkpoints)
    _barrier()
    return final


def _save_without_optimizer(engine, cfg, staged: Path, state: dict) -> None:
    """``no_save_optim``: the model-state file and weights only, in DeepSpeed's key layout."""
    import deepspeed

    ds = engine.ds
    staged.mkdir(parents=True, exist_ok=True)
    module = engine.weights_state_dict()
    topo = engine.topo
    dp_rank, dp_size = topo.data_rank, topo.data
    if engine.layer_files:
        from neox.checkpoint.weights import write_layer_files

        write_layer_files(staged, module, tp_rank=topo.tensor_rank, writer=dp_rank, writers=dp_size)
    if dp_rank == 0:
        payload = {
            "module": None if engine.layer_files else {k: v.detach().cpu() for k, v in module.items()},
            "optimizer": None,
            "lr_scheduler": engine.scheduler.state_dict(),
            "global_steps": ds.global_steps,
            "global_samples": ds.global_samples,
            "skipped_steps": ds.skipped_steps,
            "dp_world_size": dp_size,
            "mp_world_size": topo.pipe * topo.tensor,
            "ds_config": ds.config,
            "ds_version": deepspeed.__version__,
            **state,
        }
        torch.save(payload, staged / layout.model_states_file(engine.mp_rank))


def _save_zero3_weights(engine, staged: Path, state: dict) -> None:
    """ZeRO-3 keeps only partitions; gather the weights and write them in the NeoX layout too.

    DeepSpeed's own files (``zero_pp_rank_D_mp_rank_00_{model,optim}_states.pt``) are what a
    ZeRO-3 run resumes from; the gathered weights make the checkpoint readable by anything that
    reads NeoX checkpoints (``load_model``, conversion, upstream, a run with another ZeRO stage).
    """
    import deepspeed

    full = engine.ds._zero3_consolidated_16bit_state_dict()  # a collective: every rank calls it
    if _rank() != 0:
        return
    staged.mkdir(parents=True, exist_ok=True)
    if engine.layer_files:
        from neox.checkpoint.weights import write_layer_files

        write_layer_files(staged, full)
    payload = {
        "module": None if engine.layer_files else dict(full),
        "optimizer": None,
        "lr_scheduler": engine.scheduler.state_dict(),
        "global_steps": engine.ds.global_steps,
        "global_samples": engine.ds.global_samples,
        "skipped_steps": engine.ds.skipped_steps,
        "dp_world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "mp_world_size": 1,
        "ds_version": deepspeed.__version__,
        **state,
    }
    torch.save(payload, staged / layout.model_states_file(0))


# ---------------------------------------------------------------- loading


def resolve_load(cfg) -> Path | None:
    """The checkpoint directory to resume from, None to start fresh (see the module docstring)."""
    if not cfg.load:
        return None
    load = Path(cfg.load).expanduser()
    if cfg.iteration is None and cfg.save and _same_dir(load, Path(cfg.save)) and not _has_any_checkpoint(load):
        return None
    return layout.resolve(load, cfg.iteration)


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.abspath(a.expanduser()) == os.path.abspath(b.expanduser())


def _has_any_checkpoint(root: Path) -> bool:
    return (root / layout.LATEST).exists() or bool(layout.list_checkpoints(root))


def check_args(cfg, saved: dict, source: Path) -> None:
    diffs = [f"{k} {v!r} (config: {getattr(cfg, k)!r})" for k, v in saved.items() if getattr(cfg, k, v) != v]
    if diffs:
        raise CheckpointError(
            f"checkpoint {source} was trained with other settings: {', '.join(diffs)}; use the config it was "
            "trained with, or convert the checkpoint (changing TP or the vocabulary needs tools/ckpts)"
        )


def _check_layout(ckpt: Path, engine) -> None:
    """The checkpoint was saved with this run's TP degree and pipe x TP ranks (DeepSpeed reads the
    model-state file of this rank's pipe x TP rank, and cannot regroup layer-file checkpoints)."""
    topo = engine.topo
    on_disk = layout.tp_size_on_disk(ckpt)
    fix = "resume with no_load_optim: true and no_load_rng: true"
    if on_disk != topo.tensor:
        raise CheckpointError(
            f"{ckpt} was saved with tensor parallelism {on_disk} but this run has model_parallel_size {topo.tensor}; "
            f"re-cut it with tools/ckpts/reshard.py --tp {topo.tensor} and {fix}"
        )
    if engine.pipeline and not layout.layer_files(ckpt):
        raise CheckpointError(
            f"{ckpt} keeps its weights in mp_rank files (pipe_parallel_size 0) but pipeline stages load layer files; "
            f"convert it with tools/ckpts/reshard.py --pp {topo.pipe} and {fix}"
        )
    if engine.zero_stage == 3:
        return
    saved = len(list(ckpt.glob("mp_rank_*_model_states.pt")))
    ranks = topo.pipe * topo.tensor
    if saved != ranks:
        raise CheckpointError(
            f"{ckpt} has model-state files of {saved} pipe x tensor rank(s) but this run has {ranks} "
            f"(pipe {topo.pipe} x tensor {topo.tensor}): it was saved with another pipe_parallel_size; convert it with "
            f"tools/ckpts/reshard.py --pp {topo.pipe} and {fix}"
        )


def _check_files(ckpt: Path, engine, load_optim: bool) -> None:
    _check_layout(ckpt, engine)
    mp = engine.mp_rank
    zero = engine.zero_stage > 0
    if load_optim and engine.zero_stage == 3 and not list(ckpt.glob("zero_pp_rank_*_mp_rank_00_model_states.pt")):
        raise CheckpointError(
            f"{ckpt} was not saved by a ZeRO-3 run (no zero_pp_rank_*_model_states.pt), and ZeRO-3 resumes from "
            "DeepSpeed's partitioned files: set no_load_optim: true (weights only) or finetune: true"
        )
    if load_optim and zero:
        shards = list(ckpt.glob(f"*zero_pp_rank_*_mp_rank_{mp:02d}_optim_states.pt"))
        if not shards:
            raise CheckpointError(
                f"{ckpt} has no ZeRO optimizer shards (*zero_pp_rank_*_optim_states.pt) but ZeRO stage "
                f"{engine.zero_stage} resumes from them; it was saved with no_save_optim or another ZeRO stage: "
                "set no_load_optim: true (weights only) or finetune: true"
            )
        dp = engine.topo.data
        if len(shards) != dp:
            raise CheckpointError(
                f"{ckpt} holds optimizer shards of {len(shards)} data-parallel ranks but this run has {dp}; "
                "ZeRO optimizer state cannot be re-sharded here: resume on the same number of GPUs, or set "
                "no_load_optim: true to keep only the weights"
            )


def _load_weights_zero3(engine, ckpt: Path) -> tuple[Path, dict]:
    """Weights of a NeoX checkpoint into a ZeRO-3 model: gather, load on rank 0, re-partition."""
    import deepspeed

    from neox.checkpoint.weights import torch_load

    module = engine.ds.module
    state = read_module_state(ckpt) if _rank() == 0 else None
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0):
        if _rank() == 0:
            load_weights(module, state, source=str(ckpt))
    engine.ds.optimizer.refresh_fp32_params()
    client = torch_load(ckpt / layout.model_states_file(0))
    return ckpt, {k: v for k, v in client.items() if k not in ("module", "optimizer")}


def load(engine, cfg, ckpt: Path) -> Resumed:
    """Restore ``ckpt`` into ``engine`` (and the RNGs) as the config asks; returns where the run resumes."""
    load_optim = not (cfg.finetune or cfg.no_load_optim)
    _check_files(ckpt, engine, load_optim)

    def load_module(src, dst):
        topo = engine.topo
        state = src if src is not None else read_module_state(ckpt, tp_rank=topo.tensor_rank, tp_size=topo.tensor)
        load_weights(dst, state, source=str(ckpt))

    try:
        if engine.zero_stage == 3 and not load_optim:
            path, state = _load_weights_zero3(engine, ckpt)
        else:
            path, state = engine.ds.load_checkpoint(
                str(ckpt.parent),
                tag=ckpt.name,
                load_module_strict=True,
                load_optimizer_states=load_optim,
                load_lr_scheduler_states=load_optim,
                load_module_only=not load_optim,
                # ZeRO-3 restores its partitions from DeepSpeed's own files; pipeline stages read their
                # layer files themselves (neox.parallel.pipeline maps the names there)
                custom_load_fn=None if engine.zero_stage == 3 or engine.pipeline else load_module,
            )
    except CheckpointError:
        raise
    except Exception as err:
        hint = "" if not load_optim else "; to keep only the weights set no_load_optim: true"
        raise CheckpointError(f"cannot load checkpoint {ckpt}: {type(err).__name__}: {err}{hint}") from err
    if path is None or state is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {ckpt} (no model-state file for this rank)")
    if "args" in state:
        check_args(cfg, state["args"], ckpt)
    if cfg.finetune:
        return Resumed(iteration=0, path=ckpt)
    iteration = state.get("iteration", state.get("total_iters"))
    if iteration is None:
        raise CheckpointError(f"{ckpt} has no 'iteration' in its model-state file; set finetune: true to use its weights")
    if not load_optim:
        # Weights only: keep the schedule where the iteration says (upstream would restart warmup).
        engine.scheduler.step(iteration)
        engine.ds.global_steps = iteration
        engine.ds.global_samples = iteration * cfg.train_batch_size
    if not cfg.no_load_rng:
        missing = rng.set_rng_state(state)
        if set(missing) - {"cuda_rng_state"}:
            raise CheckpointError(
                f"{ckpt} has no RNG state ({', '.join(missing)}); set no_load_rng: true to resume without it"
            )
    return Resumed(
        iteration=int(iteration),
        consumed_train_samples=state.get("consumed_train_samples"),
        consumed_valid_samples=state.get("consumed_valid_samples"),
        path=ckpt,
    )
