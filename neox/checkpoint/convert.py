"""HF <-> NeoX checkpoint conversion: what ``tools/ckpts/convert_*.py`` run.

**HF -> NeoX** (:func:`hf_to_neox`): a ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM`` directory or
Hub name becomes a save directory the engine trains from::

    <output>/latest                          "global_step<iteration>"
    <output>/global_step<iteration>/         the weights at the requested TP (sequential or layer files),
                                             configs/<name>.yml
    <output>/configs/<name>.yml              the NeoX config of the architecture, tokenizer and layout
    <output>/tokenizer/                      the HF tokenizer (tokenizer.json is the config's vocab_file)

The vocabulary is padded as NeoX pads it (a multiple of ``make_vocab_size_divisible_by`` x TP,
facts §6.1): the config picks the largest divisor (128, 64, ... 1) that reproduces HF's
``vocab_size`` from the tokenizer, and only when no divisor can (HF's matrix has a size TP does not
divide, or fewer rows than the tokenizer) zero rows are appended.

**NeoX -> HF** (:func:`neox_to_hf`): any TP/PP layout and name dialect (detected, as upstream's
``convert_neox_to_hf.py``) becomes an HF directory (``config.json`` readable by transformers 4.57
and 5.x, safetensors, tokenizer). Unlike upstream: ``precision="auto"`` takes the config's
precision (bf16 included; upstream falls back to fp32 for bf16 configs), the row-parallel biases
of sequential-residual models are not multiplied by TP (:mod:`neox.checkpoint.tp`), a
checkpoint that does not fit its config is refused (:mod:`neox.checkpoint.consistency`), and the
``bias_gelu_fusion`` (tanh) GELU is exported as ``gelu_new`` rather than ``gelu``.

Both directions write into a hidden staging directory beside the output and rename it at the
end, so a failure leaves nothing half-written; ``verify`` compares engine and ``transformers``
logits (:mod:`neox.checkpoint.verify`) before publishing and refuses the output above tolerance.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from neox.checkpoint import consistency, dialects, hf, hf_files, layout, shards, tp, verify
from neox.checkpoint.model_config import config_for_checkpoint, in_precision, single_rank
from neox.checkpoint.writer import write_checkpoint
from neox.errors import CheckpointError, ConfigError

ARCH_OF_MODEL_TYPE = {"gpt_neox": "neox", "llama": "llama"}
PRECISION_KEY = {torch.float32: "fp32", torch.bfloat16: "bfloat16", torch.float16: "fp16"}
MAX_SEQ_LENGTH = 8192  # the generated config's seq_length: the HF context, capped (a training choice)
# Beside the architecture config in the checkpoint's configs/: what a config needs to load that a
# conversion does not decide (a batch size), so the checkpoint rebuilds its model on its own.
CONVERSION_CONFIG = "conversion.yml"
CONVERSION_KEYS = {"train_micro_batch_size_per_gpu": 1}

Log = Callable[[str], None]


# ---------------------------------------------------------------- output staging


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CheckpointError(f"output {out} already exists and is not empty; choose another output or pass --overwrite")


def staging_dir(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh staging directory beside ``out``: published as ``out`` when the block completes,
    removed when it fails, so a half-written output never appears under its final name."""
    tmp = staging_dir(out)
    try:
        yield tmp
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the fully written ``tmp`` (same file system, so a rename)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _floating(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}


def _dominant_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for v in state.values():
        if v.is_floating_point():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def resolve_precision(precision: str, default: torch.dtype) -> torch.dtype:
    if precision == "auto":
        return default
    if precision not in hf_files.DTYPES:
        raise ConfigError(f"precision {precision!r} is not one of auto, {', '.join(hf_files.DTYPES)}")
    return hf_files.DTYPES[precision]


# ---------------------------------------------------------------- vocabulary padding


def vocab_padding(hf_vocab: int, tokenizer_vocab: int, tp_size: int) -> tuple[int, int]:
    """(padded vocab, make_vocab_size_divisible_by) for an HF matrix of ``hf_vocab`` rows at TP ``tp_size``."""
    from neox.config.derived import pad_vocab

    target = -(-max(hf_vocab, tokenizer_vocab) // tp_size) * tp_size
    for divisor in (128, 64, 32, 16, 8, 4, 2, 1):
        if pad_vocab(tokenizer_vocab, divisor, tp_size) == target:
            return target, divisor
    return target, target // tp_size


def pad_vocab_rows(state: dict[str, torch.Tensor], cfg, rows: int) -> dict[str, torch.Tensor]:
    """Embedding and head with exactly ``rows`` rows: zero rows appended or trailing padding rows dropped."""
    out = dict(state)
    for key in ("sequential.0.word_embeddings.weight", f"sequential.{cfg.num_layers + 4}.final_linear.weight"):
        if key in out and out[key].shape[0] != rows:
            w = out[key]
            if w.shape[0] > rows:
                out[key] = w[:rows]
            else:
                out[key] = torch.cat([w, w.new_zeros(rows - w.shape[0], *w.shape[1:])])
    return out


# ---------------------------------------------------------------- HF -> NeoX


def arch_of(hf_cfg) -> str:
    arch = ARCH_OF_MODEL_TYPE.get(getattr(hf_cfg, "model_type", None))
    if arch is None:
        raise CheckpointError(
            f"HF model_type {getattr(hf_cfg, 'model_type', None)!r} is not supported; GPTNeoXForCausalLM "
            "(gpt_neox) and Llama-style (llama) models convert"
        )
    return arch


def neox_args(hf_cfg, *, tp_size: int, pp: int, dtype: torch.dtype, divisible_by: int, vocab_file: str) -> dict:
    """The NeoX config keys of the converted checkpoint (architecture, tokenizer, layout, precision)."""
    args = hf.neox_args_from_hf(hf_cfg)
    args["seq_length"] = min(args["max_position_embeddings"], MAX_SEQ_LENGTH)
    args["hidden_dropout"] = float(getattr(hf_cfg, "hidden_dropout", 0.0) or 0.0)
    args["attention_dropout"] = float(getattr(hf_cfg, "attention_dropout", 0.0) or 0.0)
    args.update(
        tokenizer_type="HFTokenizer",
        vocab_file=vocab_file,
        make_vocab_size_divisible_by=divisible_by,
        model_parallel_size=tp_size,
        pipe_parallel_size=pp,
        precision=PRECISION_KEY[dtype],
    )
    return args


def config_yaml(args: dict, *, source: str, output: Path, name: str, iteration: int) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Converted from {source} by tools/ckpts/convert_hf_to_neox.py, {stamp}.\n"
        "# The model's architecture, its tokenizer (saved beside this file) and the checkpoint's parallel\n"
        "# layout and precision. Add data, batch and optimizer settings in your own YAML file and train from\n"
        "# the converted weights:\n"
        f"#   neox train {output / 'configs' / name} yours.yml load={output} finetune=true\n"
        "# (finetune: start at iteration 0 with these weights"
        + (f"; to continue a schedule at iteration {iteration}, set\n#  no_load_optim=true no_load_rng=true instead"
           if iteration else "")
        + "). seq_length is the training context length.\n"
    )
    return header + yaml.safe_dump(args, sort_keys=False, default_flow_style=False)


def _conversion_yaml() -> str:
    return (
        "# Written by the HF -> NeoX conversion so that this checkpoint's configs/ load on their own\n"
        "# (neox.checkpoint.load_model); training sets its own batch sizes.\n"
    ) + yaml.safe_dump(CONVERSION_KEYS, sort_keys=False)


def hf_to_neox(
    model: str,
    output: str | Path,
    *,
    revision: str | None = None,
    tp_size: int = 1,
    pp: int = 0,
    iteration: int = 0,
    naming: str = "current",
    precision: str = "auto",
    tokenizer: str | None = None,
    cache_dir: str | None = None,
    overwrite: bool = False,
    verify_logits: bool = False,
    verify_dtype: str = "fp32",
    tolerance: float | None = None,
    progress: bool = True,
    log: Log = print,
) -> dict:
    """Convert the HF model ``model`` into a NeoX save directory ``output``; returns a summary."""
    from neox import config as neox_config
    from neox.tokenizer import build_tokenizer

    if tp_size < 1 or pp < 0 or iteration < 0:
        raise ConfigError(f"tp must be >= 1, pp >= 0 and iteration >= 0 (got tp={tp_size}, pp={pp}, iteration={iteration})")
    if naming not in dialects.DIALECTS:
        raise ConfigError(f"naming {naming!r} is not one of {', '.join(dialects.DIALECTS)}")
    out = Path(output).expanduser().resolve()
    check_output(out, overwrite)
    src = hf_files.resolve_source(model, revision, cache_dir)
    hf_cfg = hf_files.read_config(src)
    arch = arch_of(hf_cfg)
    with staged(out) as tmp:
        tok_json = hf_files.save_hf_tokenizer(tokenizer or src, tmp / "tokenizer")
        tokenizer_vocab = build_tokenizer("HFTokenizer", str(tok_json)).vocab_size
        weights = hf_files.read_weights(src, progress=progress)
        dtype = resolve_precision(precision, _dominant_dtype(weights))
        padded, divisible_by = vocab_padding(hf_cfg.vocab_size, tokenizer_vocab, tp_size)
        final_vocab_file = out / "tokenizer" / "tokenizer.json"
        args = neox_args(
            hf_cfg, tp_size=tp_size, pp=pp, dtype=dtype, divisible_by=divisible_by, vocab_file=str(final_vocab_file)
        )
        try:
            cfg = neox_config.from_dict(
                {**args, **CONVERSION_KEYS, "vocab_file": str(tok_json)}, world_size=tp_size * max(pp, 1)
            )
        except ConfigError as err:
            raise ConfigError(f"the converted model at TP {tp_size}: {str(err).removeprefix('dict: ')}") from None
        assert cfg.padded_vocab_size == padded, (cfg.padded_vocab_size, padded)
        one = single_rank(cfg)
        full = hf.hf_to_neox(weights, one, arch)
        del weights
        full = pad_vocab_rows(full, one, padded)
        consistency.check_shapes(full, one, f"HF model {model}")
        full = _floating(full, dtype)
        name = f"{Path(model.rstrip('/')).name}.yml"
        text = config_yaml(
            args, source=f"{model}{'@' + revision if revision else ''}", output=out, name=name, iteration=iteration
        )
        write_checkpoint(
            tmp, iteration, tp.split_state(full, cfg, tp_size), cfg, pp=pp, naming=naming,
            config_files={name: text, CONVERSION_CONFIG: _conversion_yaml()}, progress=progress,
        )
        (tmp / layout.CONFIGS_DIR).mkdir()
        (tmp / layout.CONFIGS_DIR / name).write_text(text)
        summary = {
            "direction": "hf_to_neox", "source": str(model), "revision": revision, "architecture": arch,
            "output": str(out), "checkpoint": str(out / layout.tag(iteration)), "config": str(out / "configs" / name),
            "tp": tp_size, "pp": pp, "layout": "sequential" if pp == 0 else "pipeline", "naming": naming,
            "iteration": iteration, "dtype": str(dtype).removeprefix("torch."), "hf_vocab_size": hf_cfg.vocab_size,
            "tokenizer_vocab_size": tokenizer_vocab, "padded_vocab_size": padded,
            "make_vocab_size_divisible_by": divisible_by,
            "parameters": sum(v.numel() for v in full.values() if torch.is_tensor(v)),
        }
        del full
        if padded != hf_cfg.vocab_size:
            log(f"note: vocab padded from {hf_cfg.vocab_size} to {padded} rows (zeros) to divide by TP {tp_size}")
        if verify_logits:
            from neox.checkpoint import load_model

            ids = verify.sample_ids(min(hf_cfg.vocab_size, tokenizer_vocab), min(64, one.seq_length))
            engine = load_model(tmp / layout.tag(iteration), config=in_precision(one, verify.PRECISION[verify_dtype]))
            ours = verify.engine_logits(engine, ids, verify_dtype, None)
            ref = verify.hf_logits(src, ids, verify_dtype, dtype)
            result = verify.compare(ours, ref, vocab=hf_cfg.vocab_size, dtype=verify_dtype, tolerance=tolerance)
            verify.record(result, summary, log, what="engine and HF logits", out=out)
    return summary


# ---------------------------------------------------------------- NeoX -> HF


def pick_architecture(cfg, architecture: str) -> str:
    """``neox``/``llama`` for ``architecture`` ``auto`` (from the norm and activation) or as given."""
    if architecture == "auto":
        if cfg.norm == "rmsnorm" and cfg.activation == "swiglu":
            architecture = "llama"
        elif cfg.norm == "layernorm":
            architecture = "neox"
        else:
            raise ConfigError(
                f"cannot pick an HF architecture for norm {cfg.norm!r} with activation {cfg.activation!r}; "
                "GPTNeoX needs layernorm, Llama needs rmsnorm + swiglu"
            )
    if architecture not in hf.ARCHITECTURES:
        raise ConfigError(f"architecture {architecture!r} is not one of auto, {', '.join(hf.ARCHITECTURES)}")
    hf.check_hf_compatible(cfg, architecture)
    return architecture


def read_checkpoint(ckpt_dir: Path, cfg, *, progress: bool = False) -> tuple[dict[str, torch.Tensor], object]:
    """The merged, checked, current-name state of ``ckpt_dir`` and the TP = 1 config describing it."""
    info = shards.scan(ckpt_dir)
    per_rank = [dialects.to_current(s, cfg.norm) for s in shards.read_shards(ckpt_dir, progress=progress)]
    rows = per_rank[0]["sequential.0.word_embeddings.weight"].shape[0] * info.tp if per_rank[0] else None
    if cfg.padded_vocab_size is None:  # the tokenizer file is not on this machine: the checkpoint says
        cfg.padded_vocab_size = rows
    one = single_rank(cfg)
    consistency.check_keys(per_rank[0], one, str(ckpt_dir))
    full = tp.merge_states(per_rank, one)
    consistency.check_shapes(full, one, str(ckpt_dir))
    return full, one


def neox_to_hf(
    ckpt: str | Path,
    output: str | Path,
    *,
    config_files: Sequence[str] | None = None,
    architecture: str = "auto",
    precision: str = "auto",
    save_tokenizer: bool = True,
    vocab_is_hf_tokenizer: bool = False,
    pad_token_id: int | None = None,
    overwrite: bool = False,
    verify_logits: bool = False,
    verify_dtype: str = "fp32",
    tolerance: float | None = None,
    max_shard_size: str = "5GB",
    progress: bool = True,
    log: Log = print,
) -> dict:
    """Convert the NeoX checkpoint ``ckpt`` into an HF directory ``output``; returns a summary."""
    ckpt_dir = layout.resolve(ckpt)
    out = Path(output).expanduser().resolve()
    check_output(out, overwrite)
    cfg = config_for_checkpoint(ckpt_dir, config_files)
    dtype = resolve_precision(precision, getattr(torch, cfg.params_dtype))
    info = shards.scan(ckpt_dir)
    naming = shards.naming_of(ckpt_dir)
    full, one = read_checkpoint(ckpt_dir, cfg, progress=progress)  # refuses a checkpoint its config does not fit
    arch = pick_architecture(one, architecture)
    full = {k: v for k, v in full.items() if not k.endswith("rotary_emb.inv_freq")}
    hf_state = {k: _own(v.to(dtype)) for k, v in hf.neox_to_hf(full, one, arch).items()}
    with staged(out) as tmp:
        hf_cfg = hf.hf_config(one, arch)
        hf_cfg.architectures = ["GPTNeoXForCausalLM" if arch == "neox" else "LlamaForCausalLM"]
        eod = _eod_id(one)
        if eod is not None:
            hf_cfg.bos_token_id = hf_cfg.eos_token_id = eod
        if pad_token_id is not None:
            hf_cfg.pad_token_id = pad_token_id
        files = hf_files.write_weights(hf_state, tmp, max_shard_size)
        del hf_state
        hf_files.write_config(hf_cfg, tmp, dtype)
        if save_tokenizer:
            hf_files.save_neox_tokenizer(
                one, tmp, vocab_is_hf_tokenizer=vocab_is_hf_tokenizer, pad_token_id=pad_token_id
            )
        summary = {
            "direction": "neox_to_hf", "checkpoint": str(ckpt_dir), "output": str(out), "architecture": arch,
            "layout": info.layout, "tp": info.tp, "pp": info.pp, "naming": naming,
            "iteration": layout.iteration_of(ckpt_dir.name), "dtype": str(dtype).removeprefix("torch."),
            "vocab_size": one.padded_vocab_size, "files": files, "tokenizer": save_tokenizer,
            "parameters": sum(v.numel() for v in full.values()),
        }
        if verify_logits:
            from neox.model import build

            model = build(in_precision(one, verify.PRECISION[verify_dtype]))
            model.load_state_dict(_with_buffers(model, full), strict=True)
            del full
            vocab = tokenizer_vocab(one) or one.padded_vocab_size
            ids = verify.sample_ids(vocab, min(64, one.seq_length))
            ours = verify.engine_logits(model, ids, verify_dtype, dtype)
            ref = verify.hf_logits(tmp, ids, verify_dtype, None)
            result = verify.compare(ours, ref, vocab=one.padded_vocab_size, dtype=verify_dtype, tolerance=tolerance)
            verify.record(result, summary, log, what="engine and HF logits", out=out)
    return summary


def _own(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor owning exactly its storage (safetensors refuses views of a larger tensor)."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _with_buffers(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` plus the model's own saved buffers it lacks (rotary ``inv_freq``)."""
    return {**{k: v for k, v in model.state_dict().items() if k.endswith("inv_freq")}, **state}


def _tokenizer(cfg):
    from neox.tokenizer import from_config

    try:
        return from_config(cfg)
    except Exception:  # the tokenizer file is not on this machine; the caller copes without it
        return None


def _eod_id(cfg) -> int | None:
    tok = _tokenizer(cfg)
    return tok.eod if tok is not None else None


def tokenizer_vocab(cfg) -> int | None:
    tok = _tokenizer(cfg)
    return tok.vocab_size if tok is not None else None
