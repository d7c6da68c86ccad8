"""The model wrapped by DeepSpeed: ZeRO stage, precision, accumulation and clipping from the config.

:func:`build_engine` builds the model (:func:`neox.model.build`), the optimizer
(:mod:`neox.train.optim`) and upstream's AnnealingLR (:mod:`neox.train.lr`), and hands all three
to ``deepspeed.initialize`` with the DeepSpeed config of :meth:`Config.deepspeed_config` — which
always carries ``gradient_clipping`` (upstream drops a value of 1.0, issue #1432, so its configs
train unclipped; here clipping is applied). DeepSpeed then owns mixed precision (bf16 master
weights, fp16 dynamic loss scaling with skipped steps), ZeRO 0-3, gradient all-reduce and the
accumulation boundary, and steps the scheduler once per applied optimizer step.

Parallel layouts (:mod:`neox.parallel`): the process groups come from the pipe × data × tensor
topology of the loop. With tensor parallelism and no pipeline the engine gets a
:class:`~neox.parallel.topology.DeepSpeedMpu`, so ZeRO and gradient averaging run over the data
group and the clipping norm over the tensor group. With ``pipe_parallel_size > 1`` the model is a
DeepSpeed ``PipelineModule`` (:mod:`neox.parallel.pipeline`) under its ``PipelineEngine`` (1F1B;
ZeRO 0/1), whose grid plays the mpu's part; activations are partitioned over the TP ranks between
stages except under sequence parallelism (the ranks then hold different shards). The objective's
``pipeline_loss`` runs on the last stage. ``pipe_parallel_size`` 0 and 1 run the plain model.
An objective that handles vocab-parallel logits (``vocab_parallel``) gets them sharded over the TP
ranks; any other gets them gathered.

On disk, the weights are written in upstream's layout whatever the engine does: for
``pipe_parallel_size >= 1`` as ``layer_LL-model_TT-model_states.pt`` files (TT the TP rank) next to
``mp_rank_XX_model_states.pt`` files whose ``module`` is None — the files DeepSpeed's pipeline
engine writes. For pp = 1 the model runs as one module and :func:`use_layer_files` writes them by
replacing the engine's ``module_state_dict`` the way DeepSpeed's own ``PipelineEngine`` does.
``XX`` is the rank in the pipe × tensor group (the TP rank without a pipeline), as upstream.
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
from neox.parallel.topology import DeepSpeedMpu, Topology, build_topology
from neox.train.lr import AnnealingLR
from neox.train.optim import build_optimizer


@dataclass
class Engine:
    """The DeepSpeed engine and what the loop needs to know about it."""

    ds: object
    """``deepspeed.DeepSpeedEngine`` (``ds.module`` is the :class:`neox.model.GPTModel`), or its
    ``PipelineEngine`` (``ds.module`` is this stage's :mod:`neox.parallel.pipeline` module)."""
    scheduler: AnnealingLR
    device: torch.device
    layer_files: bool
    """Weights are saved as layer files (pipe_parallel_size >= 1) rather than in mp_rank_XX."""
    topo: Topology
    pipeline: bool = False
    """The model runs on DeepSpeed's pipeline engine (pipe_parallel_size > 1)."""

    @property
    def module(self):
        return self.ds.module

    @property
    def zero_stage(self) -> int:
        return self.ds.zero_optimization_stage()

    @property
    def mp_rank(self) -> int:
        """The ``XX`` of this rank's ``mp_rank_XX`` files: its rank in the pipe × tensor group."""
        return self.topo.model_rank

    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's weights under ``sequential.<idx>.`` keys (a pipeline stage's share, a TP shard)."""
        return self.ds.module.neox_state_dict() if self.pipeline else self.ds.module.state_dict()


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


def single_process_topology() -> Topology:
    return build_topology(pipe=1, data=1, tensor=1)


def _model(cfg, topo: Topology, device: torch.device, objective):
    if cfg.pipe_parallel_size <= 1:
        from neox.model import build

        model = build(cfg, device=device)
        if getattr(objective, "vocab_parallel", False):
            model.head.gather_output = False
        return model
    from neox.parallel.pipeline import build_pipeline_module

    if not hasattr(objective, "pipeline_loss"):
        raise ConfigError(
            f"the {type(objective).__name__} objective cannot run on a pipeline (pipe_parallel_size "
            f"{cfg.pipe_parallel_size}); use pipe_parallel_size 0 or 1"
        )
    model = build_pipeline_module(cfg, topo, device=device, loss_fn=objective.pipeline_loss)
    for layer in model.forward_funcs:
        if hasattr(layer, "gather_output"):  # the untied LM head on the last stage
            layer.gather_output = not getattr(objective, "vocab_parallel", False)
    return model


def build_engine(cfg, device: torch.device, *, rank: int = 0, topo: Topology | None = None,
                 objective=None) -> Engine:
    """Model, optimizer and schedule under ``deepspeed.initialize``; see the module docstring.

    ``topo`` is the job's topology (:func:`neox.parallel.topology.topology_for`; a single process
    if None); ``objective`` the training objective (:class:`~neox.train.objective.LanguageModeling`
    if None), which the pipeline's last stage computes and whose ``vocab_parallel`` decides
    whether the logits stay sharded.
    """
    import deepspeed

    from neox.train.objective import LanguageModeling

    check_runnable(cfg, device)
    quiet_deepspeed(rank)
    topo = topo or single_process_topology()
    objective = objective or LanguageModeling(cfg, None)
    pipeline = cfg.pipe_parallel_size > 1
    model = _model(cfg, topo, device, objective)
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
    ds_config = cfg.deepspeed_config()
    if pipeline:
        # Stage boundaries may split activations over the TP ranks only if every rank holds them whole.
        partitioned = not (cfg.sequence_parallel and topo.tensor > 1)
        ds_config["pipeline"] = {"pipe_partitioned": partitioned, "grad_partitioned": partitioned}
        # The pipeline engine prints a loss line every steps_per_print steps; the loop logs its own.
        ds_config["steps_per_print"] = 2**31 - 1
    ds, ds_optimizer, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config,
        mpu=DeepSpeedMpu(topo) if not pipeline and topo.tensor > 1 else None,
        dist_init_required=False,
    )
    # DeepSpeed may wrap the optimizer (ZeRO, bf16/fp16); the schedule must set lr on the wrapper's
    # groups, as upstream re-points it after initialize.
    scheduler.optimizer = ds_optimizer
    engine = Engine(ds=ds, scheduler=scheduler, device=device, layer_files=cfg.pipe_parallel_size >= 1, topo=topo,
                    pipeline=pipeline)
    if engine.layer_files and not pipeline and engine.zero_stage < 3:
        use_layer_files(ds, topo)  # ZeRO-3 weights are partitioned: neox.train.checkpointing gathers them instead
    if pipeline and not (ds.zero_optimization() or ds.bfloat16_enabled() or ds.fp16_enabled()):
        use_pipeline_clipping(ds, topo)
    if engine.zero_stage == 3 and not cfg.no_weight_tying:
        # The tied head reads the embedding's weight outside the embedding module: ZeRO-3 must
        # gather that parameter for the head's forward and backward too.
        deepspeed.zero.register_external_parameter(ds.module.head, ds.module.embedding.word_embeddings.weight)
    return engine


def use_layer_files(ds, topo: Topology) -> None:
    """Make ``ds.save_checkpoint`` write the weights as NeoX layer files and ``module=None``.

    DeepSpeed sets ``_curr_ckpt_path`` to the checkpoint directory just before it asks for the
    module state; each TP rank writes its own shard's files, spread over the data-parallel ranks.
    """

    def module_state_dict(self, destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        state = self.module.state_dict()
        weights.write_layer_files(Path(self._curr_ckpt_path), state, tp_rank=topo.tensor_rank,
                                  writer=topo.data_rank, writers=topo.data)
        return None

    ds.module_state_dict = types.MethodType(module_state_dict, ds)


def use_pipeline_clipping(ds, topo: Topology) -> None:
    """Clip fp32 pipeline gradients by their true global norm (:mod:`neox.parallel.grad_norm`).

    DeepSpeed's plain fp32 clipping under a pipeline counts replicated parameters on the first
    stage only and the tied embedding twice.
    """
    from neox.parallel.grad_norm import clip_grad_norm_

    def clip_fp32_gradients(self):
        self._global_grad_norm = clip_grad_norm_(self.module.parameters(), self.gradient_clipping(), topo)

    ds.clip_fp32_gradients = types.MethodType(clip_fp32_gradients, ds)
