"""The loaded config: one flat object composed from the schema's section dataclasses.

A :class:`Config` reads like upstream's ``NeoXArgs`` (``cfg.hidden_size``, ``cfg.train_batch_size``)
and carries the derived values, computed once by ``neox.config.derived``:

- layout: ``world_size``, ``data_parallel_size``, ``is_pipe_parallel``
- batch: ``train_batch_size``, ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps``,
  ``batch_size`` (= micro batch)
- vocab: ``padded_vocab_size`` (None when the tokenizer is not readable here and none is given;
  ``require_padded_vocab_size()`` raises with the reason)
- optimizer/schedule: ``lr``, ``optimizer_type``, ``lr_decay_iters`` (resolved T), ``warmup_iters``
  (W = warmup x T, a float)
- precision: ``precision`` (fp16/bfloat16/fp32), ``params_dtype`` (float16/bfloat16/float32),
  ``dynamic_loss_scale``, ``zero_stage`` (and the other ``zero_*``)
- shape: ``kv_heads``, ``head_dim``, ``rotary_ndims``, ``ffn_dim`` (linear2 input; linear1 outputs
  2 x ffn_dim when ``is_gated_mlp``), ``is_gated_mlp``, ``attention_types`` (one per layer)

Build it with :func:`neox.config.load` (or ``from_dict``), not directly: they validate and derive.
It remembers which file each key came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neox.config.fields import KeyInfo
from neox.config.schema import (
    KEYS,
    SECTIONS,
    DerivedValues,
)
from neox.config.schema.data import DataArgs, PostTrainingArgs, TokenizerArgs
from neox.config.schema.model import AttentionArgs, FusionArgs, ModelArgs, TransformerEngineArgs
from neox.config.schema.optim import LRArgs, OptimizerArgs, PrecisionArgs, ZeroArgs
from neox.config.schema.parallel import BatchArgs, ParallelArgs
from neox.config.schema.runtime import DeepSpeedArgs, LoggingArgs, ProcessArgs, RunnerArgs, TextGenArgs
from neox.config.schema.training import ActivationCheckpointArgs, CheckpointArgs, TrainingArgs
from neox.config.schema.unsupported import UnsupportedArgs
from neox.errors import ConfigError


@dataclass
class Config(
    DerivedValues,
    UnsupportedArgs,
    TextGenArgs,
    ProcessArgs,
    RunnerArgs,
    LoggingArgs,
    PostTrainingArgs,
    TokenizerArgs,
    DataArgs,
    ActivationCheckpointArgs,
    CheckpointArgs,
    TrainingArgs,
    DeepSpeedArgs,
    ZeroArgs,
    PrecisionArgs,
    LRArgs,
    OptimizerArgs,
    BatchArgs,
    ParallelArgs,
    TransformerEngineArgs,
    FusionArgs,
    AttentionArgs,
    ModelArgs,
):
    """Every GPT-NeoX config key and every derived value, as attributes."""

    def __post_init__(self) -> None:
        self._sources: dict[str, str] = {}
        self._files: list[str] = []
        self._notes: dict[str, str] = {}

    def __repr__(self) -> str:
        # The generated repr would list ~350 fields.
        return f"Config({' '.join(self._files) or 'dict'}: {self.summary()})"

    # -- introspection ---------------------------------------------------------------------------
    @staticmethod
    def info(name: str) -> KeyInfo:
        """The schema entry of ``name`` (type, default, doc, implemented?)."""
        try:
            return KEYS[name.replace("-", "_")]
        except KeyError:
            raise ConfigError(f"'{name}' is not a config key") from None

    @property
    def files(self) -> list[str]:
        """The config files this config was loaded from, in order."""
        return list(self._files)

    def source(self, name: str) -> str | None:
        """Where ``name`` was set ('path:line' or 'command line ...'), or None for a default."""
        return self._sources.get(name)

    def note(self, name: str) -> str | None:
        """Why a derived value is what it is, where that is not obvious (e.g. why padded_vocab_size is None)."""
        return self._notes.get(name)

    def to_dict(self, *, derived: bool = True) -> dict[str, Any]:
        """All keys and values (derived ones included unless ``derived=False``), in schema order."""
        out = {}
        for section, cls in SECTIONS:
            if section == "derived" and not derived:
                continue
            for f in dataclasses.fields(cls):
                if f.name in cls.__dict__.get("__annotations__", {}):
                    out[f.name] = getattr(self, f.name)
        return out

    def non_defaults(self) -> dict[str, Any]:
        """Keys whose value differs from the upstream default (upstream's ``megatron_config`` view)."""
        return {k: v for k, v in self.to_dict().items() if v != KEYS[k].default and k != "config_files"}

    def deepspeed_config(self) -> dict[str, Any]:
        """The dict for ``deepspeed.initialize(config=...)``; see :mod:`neox.config.deepspeed`."""
        from neox.config.deepspeed import deepspeed_config

        return deepspeed_config(self)

    def require_padded_vocab_size(self) -> int:
        """``padded_vocab_size``, or a ConfigError saying why it is unknown and how to fix it."""
        if self.padded_vocab_size is None:
            reason = self._notes.get("padded_vocab_size", "the tokenizer could not be loaded")
            raise ConfigError(
                f"padded_vocab_size is unknown: {reason}; fix vocab_file/tokenizer_type or set padded_vocab_size"
            )
        return self.padded_vocab_size

    def summary(self) -> str:
        """One line: shape, parallel layout, batch, precision."""
        parts = [
            f"{self.num_layers}L h{self.hidden_size} {self.num_attention_heads}h"
            + (f"/{self.kv_heads}kv" if self.kv_heads != self.num_attention_heads else ""),
            f"s{self.seq_length}",
            f"vocab {self.padded_vocab_size if self.padded_vocab_size is not None else '?'}",
            f"world {self.world_size} = dp {self.data_parallel_size} x pp {max(self.pipe_parallel_size, 1)}"
            f" x tp {self.model_parallel_size}",
            f"batch {self.train_batch_size} = {self.train_micro_batch_size_per_gpu} x {self.gradient_accumulation_steps}"
            f" x {self.data_parallel_size}",
            f"{self.precision}",
            f"zero {self.zero_stage}",
        ]
        return ", ".join(parts)
