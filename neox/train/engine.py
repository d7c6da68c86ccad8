"""The model wrapped by DeepSpeed: ZeRO stage, precision, accumulation and clipping from the config.

:func:`build_engine` builds the model (:func:`neox.model.build`), the optimizer
(:mod:`neox.train.optim`) and upstream's AnnealingLR (:mod:`neox.train.lr`), and hands all three
to ``deepspeed.initialize`` with the DeepSpeed config of :meth:`Config.deepspeed_config` — which
always carries ``gradient_clipping`` (upstream drops a value of 1.0, issue #1432, so its configs
train unclipped; here clipping is applied). DeepSpeed then owns mixed precision (bf16 master
weights, fp16 dynamic loss scaling with skipped steps), ZeRO 0-3, gradient all-reduce and the
accumulation boundary, and steps the scheduler once per applied optimizer step.

On disk, the weights are written in upstream's layout whatever the engine does: for
``pipe_parallel_size >= 1`` as ``layer_LL-model_00-model_states.pt`` files next to an
``mp_rank_00_model_states.pt`` whose ``module`` is None — the files DeepSpeed's pipeline engine
writes — although the model here runs as one module. :func:`use_layer_files` does this by
replacing the engine's ``module_state_dict`` the way DeepSpeed's own ``PipelineEngine`` does.
"""

from __future__ import annotations

import logging
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from neox.checkpoint import weights
from neox.errors import ConfigError
from neox.train.lr import AnnealingLR
from neox.train.optim import build_optimizer


@dataclass
class Engine:
    """The DeepSpeed engine and what the loop needs to know about it."""

    ds: object
    """``deepspeed.DeepSpeedEngine``; ``ds.module`` is the :class:`neox.model.GPTModel`."""
    scheduler: AnnealingLR
    device: torch.device
    layer_files: bool
    """Weights are saved as layer files (pipe_parallel_size >= 1) rather than in mp_rank_00."""

    @property
    def module(self):
        return self.ds.module

    @property
    def zero_stage(self) -> int:
        return self.ds.zero_optimization_stage()


def quiet_deepspeed(rank: int) -> None:
    """DeepSpeed logs every step and save at INFO; the loop prints what matters."""
    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING if rank == 0 else logging.ERROR)
    # DeepSpeed's ZeRO-3 calls torch.distributed functions torch deprecated, on every step.
    warnings.filterwarnings(
        "ignore", message=r".*(reduce_scatter_tensor|all_gather_into_tensor).* is deprecated", category=FutureWarning
    )


def check_runnable(cfg, device: torch.device) -> None:
    if cfg.train_iters is None and not cfg.train_epochs:
        raise ConfigError("train_iters is not set; set train_iters (optimizer steps) or train_epochs")
    if device.type == "cpu" and cfg.precision == "fp16":
        raise ConfigError(
            "precision fp16 needs a GPU (DeepSpeed's fp16 loss scaling does not run on the CPU); "
            "use precision fp32 or bfloat16 here"
        )
    cfg.require_padded_vocab_size()


def build_engine(cfg, device: torch.device, *, rank: int = 0) -> Engine:
    """Model, optimizer and schedule under ``deepspeed.initialize``; see the module docstring."""
    import deepspeed

    from neox.model import build

    check_runnable(cfg, device)
    quiet_deepspeed(rank)
    model = build(cfg, device=device)
    optimizer = build_optimizer(model, cfg)
    scheduler = AnnealingLR(
        optimizer,
        start_lr=cfg.lr,
        warmup_iter=cfg.warmup_iters,
        total_iters=cfg.lr_decay_iters,
        decay_style=cfg.lr_decay_style,
        min_lr=cfg.min_lr,
        use_checkpoint_lr_scheduler=cfg.use_checkpoint_lr_scheduler,
        override_lr_scheduler=cfg.override_lr_scheduler,
    )
    ds, ds_optimizer, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=cfg.deepspeed_config(),
        dist_init_required=False,
    )
    # DeepSpeed may wrap the optimizer (ZeRO, bf16/fp16); the schedule must set lr on the wrapper's
    # groups, as upstream re-points it after initialize.
    scheduler.optimizer = ds_optimizer
    engine = Engine(ds=ds, scheduler=scheduler, device=device, layer_files=cfg.pipe_parallel_size >= 1)
    if engine.layer_files and engine.zero_stage < 3:
        use_layer_files(ds)  # ZeRO-3 weights are partitioned: neox.train.checkpointing gathers them instead
    return engine


def use_layer_files(ds) -> None:
    """Make ``ds.save_checkpoint`` write the weights as NeoX layer files and ``module=None``.

    DeepSpeed sets ``_curr_ckpt_path`` to the checkpoint directory just before it asks for the
    module state; the layer files are spread over the data-parallel ranks.
    """

    def module_state_dict(self, destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        import deepspeed.comm as dist

        state = self.module.state_dict()
        dp_rank = dist.get_rank(group=self.data_parallel_group) if self.data_parallel_group else 0
        dp_size = dist.get_world_size(group=self.data_parallel_group) if self.data_parallel_group else 1
        weights.write_layer_files(Path(self._curr_ckpt_path), state, writer=dp_rank, writers=dp_size)
        return None

    ds.module_state_dict = types.MethodType(module_state_dict, ds)
