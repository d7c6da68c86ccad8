"""Validation with one-line errors: unknown keys, types, unimplemented features, values, cross-key rules.

Matches upstream's ``validate_types`` and ``validate_values`` (``megatron/neox_arguments/arguments.py``)
and adds the checks upstream leaves to a crash later (TP divisibility, MLP widths, pairwise
data paths...). Every error names the file (and line) the key came from, the key, its value,
what is allowed and how to fix it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from neox.config.fields import TypeMismatch, coerce
from neox.config.schema import KEYS
from neox.errors import ConfigError

if TYPE_CHECKING:
    from neox.config.config import Config

# Keys that no longer exist upstream, and what replaced them.
RENAMED = {"save_interval": "checkpoint_factor"}
# Names from Megatron-LM and HF configs that users carry over, and the GPT-NeoX key.
OTHER_NAMES = {
    "micro_batch_size": "train_micro_batch_size_per_gpu",
    "global_batch_size": "train_batch_size",
    "tensor_model_parallel_size": "model_parallel_size",
    "pipeline_model_parallel_size": "pipe_parallel_size",
    "ffn_hidden_size": "intermediate_size",
    "num_query_groups": "num_kv_heads",
    "num_key_value_heads": "num_kv_heads",
    "vocab_size": "padded_vocab_size (derived from the tokenizer)",
    "lr_decay_steps": "lr_decay_iters",
    "train_steps": "train_iters",
    "rope_theta": "rotary_emb_base",
}
# Dicts upstream requires to carry certain keys.
REQUIRED_DICT_KEYS = {"optimizer": ("type", "params"), "scheduler": ("type", "params"), "fp16": ("enabled",),
                      "amp": ("enabled",), "flops_profiler": ("enabled",)}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Legacy keys upstream accepted but never read, and the value that keeps them harmless.
NO_OP_VALUES = {"gas": 1}


def _is_off(default: Any, value: Any, name: str = "") -> bool:
    """A value that leaves an unimplemented feature off: its default, an empty block or enabled: false."""
    if value == default or (name in NO_OP_VALUES and value == NO_OP_VALUES[name]):
        return True
    if default is None and value in ({}, []):
        return True
    return isinstance(value, dict) and value.get("enabled") is False


def check_keys(values: dict[str, Any], where) -> dict[str, Any]:
    """Unknown keys, types and unimplemented features; returns values in canonical form."""
    out = {}
    for name, value in values.items():
        info = KEYS.get(name)
        if info is None:
            raise ConfigError(f"{where(name)}: {unknown_key_message(name)}")
        try:
            value = coerce(value, info.type)
        except TypeMismatch as err:
            raise ConfigError(
                f"{where(name)}: key '{name}' is {_show(value)} ({type(value).__name__}) but must be {err}"
                + _type_hint(info.type, value)
            ) from None
        if not info.implemented and not _is_off(info.default, value, name):
            fix = "remove it" if info.default is None else f"remove it or set it to its default {info.default!r}"
            raise ConfigError(
                f"{where(name)}: key '{name}' = {_show(value)} is an upstream GPT-NeoX feature neox does not implement "
                f"({info.hint}); {fix}"
            )
        if value in info.unimplemented_values:
            raise ConfigError(
                f"{where(name)}: {name} '{value}' is an upstream GPT-NeoX option neox does not implement; {info.hint}"
            )
        for required in REQUIRED_DICT_KEYS.get(name, ()):
            if isinstance(value, dict) and required not in value:
                raise ConfigError(f"{where(name)}: the {name} block needs a '{required}' key (as upstream requires)")
        if name in ("optimizer", "scheduler") and isinstance(value, dict):
            if not isinstance(value["type"], str) or not isinstance(value["params"], dict):
                raise ConfigError(f"{where(name)}: {name}.type must be a string and {name}.params a mapping")
        out[name] = value
    return out


def unknown_key_message(name: str) -> str:
    message = f"key '{name}' is not a GPT-NeoX config key"
    if name in RENAMED:
        return f"{message}; upstream renamed it to {RENAMED[name]}"
    if name in OTHER_NAMES:
        return f"{message}; the GPT-NeoX key is {OTHER_NAMES[name]}"
    close = difflib.get_close_matches(name, list(KEYS), n=1, cutoff=0.75)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    return f"{message}; see `neox config show --doc` for the list of keys"


def _type_hint(tp: Any, value: Any) -> str:
    """A concrete fix for the common slips: 1e5 where an int is needed, a quoted number or boolean."""
    if isinstance(value, float) and value.is_integer() and _fits(int(value), tp):
        return f"; write {int(value)}"
    if isinstance(value, str):
        from neox.config.loader import parse_value

        if _fits(parse_value(value), tp):
            return "; write it without quotes"
    return ""


def _fits(value: Any, tp: Any) -> bool:
    try:
        coerce(value, tp)
    except TypeMismatch:
        return False
    return True


def _require(cfg: Config, where, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(cfg, name) is None:
            raise ConfigError(f"{where(name)}: {name} is required but not set; add {name}: {KEYS[name].doc}")


def _at_least(cfg: Config, where, minimum: int | float, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{where(name)}: {name} {value} must be at least {minimum}")


def _fraction(cfg: Config, where, name: str, low_open: bool, high_open: bool) -> None:
    value = getattr(cfg, name)
    if value is None:
        return
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(f"{where(name)}: {name} {value} must be in {interval}")


def check_values(cfg: Config, where) -> None:
    """Value ranges and cross-key rules, after the derived values are computed."""
    _require(cfg, where, ("num_layers", "hidden_size", "num_attention_heads", "max_position_embeddings"))
    _at_least(cfg, where, 1, ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "seq_length",
                              "max_position_embeddings", "model_parallel_size", "mlp_multiple_of", "train_iters",
                              "train_epochs", "eval_interval", "log_interval", "steps_per_print", "checkpoint_num_layers",
                              "intermediate_size", "lr_decay_iters", "keep_last_n_checkpoints", "rotary_emb_base"))
    _at_least(cfg, where, 0, ("pipe_parallel_size", "eval_iters", "min_lr", "weight_decay", "gradient_clipping",
                              "num_workers", "init_method_std", "sliding_window_width", "opt_pos_emb_offset"))
    for name in ("hidden_dropout", "attention_dropout"):
        _fraction(cfg, where, name, low_open=False, high_open=True)
    _fraction(cfg, where, "warmup", low_open=False, high_open=False)
    _fraction(cfg, where, "lr_decay_fraction", low_open=True, high_open=False)
    _fraction(cfg, where, "rotary_pct", low_open=True, high_open=False)
    _shape(cfg, where)
    _training(cfg, where)
    _parallel(cfg, where)
    _data(cfg, where)
    from neox.config.deepspeed import deepspeed_config

    deepspeed_config(cfg)  # raises on a deepspeed_extra_args clash


def _shape(cfg: Config, where) -> None:
    h, heads, kv, tp = cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads, cfg.model_parallel_size
    if h % heads:
        raise ConfigError(
            f"{where('hidden_size')}: hidden_size {h} is not divisible by num_attention_heads {heads}; "
            f"use a multiple of {heads} (e.g. {heads * -(-h // heads)})"
        )
    if heads % kv:
        raise ConfigError(
            f"{where('num_kv_heads')}: num_kv_heads {kv} does not divide num_attention_heads {heads}; "
            f"use a divisor of {heads}"
        )
    if heads % tp or h % tp:
        raise ConfigError(
            f"{where('model_parallel_size')}: model_parallel_size {tp} must divide num_attention_heads {heads} "
            f"and hidden_size {h}"
        )
    if kv < heads and kv % tp:
        raise ConfigError(
            f"{where('num_kv_heads')}: num_kv_heads {kv} is not divisible by model_parallel_size {tp} "
            f"(each tensor-parallel rank needs whole KV heads); use a multiple of {tp}"
        )
    if cfg.ffn_dim is not None and cfg.ffn_dim % tp:
        raise ConfigError(
            f"{where('intermediate_size')}: the MLP width {cfg.ffn_dim} is not divisible by model_parallel_size {tp}; "
            "change intermediate_size or mlp_multiple_of"
        )
    if cfg.seq_length is not None and cfg.seq_length > cfg.max_position_embeddings:
        raise ConfigError(
            f"{where('seq_length')}: seq_length {cfg.seq_length} is larger than max_position_embeddings "
            f"{cfg.max_position_embeddings}; raise max_position_embeddings to at least {cfg.seq_length}"
        )
    if cfg.rotary_ndims is not None and cfg.rotary_ndims % 2:
        raise ConfigError(
            f"{where('rotary_pct')}: rotary_pct {cfg.rotary_pct} gives {cfg.rotary_ndims} rotary dims per head "
            f"(head_dim {cfg.head_dim}); rotary needs an even number, change rotary_pct"
        )
    if cfg.fp16_lm_cross_entropy and cfg.precision != "fp16":
        raise ConfigError(
            f"{where('fp16_lm_cross_entropy')}: fp16_lm_cross_entropy needs precision fp16 (precision is "
            f"{cfg.precision}); remove it"
        )


def _training(cfg: Config, where) -> None:
    if cfg.min_lr > cfg.lr:
        raise ConfigError(
            f"{where('min_lr')}: min_lr {cfg.min_lr} is larger than the peak lr {cfg.lr} (optimizer.params.lr); "
            "lower min_lr"
        )
    if cfg.train_iters is not None and cfg.train_epochs is not None:
        raise ConfigError(f"{where('train_epochs')}: set train_iters {cfg.train_iters} or train_epochs {cfg.train_epochs}, not both")
    if cfg.save is not None and cfg.checkpoint_factor is None and cfg.extra_save_iters is None:
        raise ConfigError(
            f"{where('save')}: save is set but neither checkpoint_factor nor extra_save_iters is; "
            "add checkpoint_factor (save every N steps)"
        )
    if cfg.checkpoint_factor is not None:
        low = 1 if cfg.checkpoint_scale == "linear" else 1.0000001
        if cfg.checkpoint_factor < low:
            rule = "at least 1" if cfg.checkpoint_scale == "linear" else "larger than 1 with checkpoint_scale log"
            raise ConfigError(f"{where('checkpoint_factor')}: checkpoint_factor {cfg.checkpoint_factor} must be {rule}")
    if cfg.text_gen_type not in ("unconditional", "input-file", "interactive", "precompute"):
        raise ConfigError(
            f"{where('text_gen_type')}: text_gen_type {cfg.text_gen_type!r} must be one of unconditional, input-file, "
            "interactive, precompute"
        )


# Layer class names a pipeline "type:<regex>" partition matches against: upstream's spec classes
# and ours (neox.parallel.pipeline), so upstream configs partition the same way.
PIPELINE_LAYER_NAMES = (
    "EmbeddingPipe", "Embedding", "ParallelTransformerLayerPipe", "TransformerLayer", "NormPipe", "FinalNorm",
    "ParallelLinearPipe", "LMHead",
)


def partition_method_problem(method: str) -> str | None:
    """Why ``pipe_partition_method`` cannot be used (None if it can): DeepSpeed's methods
    ``parameters``, ``uniform`` and ``type:<regex>`` (case-insensitive search of layer class names)."""
    import re

    if method in ("parameters", "uniform"):
        return None
    if not method.startswith("type:"):
        return f"{method!r} is not 'parameters', 'uniform' or 'type:<regex>' (upstream's default: 'type:transformer|mlp')"
    try:
        pattern = re.compile(method.removeprefix("type:"), re.IGNORECASE)
    except re.error as err:
        return f"{method!r} has an invalid regex ({err})"
    if not any(pattern.search(name) for name in PIPELINE_LAYER_NAMES):
        return f"{method!r} matches no layer (class names: {', '.join(PIPELINE_LAYER_NAMES)})"
    return None


def _parallel(cfg: Config, where) -> None:
    """Parallel layouts the engine runs (neox.parallel); each refusal says why and what to change."""
    pp, tp = cfg.pipe_parallel_size, cfg.model_parallel_size
    if pp > cfg.num_layers:
        raise ConfigError(f"{where('pipe_parallel_size')}: pipe_parallel_size {pp} is more than num_layers {cfg.num_layers}")
    if cfg.zero_stage >= 2 and (pp > 1 or tp > 1):
        reason = (
            "DeepSpeed's pipeline engine supports ZeRO stage 0 or 1 only" if pp > 1 else
            "ZeRO 2/3 are not combined with tensor parallelism (upstream refuses it; ZeRO-3 would partition the "
            "tensor-parallel shards again)"
        )
        raise ConfigError(
            f"{where('zero_optimization')}: zero_optimization.stage {cfg.zero_stage} needs pipe_parallel_size <= 1 and "
            f"model_parallel_size 1 (got pipe {pp}, tensor {tp}): {reason}; use stage 1, or drop pipe/tensor parallelism"
        )
    if cfg.sequence_parallel and tp > 1 and cfg.seq_length is not None and cfg.seq_length % tp:
        raise ConfigError(
            f"{where('sequence_parallel')}: sequence_parallel splits the sequence over the {tp} tensor-parallel ranks "
            f"but seq_length {cfg.seq_length} is not divisible by {tp}; use a multiple of {tp} or sequence_parallel: false"
        )
    if pp > 1:
        problem = partition_method_problem(cfg.pipe_partition_method)
        if problem:
            raise ConfigError(f"{where('pipe_partition_method')}: pipe_partition_method {problem}")
    if cfg.train_impl in ("dpo", "rm", "kto") and pp > 1:
        raise ConfigError(
            f"{where('train_impl')}: train_impl {cfg.train_impl} does not support pipeline parallelism "
            f"(pipe_parallel_size {pp}); use pipe_parallel_size 0 or 1"
        )


def _lengths(cfg: Config, where, a: str, b: str) -> None:
    va, vb = getattr(cfg, a), getattr(cfg, b)
    if va is not None and vb is not None and len(va) != len(vb):
        raise ConfigError(f"{where(b)}: {b} has {len(vb)} entries but {a} has {len(va)}; give one per entry")


def _data(cfg: Config, where) -> None:
    splits = ("train", "valid", "test")
    given = [getattr(cfg, f"{s}_data_paths") is not None for s in splits]
    if any(given) and not all(given):
        missing = [f"{s}_data_paths" for s, g in zip(splits, given) if not g]
        raise ConfigError(
            f"{where(missing[0])}: train/valid/test_data_paths must be given together; add {', '.join(missing)}"
        )
    if all(given) and cfg.data_path is not None:
        raise ConfigError(f"{where('data_path')}: set data_path or train/valid/test_data_paths, not both")
    for s in splits:
        _lengths(cfg, where, f"{s}_data_paths", f"{s}_data_weights")
        for kind in ("label", "reward"):
            name = f"{s}_{kind}_data_paths"
            if getattr(cfg, name) is not None:
                if getattr(cfg, f"{s}_data_paths") is None or cfg.data_path is not None:
                    raise ConfigError(f"{where(name)}: {name} needs {s}_data_paths (not data_path)")
                _lengths(cfg, where, f"{s}_data_paths", name)
        pos, neg = f"pos_{s}_data_paths", f"neg_{s}_data_paths"
        if (getattr(cfg, pos) is None) != (getattr(cfg, neg) is None):
            missing = neg if getattr(cfg, neg) is None else pos
            raise ConfigError(f"{where(missing)}: pairwise data needs both {pos} and {neg}; add {missing}")
        _lengths(cfg, where, pos, neg)
        for side in ("pos", "neg"):
            _lengths(cfg, where, f"{side}_{s}_data_paths", f"{side}_{s}_label_data_paths")
    parts = [p for p in cfg.split.replace("/", ",").split(",") if p.strip()]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) > 3 or min(numbers) < 0 or sum(numbers) <= 0:
        raise ConfigError(f"{where('split')}: split {cfg.split!r} must be up to three non-negative numbers like '969, 30, 1'")
    if cfg.dataset_impl == "pairwise" and cfg.pos_train_data_paths is None and cfg.data_path is None:
        raise ConfigError(
            f"{where('dataset_impl')}: dataset_impl pairwise needs pos_/neg_train_data_paths (chosen/rejected datasets)"
        )
