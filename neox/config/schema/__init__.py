"""The typed schema: one dataclass per section, every upstream GPT-NeoX key with its upstream
default, plus the values neox derives.

``SECTIONS`` lists the sections in display order; ``KEYS`` maps every key name to its
:class:`~neox.config.fields.KeyInfo`. ``neox.config.Config`` inherits from all sections, so a
loaded config is one flat object (``cfg.hidden_size``), as upstream's ``NeoXArgs`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

from neox.config.fields import KeyInfo, describe, key
from neox.config.schema.data import DataArgs, PostTrainingArgs, TokenizerArgs
from neox.config.schema.model import AttentionArgs, FusionArgs, ModelArgs, TransformerEngineArgs
from neox.config.schema.optim import LRArgs, OptimizerArgs, PrecisionArgs, ZeroArgs
from neox.config.schema.parallel import BatchArgs, ParallelArgs
from neox.config.schema.runtime import DeepSpeedArgs, LoggingArgs, ProcessArgs, RunnerArgs, TextGenArgs
from neox.config.schema.training import ActivationCheckpointArgs, CheckpointArgs, TrainingArgs
from neox.config.schema.unsupported import UnsupportedArgs


@dataclass
class DerivedValues:
    """Values neox computes once in ``neox.config.derived`` so that no consumer recomputes them."""

    data_parallel_size: int | None = key(
        None, "world_size / (max(pipe_parallel_size, 1) x model_parallel_size)", derived=True, upstream=False
    )
    warmup_iters: float | None = key(None, "warmup length in steps: warmup x lr_decay_iters", derived=True, upstream=False)
    params_dtype: str | None = key(None, "float16, bfloat16 or float32, from precision", derived=True, upstream=False)
    kv_heads: int | None = key(None, "num_kv_heads, or num_attention_heads when unset", derived=True, upstream=False)
    head_dim: int | None = key(None, "hidden_size / num_attention_heads", derived=True, upstream=False)
    rotary_ndims: int | None = key(None, "rotated dims per head (0 without rotary)", derived=True, upstream=False)
    ffn_dim: int | None = key(
        None,
        "MLP width F2 (input of the second MLP linear) after upstream's rounding; the first linear outputs "
        "2 x ffn_dim when gated. (Upstream's RWKV key of the same name is not supported.)",
        derived=True,
    )
    is_gated_mlp: bool | None = key(None, "the activation is gated (geglu, reglu, swiglu, bilinear, glu)", derived=True, upstream=False)
    attention_types: list | None = key(None, "attention type of each layer, expanded from attention_config", derived=True, upstream=False)


SECTIONS: list[tuple[str, type]] = [
    ("model", ModelArgs),
    ("attention", AttentionArgs),
    ("fusion", FusionArgs),
    ("transformer_engine", TransformerEngineArgs),
    ("parallelism", ParallelArgs),
    ("batch", BatchArgs),
    ("optimizer", OptimizerArgs),
    ("lr_schedule", LRArgs),
    ("precision", PrecisionArgs),
    ("zero", ZeroArgs),
    ("deepspeed", DeepSpeedArgs),
    ("training", TrainingArgs),
    ("checkpointing", CheckpointArgs),
    ("activation_checkpointing", ActivationCheckpointArgs),
    ("data", DataArgs),
    ("tokenizer", TokenizerArgs),
    ("post_training", PostTrainingArgs),
    ("logging", LoggingArgs),
    ("launcher", RunnerArgs),
    ("process", ProcessArgs),
    ("text_generation", TextGenArgs),
    ("unsupported", UnsupportedArgs),
    ("derived", DerivedValues),
]


def _collect() -> dict[str, KeyInfo]:
    keys: dict[str, KeyInfo] = {}
    for name, cls in SECTIONS:
        for info in describe(name, cls):
            assert info.name not in keys, f"config key {info.name} is declared in two sections"
            keys[info.name] = info
    return keys


KEYS: dict[str, KeyInfo] = _collect()

__all__ = ["KEYS", "SECTIONS", "DerivedValues", "KeyInfo"]
