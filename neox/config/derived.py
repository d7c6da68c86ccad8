"""Every derived config value, computed in one place.

Matches upstream's ``NeoXArgs.calculate_derived`` and ``calculate_batch_parameters``
(``megatron/neox_arguments/arguments.py``), the vocab padding of
``megatron/tokenizer/tokenizer.py`` and the MLP width rule of ``ParallelMLP``
(``megatron/model/transformer.py``), with these deliberate differences:

- **World size.** Upstream counts GPUs from a hostfile or ``torch.cuda.device_count()``.
  neox takes it from the caller (the training loop passes the real one), else from
  ``WORLD_SIZE``, else from the config's ``global_num_gpus``/``world_size``; else, when all
  three batch values are given, it is the one that makes them consistent (so a cluster config
  checks cleanly on a laptop); else pipe x tensor, one data-parallel replica (1 without model
  parallelism: a CPU run).
- **Gradient accumulation.** Upstream's dataclass default of 1 counts as "given", so a config
  with ``train_batch_size`` and ``train_micro_batch_size_per_gpu`` but no
  ``gradient_accumulation_steps`` fails unless train_batch = micro x dp. neox derives the
  accumulation steps in that case (gas = train_batch / (micro x dp), which must be whole).
  Upstream floors the other divisions silently; neox requires them to be exact.
- **Padded vocab.** Computed from the tokenizer when its files are readable here. When they
  are not (checking a cluster config on a laptop), an explicit ``padded_vocab_size`` is used;
  otherwise it stays None with a note, and consumers call ``cfg.require_padded_vocab_size()``.
  An explicit value that disagrees with the tokenizer is an error (upstream silently replaces it).
"""

from __future__ import annotations

import copy
import functools
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neox.config.schema.optim import ADAM_FAMILY
from neox.errors import ConfigError

if TYPE_CHECKING:
    from neox.config.config import Config

# Upstream's block when zero_optimization is absent (DeepSpeed's defaults).
ZERO_DEFAULTS = {
    "stage": 0,
    "allgather_partitions": True,
    "reduce_scatter": True,
    "allgather_bucket_size": int(5e8),
    "overlap_comm": False,
    "reduce_bucket_size": int(5e8),
    "contiguous_gradients": False,
}
# Upstream's optimizer when none is configured (lr 0.001).
OPTIMIZER_DEFAULT = {"type": "Adam", "params": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1.0e-8}}
GATED_ACTIVATIONS = ("geglu", "reglu", "swiglu", "bilinear", "glu")
DTYPES = {"fp16": "float16", "bfloat16": "bfloat16", "fp32": "float32"}
ATTENTION_TYPES = (
    "global", "local", "sparse_fixed", "sparse_variable", "bigbird", "bslongformer", "gmlp", "amlp", "flash", "rwkv", "mamba",
)
IMPLEMENTED_ATTENTION = ("global", "flash")


def derive(cfg: Config, where, *, world_size: int | None, explicit: set[str]) -> None:
    """Fill every derived attribute of ``cfg`` in place. ``where(key)`` names a key's file for errors."""
    _world(cfg, where, world_size, explicit)
    _batch(cfg, where, explicit)
    _precision(cfg, where)
    _zero(cfg, where, explicit)
    _optimizer(cfg, where, explicit)
    _schedule(cfg)
    _shape(cfg, where)
    _attention(cfg, where)
    _vocab(cfg, where, explicit)
    _misc(cfg, explicit)


def _check_given(cfg: Config, where, explicit: set[str], name: str, value: Any, rule: str) -> None:
    """A derived key written in a file must agree with what neox computes."""
    if name in explicit and getattr(cfg, name) != value:
        raise ConfigError(
            f"{where(name)}: {name} {getattr(cfg, name)!r} disagrees with the derived value {value!r} ({rule}); "
            f"remove {name}"
        )
    setattr(cfg, name, value)


def _world(cfg: Config, where, world_size: int | None, explicit: set[str]) -> None:
    pp, tp = max(cfg.pipe_parallel_size, 1), cfg.model_parallel_size
    source = "argument"
    if world_size is None and os.environ.get("WORLD_SIZE"):
        world_size, source = int(os.environ["WORLD_SIZE"]), "WORLD_SIZE"
    if world_size is None:
        for name in ("global_num_gpus", "world_size"):
            if getattr(cfg, name):
                world_size, source = getattr(cfg, name), name
                break
    if world_size is None:
        tb, mb, gas = cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu, cfg.gradient_accumulation_steps
        if tb and mb and "gradient_accumulation_steps" in explicit and gas and tb % (mb * gas) == 0:
            world_size, source = tb // (mb * gas) * pp * tp, "inferred from the batch sizes"
        else:
            world_size, source = pp * tp, "default: one data-parallel replica (pass --world-size)"
    if world_size < 1:
        raise ConfigError(f"{where('world_size')}: world size {world_size} must be at least 1")
    if world_size % (pp * tp):
        raise ConfigError(
            f"{where('pipe_parallel_size')}: world size {world_size} is not divisible by pipe {pp} x tensor {tp} "
            f"= {pp * tp}; use a multiple of {pp * tp} GPUs or change pipe_parallel_size/model_parallel_size"
        )
    cfg.world_size = world_size
    cfg.data_parallel_size = world_size // (pp * tp)
    cfg._notes["world_size"] = source
    cfg.is_pipe_parallel = cfg.pipe_parallel_size >= 1


def _batch(cfg: Config, where, explicit: set[str]) -> None:
    dp = cfg.data_parallel_size
    tb, mb = cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu
    gas = cfg.gradient_accumulation_steps if "gradient_accumulation_steps" in explicit else None
    layout = f"(data-parallel = world size {cfg.world_size} / (pipe {max(cfg.pipe_parallel_size, 1)} x tensor {cfg.model_parallel_size}))"
    for name, value in (("train_batch_size", tb), ("train_micro_batch_size_per_gpu", mb), ("gradient_accumulation_steps", gas)):
        if value is not None and value < 1:
            raise ConfigError(f"{where(name)}: {name} {value} must be at least 1")

    def exact(total: int, parts: int, what: str, name: str) -> int:
        if total % parts:
            raise ConfigError(
                f"{where(name)}: {name} {total} is not divisible by {what} = {parts}; "
                f"change {name} or the batch/parallel sizes {layout}"
            )
        return total // parts

    if tb is not None and mb is not None and gas is not None:
        if tb != mb * gas * dp:
            raise ConfigError(
                f"{where('train_batch_size')}: train_batch_size {tb} is not micro_batch {mb} x grad_accum {gas} "
                f"x data-parallel {dp} = {mb * gas * dp}; change one of them {layout}"
            )
    elif tb is not None and mb is not None:
        gas = exact(tb, mb * dp, f"micro_batch {mb} x data-parallel {dp}", "train_batch_size")
    elif tb is not None and gas is not None:
        mb = exact(tb, gas * dp, f"grad_accum {gas} x data-parallel {dp}", "train_batch_size")
    elif mb is not None:
        gas = gas or 1
        tb = mb * gas * dp
    elif tb is not None:
        gas = 1
        mb = exact(tb, dp, f"data-parallel {dp}", "train_batch_size")
    else:
        raise ConfigError(
            f"{where('train_micro_batch_size_per_gpu')}: no batch size is set; set train_micro_batch_size_per_gpu "
            "(and gradient_accumulation_steps) or train_batch_size"
        )
    cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu, cfg.gradient_accumulation_steps = tb, mb, gas
    _check_given(cfg, where, explicit, "batch_size", mb, "it is train_micro_batch_size_per_gpu")


def _enabled(block: Any) -> bool:
    return isinstance(block, dict) and bool(block.get("enabled", False))


def _precision(cfg: Config, where) -> None:
    wanted = cfg.precision
    for block_name, precision in (("fp16", "fp16"), ("bf16", "bfloat16")):
        if _enabled(getattr(cfg, block_name)):
            if wanted is None:
                wanted = precision
            elif wanted != precision:
                raise ConfigError(
                    f"{where(block_name)}: {block_name}.enabled is true but precision is {wanted!r}; "
                    f"set precision: {precision} or disable the {block_name} block"
                )
    cfg.precision = wanted or "fp32"
    cfg.params_dtype = DTYPES[cfg.precision]
    cfg.dynamic_loss_scale = cfg.loss_scale is None


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _zero(cfg: Config, where, explicit: set[str]) -> None:
    block = cfg.zero_optimization if cfg.zero_optimization is not None else copy.deepcopy(ZERO_DEFAULTS)
    if not isinstance(block, dict):
        raise ConfigError(f"{where('zero_optimization')}: zero_optimization must be a mapping like {{stage: 1}}")
    stage = block.get("stage", 0)
    if type(stage) is not int or stage not in (0, 1, 2, 3):
        raise ConfigError(f"{where('zero_optimization')}: zero_optimization.stage {stage!r} must be 0, 1, 2 or 3")
    cfg.zero_optimization = block
    derived = {
        "zero_stage": stage,
        "zero_reduce_scatter": block.get("reduce_scatter", ZERO_DEFAULTS["reduce_scatter"]),
        "zero_contiguous_gradients": block.get("contiguous_gradients", ZERO_DEFAULTS["contiguous_gradients"]),
        "zero_reduce_bucket_size": _int(block.get("reduce_bucket_size", ZERO_DEFAULTS["reduce_bucket_size"])),
        "zero_allgather_bucket_size": _int(block.get("allgather_bucket_size", ZERO_DEFAULTS["allgather_bucket_size"])),
    }
    for name, value in derived.items():
        _check_given(cfg, where, explicit, name, value, "it comes from zero_optimization")


def _optimizer(cfg: Config, where, explicit: set[str]) -> None:
    from neox.config.fields import TypeMismatch, coerce
    from neox.config.schema import KEYS

    block = cfg.optimizer if cfg.optimizer is not None else OPTIMIZER_DEFAULT
    name = block["type"]
    try:
        kind = coerce(name, KEYS["optimizer_type"].type)
    except TypeMismatch:
        raise ConfigError(
            f"{where('optimizer')}: optimizer.type {name!r} is not an upstream GPT-NeoX optimizer; "
            f"use one of Adam, AdamW, cpu_adam, cpu_torch_adam"
        ) from None
    if kind not in ADAM_FAMILY:
        raise ConfigError(
            f"{where('optimizer')}: optimizer.type {name!r} is an upstream GPT-NeoX optimizer neox does not implement; "
            "use Adam, AdamW, cpu_adam or cpu_torch_adam"
        )
    lr = block["params"].get("lr", OPTIMIZER_DEFAULT["params"]["lr"])
    if type(lr) not in (int, float):
        raise ConfigError(f"{where('optimizer')}: optimizer.params.lr {lr!r} must be a number, e.g. 3.0e-4")
    _check_given(cfg, where, explicit, "optimizer_type", kind, "it comes from optimizer.type")
    _check_given(cfg, where, explicit, "lr", lr, "it comes from optimizer.params.lr")


def _schedule(cfg: Config) -> None:
    if cfg.lr_decay_iters is not None:
        total = cfg.lr_decay_iters
    elif cfg.train_iters is not None and cfg.lr_decay_fraction is not None:
        total = math.floor(cfg.train_iters * cfg.lr_decay_fraction)
    else:
        total = cfg.train_iters
    cfg.lr_decay_iters = max(total, 1) if total is not None else None
    cfg.warmup_iters = cfg.warmup * cfg.lr_decay_iters if cfg.lr_decay_iters is not None else None


def mlp_widths(hidden: int, activation: str, intermediate: int | None, expansion: float | None, multiple_of: int):
    """(linear1 outputs, linear2 inputs) exactly as upstream's ``ParallelMLP`` computes them."""
    if intermediate:
        ffn = intermediate
    elif expansion:
        ffn = int(expansion * hidden)
    else:
        ffn = 4 * hidden
    ffn_in = ffn
    if activation in GATED_ACTIVATIONS:
        ffn = int(ffn * 2 / 3)
        ffn_in = ffn // 2
    m = multiple_of
    return (2 * m) * ((ffn + 2 * m - 1) // (2 * m)), m * ((ffn_in + m - 1) // m)


def _shape(cfg: Config, where) -> None:
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    cfg.kv_heads = cfg.num_kv_heads or heads
    cfg.head_dim = h // heads if h and heads and h % heads == 0 else None
    if cfg.pos_emb != "rotary" or cfg.head_dim is None:
        cfg.rotary_ndims = 0 if cfg.pos_emb != "rotary" else None
    else:
        cfg.rotary_ndims = int(cfg.head_dim * cfg.rotary_pct) if cfg.rotary_pct < 1 else cfg.head_dim
    cfg.is_gated_mlp = cfg.activation in GATED_ACTIVATIONS
    if not h:
        cfg.ffn_dim = None
        return
    if cfg.intermediate_size is not None and cfg.expansion_factor is not None:
        raise ConfigError(
            f"{where('expansion_factor')}: set intermediate_size {cfg.intermediate_size} or expansion_factor "
            f"{cfg.expansion_factor}, not both"
        )
    out1, in2 = mlp_widths(h, cfg.activation, cfg.intermediate_size, cfg.expansion_factor, cfg.mlp_multiple_of)
    expected = 2 * in2 if cfg.is_gated_mlp else in2
    if out1 != expected:
        raise ConfigError(
            f"{where('intermediate_size')}: MLP widths do not fit: with activation {cfg.activation}, hidden_size {h}, "
            f"intermediate_size {cfg.intermediate_size}, expansion_factor {cfg.expansion_factor} and mlp_multiple_of "
            f"{cfg.mlp_multiple_of}, upstream's rule gives linear1 {out1} outputs but linear2 {in2} inputs "
            f"(upstream fails at run time); change intermediate_size or mlp_multiple_of"
        )
    cfg.ffn_dim = in2


def expand_attention(config: Any, num_layers: int) -> list:
    """Upstream's ``expand_attention_types``: [[types, repeat], ...] into one type per layer."""
    if all(isinstance(i, str) for i in config):
        return list(config)
    out: list = []
    for item in config:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (list, tuple))):
            raise ValueError(f"item {item!r} is not [[types...], repeat]")
        types, repeat = list(item[0]), item[1]
        if repeat == "all":
            if not types or num_layers % len(types):
                raise ValueError(f"pattern {types} does not tile {num_layers} layers")
            return types * (num_layers // len(types))
        if type(repeat) is not int or repeat < 0:
            raise ValueError(f"repeat {repeat!r} must be a whole number or 'all'")
        out.extend(types * repeat)
    return out


def _attention(cfg: Config, where) -> None:
    if not cfg.num_layers:
        cfg.attention_types = None
        return
    config = cfg.attention_config if cfg.attention_config is not None else [[["global"], cfg.num_layers]]
    try:
        types = expand_attention(config, cfg.num_layers)
    except ValueError as err:
        raise ConfigError(
            f"{where('attention_config')}: attention_config {err}; write it like [[[\"flash\"], {cfg.num_layers}]]"
        ) from None
    if len(types) != cfg.num_layers:
        raise ConfigError(
            f"{where('attention_config')}: attention_config gives {len(types)} layer types but num_layers is "
            f"{cfg.num_layers}; make the repeats add up to {cfg.num_layers}"
        )
    for t in types:
        if t not in ATTENTION_TYPES:
            raise ConfigError(
                f"{where('attention_config')}: attention type {t!r} is not a GPT-NeoX attention type; "
                f"use one of {', '.join(IMPLEMENTED_ATTENTION)}"
            )
        if t not in IMPLEMENTED_ATTENTION:
            raise ConfigError(
                f"{where('attention_config')}: attention type {t!r} is an upstream GPT-NeoX feature neox does not "
                f"implement; use global or flash (with sliding_window_width for a sliding window)"
            )
    cfg.attention_types = types


@functools.lru_cache(maxsize=32)
def _tokenizer_vocab(kind: str, vocab_file: str | None, merge_file: str | None, stamp: tuple) -> int:
    from neox.tokenizer import build_tokenizer

    return build_tokenizer(kind, vocab_file, merge_file).vocab_size


def _stamp(path: str | None) -> tuple:
    if not path:
        return ()
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return ("missing",)
    return (st.st_mtime_ns, st.st_size)


def tokenizer_vocab_size(kind: str, vocab_file: str | None, merge_file: str | None) -> int:
    """The unpadded vocab size of a tokenizer (cached per file version)."""
    return _tokenizer_vocab(kind, vocab_file, merge_file, (_stamp(vocab_file), _stamp(merge_file)))


def pad_vocab(vocab: int, divisible_by: int, model_parallel_size: int) -> int:
    """Upstream's ``_vocab_size_with_padding``: round up to a multiple of divisible_by x TP."""
    multiple = divisible_by * model_parallel_size
    return multiple * math.ceil(vocab / multiple)


# tiktoken's built-in encodings (n_vocab), so that loading a config never downloads one.
TIKTOKEN_VOCAB = {"cl100k_base": 100277, "o200k_base": 200019, "p50k_base": 50281, "r50k_base": 50257, "gpt2": 50257}


def _vocab(cfg: Config, where, explicit: set[str]) -> None:
    if cfg.make_vocab_size_divisible_by < 1:
        raise ConfigError(f"{where('make_vocab_size_divisible_by')}: make_vocab_size_divisible_by must be at least 1")
    kind, vocab_file = cfg.tokenizer_type, cfg.vocab_file
    if kind == "TiktokenTokenizer" and (vocab_file or "cl100k_base") in TIKTOKEN_VOCAB:
        vocab = TIKTOKEN_VOCAB[vocab_file or "cl100k_base"]
        computed, reason = pad_vocab(vocab, cfg.make_vocab_size_divisible_by, cfg.model_parallel_size), None
    elif kind in ("TiktokenTokenizer", "HFGPT2Tokenizer") and not (vocab_file and Path(vocab_file).exists()):
        # A hub name: loading it could mean a download, which a config check must not do.
        computed, reason = None, f"{kind} {vocab_file or '(default)'} is not a local file and is not loaded at config time"
    elif kind != "CharLevelTokenizer" and not vocab_file:
        computed, reason = None, f"no vocab_file is set for tokenizer_type {kind}"
    else:
        try:
            vocab = tokenizer_vocab_size(cfg.tokenizer_type, cfg.vocab_file, cfg.merge_file)
            computed, reason = pad_vocab(vocab, cfg.make_vocab_size_divisible_by, cfg.model_parallel_size), None
        except ConfigError as err:
            computed, reason = None, str(err)
        except Exception as err:  # a hub lookup or tokenizer library failure: report, do not crash `check`
            computed, reason = None, f"tokenizer {cfg.tokenizer_type} could not be loaded ({type(err).__name__}: {err})"
    given = cfg.padded_vocab_size if "padded_vocab_size" in explicit else None
    if computed is not None and given is not None and given != computed:
        raise ConfigError(
            f"{where('padded_vocab_size')}: padded_vocab_size {given} disagrees with the tokenizer ({cfg.vocab_file}), "
            f"which pads to {computed} (multiple of make_vocab_size_divisible_by {cfg.make_vocab_size_divisible_by} "
            f"x model_parallel_size {cfg.model_parallel_size}); remove padded_vocab_size"
        )
    if given is not None and given % (cfg.make_vocab_size_divisible_by * cfg.model_parallel_size):
        multiple = cfg.make_vocab_size_divisible_by * cfg.model_parallel_size
        raise ConfigError(
            f"{where('padded_vocab_size')}: padded_vocab_size {given} is not a multiple of make_vocab_size_divisible_by "
            f"x model_parallel_size = {multiple}; use {pad_vocab(given, multiple, 1)}"
        )
    cfg.padded_vocab_size = computed if computed is not None else given
    if cfg.padded_vocab_size is None:
        cfg._notes["padded_vocab_size"] = reason
    elif computed is None:
        cfg._notes["padded_vocab_size"] = f"given explicitly (tokenizer not loaded: {reason})"


def _misc(cfg: Config, explicit: set[str]) -> None:
    cfg.clip_grad = cfg.gradient_clipping
    if cfg.text_gen_type is None:
        cfg.text_gen_type = "input-file" if cfg.sample_input_file else "unconditional"
    # Upstream fills equal blend weights when none are given (pairwise data counts its pos paths).
    for split in ("train", "valid", "test"):
        weights = f"{split}_data_weights"
        paths = getattr(cfg, f"{split}_data_paths") or getattr(cfg, f"pos_{split}_data_paths")
        if paths and getattr(cfg, weights) is None:
            setattr(cfg, weights, [1.0] * len(paths))
