"""Optimizer, LR schedule, precision and ZeRO keys (upstream ``NeoXArgsOptimizer``,
``NeoXArgsLRScheduler`` and the precision part of ``NeoXArgsDeepspeedConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key

ADAM_FAMILY = ("adam", "adamw", "cpu_adam", "cpu_torch_adam")


@dataclass
class OptimizerArgs:
    """The optimizer block and what neox derives from it."""

    optimizer: dict | None = key(
        None, 'DeepSpeed-style {"type": "Adam", "params": {"lr": ..., "betas": [...], "eps": ...}}'
    )
    optimizer_type: Literal[
        "adam", "adamw", "onebitadam", "cpu_adam", "cpu_torch_adam", "sm3", "madgrad_wd", "sgd", "lion"
    ] = key(
        "adam",
        "optimizer family (derived from optimizer.type)",
        derived=True,
        unimplemented_values=("onebitadam", "sm3", "madgrad_wd", "sgd", "lion"),
        hint="use optimizer.type Adam, AdamW, cpu_adam or cpu_torch_adam",
    )
    lr: float | None = key(None, "peak learning rate (derived from optimizer.params.lr)", derived=True)
    weight_decay: float = key(0.1, "decoupled weight decay; biases and norm weights are not decayed")
    use_bnb_optimizer: bool = key(False, "bitsandbytes 8-bit Adam", implemented=False, hint="use the plain Adam optimizer")
    scheduler: dict | None = key(
        None,
        "DeepSpeed LR scheduler block",
        implemented=False,
        hint="neox runs upstream's AnnealingLR; set lr_decay_style, warmup and lr_decay_iters instead",
    )


@dataclass
class LRArgs:
    """Upstream's AnnealingLR schedule."""

    lr_decay_style: Literal["constant", "linear", "cosine", "exponential"] = key("linear", "decay shape after warmup")
    lr_decay_iters: int | None = key(
        None, "schedule length T; derived: lr_decay_iters, else floor(train_iters x lr_decay_fraction), else train_iters"
    )
    lr_decay_fraction: float | None = key(None, "schedule length as a fraction of train_iters (if lr_decay_iters is unset)")
    min_lr: float = key(0.0, "LR floor, applied in every style; at most the peak LR")
    warmup: float = key(0.01, "warmup as a fraction of the schedule length T (not of train_iters)")
    override_lr_scheduler: bool = key(False, "on load, use the config's schedule and ignore the checkpoint's")
    use_checkpoint_lr_scheduler: bool = key(False, "on load, take the schedule from the checkpoint")


@dataclass
class PrecisionArgs:
    """Parameter precision and fp16 loss scaling."""

    precision: Literal["fp16", "fp32", "bfloat16"] | None = key(
        None, "fp16, bfloat16 or fp32; derived from the fp16/bf16 blocks when unset"
    )
    fp16: dict | None = key(None, 'DeepSpeed fp16 block, e.g. {"enabled": true, "loss_scale": 0, "initial_scale_power": 12}')
    bf16: dict | None = key(None, 'DeepSpeed bf16 block, e.g. {"enabled": true}')
    amp: dict | None = key(None, "DeepSpeed apex-AMP block", implemented=False, hint="use precision fp16 or bfloat16")
    data_types: dict | None = key(None, 'DeepSpeed data types, e.g. {"grad_accum_dtype": "fp32"}')
    fp32_allreduce: bool = key(False, "all-reduce gradients in fp32")
    communication_data_type: str | bool | None = key(None, "DeepSpeed gradient communication dtype")
    fp16_lm_cross_entropy: bool = key(False, "compute the LM cross-entropy in fp16 (needs precision fp16)")
    loss_scale: float | None = key(None, "static loss scale; None means dynamic (the fp16 block is what DeepSpeed uses)")
    loss_scale_window: float = key(1000.0, "dynamic loss-scale window (upstream-only; the fp16 block takes effect)")
    hysteresis: int = key(2, "dynamic loss-scale hysteresis (upstream-only; the fp16 block takes effect)")
    min_scale: float = key(1.0, "minimum dynamic loss scale (upstream-only; the fp16 block takes effect)")
    dynamic_loss_scale: bool | None = key(None, "loss_scale is None (derived)", derived=True)


@dataclass
class ZeroArgs:
    """ZeRO settings; ``zero_optimization`` is passed to DeepSpeed, the rest is derived from it."""

    zero_optimization: dict | None = key(
        None, "DeepSpeed ZeRO block, e.g. {stage: 1, overlap_comm: true}; absent means upstream's stage-0 block"
    )
    zero_stage: int | None = key(None, "zero_optimization.stage (derived)", derived=True)
    zero_reduce_scatter: bool | None = key(None, "zero_optimization.reduce_scatter (derived)", derived=True)
    zero_contiguous_gradients: bool | None = key(None, "zero_optimization.contiguous_gradients (derived)", derived=True)
    zero_reduce_bucket_size: int | None = key(None, "zero_optimization.reduce_bucket_size (derived)", derived=True)
    zero_allgather_bucket_size: int | None = key(None, "zero_optimization.allgather_bucket_size (derived)", derived=True)
