"""The DeepSpeed config dict for ``deepspeed.initialize``.

Upstream builds it from the DeepSpeed-section keys whose value differs from NeoX's dataclass
default, then merges ``deepspeed_extra_args`` (a key also set at top level is an error). That
filter has a bug (upstream issue #1432): NeoX's default ``gradient_clipping`` is 1.0 while
DeepSpeed's is 0 (off), so a config with ``gradient_clipping: 1.0`` (every shipped config)
sends nothing and trains without clipping. neox always passes ``gradient_clipping``.

DeepSpeed 0.19 rejects unknown keys in the ``fp16``/``bf16`` blocks, while DeeperSpeed ignored
them; upstream configs carry two such leftovers (``"fp16": true`` inside the fp16 block, as in
the Pythia configs, and the ``"type"`` upstream itself injects). Those two are dropped; any
other unknown key is a config error.

The dict never contains ``optimizer`` or ``scheduler``: the training loop builds the optimizer
and upstream's AnnealingLR schedule itself and hands them to DeepSpeed.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from neox.config.schema import KEYS
from neox.errors import ConfigError

if TYPE_CHECKING:
    from neox.config.config import Config

# DeepSpeed keys passed through when they differ from upstream's default.
PASSTHROUGH = (
    "fp32_allreduce",
    "prescale_gradients",
    "gradient_predivide_factor",
    "sparse_gradients",
    "dump_state",
    "communication_data_type",
    "flops_profiler",
    "activation_checkpointing",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "comms_logger",
    "checkpoint",
    "data_types",
)


# The keys DeepSpeed's fp16 and bf16 blocks accept (DeepSpeedFP16Config / DeepSpeedBF16Config).
PRECISION_KEYS = {
    "fp16": ("enabled", "auto_cast", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
             "consecutive_hysteresis", "min_loss_scale", "fp16_master_weights_and_grads"),
    "bf16": ("enabled", "immediate_grad_update", "check_grad_overflow", "bf16_master_weights_and_grads",
             "bf16_optimizer_states"),
}
LEGACY_PRECISION_KEYS = ("fp16", "type")


def precision_block(cfg: Config, name: str) -> dict[str, Any]:
    """The fp16/bf16 block for DeepSpeed: enabled, legacy keys dropped, unknown keys refused."""
    block = {k: v for k, v in (getattr(cfg, name) or {}).items() if k not in LEGACY_PRECISION_KEYS}
    for k in block:
        if k not in PRECISION_KEYS[name]:
            raise ConfigError(
                f"{cfg.source(name) or 'config'}: {name}.{k} is not a DeepSpeed {name} setting; "
                f"use {', '.join(PRECISION_KEYS[name])}"
            )
    block["enabled"] = True
    return block


def deepspeed_config(cfg: Config) -> dict[str, Any]:
    """The DeepSpeed config for a loaded :class:`~neox.config.Config`."""
    ds: dict[str, Any] = {
        "train_batch_size": cfg.train_batch_size,
        "train_micro_batch_size_per_gpu": cfg.train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_clipping": cfg.gradient_clipping,
        "steps_per_print": cfg.steps_per_print,
        "wall_clock_breakdown": cfg.wall_clock_breakdown,
        "zero_optimization": copy.deepcopy(cfg.zero_optimization),
    }
    if cfg.precision == "fp16":
        ds["fp16"] = copy.deepcopy(precision_block(cfg, "fp16"))
    elif cfg.precision == "bfloat16":
        ds["bf16"] = copy.deepcopy(precision_block(cfg, "bf16"))
    for name in PASSTHROUGH:
        value = getattr(cfg, name)
        if value != KEYS[name].default:
            ds[name] = copy.deepcopy(value)
    for name, value in (cfg.deepspeed_extra_args or {}).items():
        explicit = cfg.source(name) is not None
        if name in ds and (explicit or name in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                                "gradient_accumulation_steps")):
            where = cfg.source("deepspeed_extra_args") or "config"
            raise ConfigError(
                f"{where}: deepspeed_extra_args.{name} repeats the top-level key {name}"
                + (f" set in {cfg.source(name)}" if explicit else " (derived)")
                + "; set it in one place"
            )
        ds[name] = copy.deepcopy(value)
    return ds
