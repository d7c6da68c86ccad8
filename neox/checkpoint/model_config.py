"""The config that describes a checkpoint's model, and the same model at another TP/PP degree.

Offline tools load a checkpoint in one process, so they need the model at TP = 1 while the
checkpoint (and its config) may say TP = N. Changing ``model_parallel_size`` alone would change
the padded vocabulary (it is a multiple of ``make_vocab_size_divisible_by`` x TP, facts §6.1), so
:func:`single_rank` multiplies ``make_vocab_size_divisible_by`` by the old TP instead: the
padded size, and so every tensor shape, stays what is on disk.

A conversion is not a distributed run: ``WORLD_SIZE`` in the environment (a Slurm or torchrun
job) is ignored while loading, so the world size comes from the config's batch sizes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neox.checkpoint import config_files_of, layout
from neox.errors import CheckpointError, ConfigError


@contextmanager
def _no_world_size_env():
    saved = os.environ.pop("WORLD_SIZE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["WORLD_SIZE"] = saved


def load_config(paths: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None):
    """:func:`neox.config.load` for an offline tool (no ``WORLD_SIZE`` from the environment).

    A model-only config (upstream's converter reads nothing else) has no batch size, which a
    conversion does not need: one sequence per step is assumed so that it still loads.
    """
    from neox import config

    paths, overrides = [str(p) for p in paths], dict(overrides or {})
    with _no_world_size_env():
        try:
            return config.load(paths, overrides)
        except ConfigError as err:
            if "no batch size is set" not in str(err):
                raise
            return config.load(paths, {"train_micro_batch_size_per_gpu": 1, **overrides})


def config_for_checkpoint(ckpt_dir: Path, config_files: Sequence[str | os.PathLike] | None = None, overrides=None):
    """The config of checkpoint ``ckpt_dir``: ``config_files`` if given, else its saved ``configs/``."""
    if config_files:
        files = [Path(f) for f in config_files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"config file {missing[0]} does not exist")
        saved_overrides = {}
    else:
        files = config_files_of(ckpt_dir)
        files = [f for f in files if f.name != layout.OVERRIDES_FILE]
        if not files:
            raise CheckpointError(
                f"{ckpt_dir} has no configs/ directory; pass the config it was trained with (--config_file / config=)"
            )
        overrides_file = ckpt_dir / layout.CONFIGS_DIR / layout.OVERRIDES_FILE
        saved_overrides = json.loads(overrides_file.read_text()) if overrides_file.is_file() else {}
    return load_config(files, {**saved_overrides, **dict(overrides or {})})


def relayout(cfg, label: str | None = None, **changes):
    """``cfg`` with some top-level keys changed, re-validated and re-derived.

    Only the keys the config set are carried over; values the old layout derived (batch sizes
    for its data-parallel degree, the world size) are derived again for the new one.
    """
    from neox import config

    values = {k: v for k, v in cfg.to_dict(derived=False).items() if cfg.source(k) is not None}
    values.update(changes)
    with _no_world_size_env():
        try:
            return config.from_dict(values)
        except ConfigError as err:
            where = label or "the config with " + ", ".join(f"{k}={v}" for k, v in changes.items())
            raise ConfigError(f"{where}: {str(err).removeprefix('dict: ')}") from None


def single_rank(cfg):
    """The same model at TP = 1 (same padded vocab), for loading it whole in one process."""
    tp = cfg.model_parallel_size
    if tp == 1 and cfg.pipe_parallel_size <= 1:
        return cfg
    changes: dict[str, Any] = {"model_parallel_size": 1, "pipe_parallel_size": min(cfg.pipe_parallel_size, 1)}
    if tp > 1:
        changes["make_vocab_size_divisible_by"] = cfg.make_vocab_size_divisible_by * tp
    if cfg.padded_vocab_size is not None and cfg.source("padded_vocab_size") is not None:
        changes["padded_vocab_size"] = cfg.padded_vocab_size
    return relayout(cfg, **changes)


def in_precision(cfg, precision: str):
    """``cfg`` with parameters in ``precision`` (``fp32``, ``bfloat16``, ``fp16``), e.g. to compare logits in fp32.

    The precision decides more than the weights' dtype (the rotary cos/sin tables are rounded to
    it when the model is built), so an fp32 comparison needs an fp32 model, not a cast one.
    """
    if cfg.precision == precision:
        return cfg
    return relayout(cfg, precision=precision, fp16=None, bf16=None)
