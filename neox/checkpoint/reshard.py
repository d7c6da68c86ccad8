"""Offline change of a NeoX checkpoint's tensor- and pipeline-parallel layout.

Resuming at another TP degree needs the weights re-cut (upstream asserts ``model_parallel_size``
against the checkpoint's ``args`` and has no supported path: neox#773, #1158). This reads every
shard in any layout and name dialect, merges them (:mod:`neox.checkpoint.tp`), checks them
against the config, re-pads the vocabulary to what the config derives at the new TP (zero rows
appended, or trailing padding rows dropped: they are beyond the tokenizer's ids), splits for the
new TP and writes the new layout (``pp = 0`` sequential, ``pp >= 1`` layer files) as a new save
directory.

Kept: the weights, the iteration, the LR-scheduler state, DeepSpeed's step counters and the data
position (``consumed_*_samples``). **Dropped, and reported:** the optimizer state (ZeRO/bf16
shards are flat per data-parallel rank and per TP rank; re-cutting them is not implemented) and the
RNG states (per rank). Resume a resharded checkpoint with ``no_load_optim: true`` and
``no_load_rng: true``: the weights, iteration and schedule continue, Adam's moments restart.

The new checkpoint's ``configs/`` are the original files plus ``overrides.txt`` with the new
``model_parallel_size`` and ``pipe_parallel_size``, so it rebuilds its own model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neox.checkpoint import config_files_of, layout, shards, tp, verify
from neox.checkpoint.convert import (
    check_output,
    pad_vocab_rows,
    read_checkpoint,
    staged,
    tokenizer_vocab,
)
from neox.checkpoint.model_config import config_for_checkpoint, in_precision, relayout
from neox.checkpoint.weights import torch_load
from neox.checkpoint.writer import write_checkpoint
from neox.errors import CheckpointError, ConfigError

# Engine state that does not depend on the parallel layout.
KEPT_STATE = ("lr_scheduler", "global_steps", "global_samples", "skipped_steps",
              "consumed_train_samples", "consumed_valid_samples")
RNG_KEYS = ("random_rng_state", "np_rng_state", "torch_rng_state", "cuda_rng_state", "rng_tracker_states")
DROPPED_NOTE = (
    "optimizer and RNG states are not resharded and were dropped; resume with no_load_optim: true and "
    "no_load_rng: true (weights, iteration and LR schedule continue; the optimizer moments restart)"
)


def relayout_config(cfg, tp_size: int, pp: int):
    """``cfg`` at TP ``tp_size`` / PP ``pp``; the padded vocab follows the new TP as training derives it."""
    changes: dict = {"model_parallel_size": tp_size, "pipe_parallel_size": pp}
    if cfg.source("padded_vocab_size") is not None and cfg.padded_vocab_size is not None:
        from neox.config.derived import pad_vocab

        changes["padded_vocab_size"] = pad_vocab(cfg.padded_vocab_size, cfg.make_vocab_size_divisible_by, tp_size)
    return relayout(cfg, f"the model at TP {tp_size}, PP {pp}", **changes), changes


def reshard(
    ckpt: str | Path,
    output: str | Path,
    *,
    tp_size: int,
    pp: int | None = None,
    naming: str | None = None,
    config_files=None,
    overwrite: bool = False,
    verify_logits: bool = False,
    tolerance: float | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Write checkpoint ``ckpt`` at TP ``tp_size`` (and PP ``pp``, default: unchanged) as save directory ``output``."""
    ckpt_dir = layout.resolve(ckpt)
    iteration = layout.iteration_of(ckpt_dir.name)
    if iteration is None:
        raise CheckpointError(f"{ckpt_dir} is not named global_step<N>; point at the checkpoint directory itself")
    out = Path(output).expanduser().resolve()
    if out == ckpt_dir.parent.resolve():
        raise CheckpointError(f"output {out} is the checkpoint's own save directory; write the resharded copy elsewhere")
    check_output(out, overwrite)
    cfg = config_for_checkpoint(ckpt_dir, config_files)
    info = shards.scan(ckpt_dir)
    source_pp = info.pp if info.pp is not None else max(cfg.pipe_parallel_size, 1)
    pp = source_pp if pp is None else pp
    if tp_size < 1 or pp < 0:
        raise ConfigError(f"tp must be >= 1 and pp >= 0 (got tp={tp_size}, pp={pp})")
    naming = naming or shards.naming_of(ckpt_dir)
    new_cfg, changes = relayout_config(cfg, tp_size, pp)
    full, one = read_checkpoint(ckpt_dir, cfg, progress=progress)
    if new_cfg.padded_vocab_size is None:
        raise CheckpointError(
            f"cannot derive the padded vocab at TP {tp_size}: {new_cfg.note('padded_vocab_size')}; make the "
            "config's vocab_file available or pass --config with padded_vocab_size"
        )
    full = pad_vocab_rows(full, one, new_cfg.padded_vocab_size)
    source = torch_load(ckpt_dir / layout.model_states_file(0))
    kept = {k: source[k] for k in KEPT_STATE if isinstance(source, dict) and k in source}
    texts = _config_texts(ckpt_dir, config_files, changes)
    with staged(out) as tmp:
        write_checkpoint(
            tmp, iteration, tp.split_state(full, new_cfg, tp_size), new_cfg, pp=pp, naming=naming,
            config_files=texts, lr_scheduler=kept.pop("lr_scheduler", None), extra_state=kept, progress=progress,
        )
        dropped = [p.name for p in info.optimizer_files]
        had_rng = isinstance(source, dict) and any(k in source for k in RNG_KEYS)
        summary = {
            "checkpoint": str(ckpt_dir), "output": str(out), "iteration": iteration,
            "from": {"tp": info.tp, "pp": source_pp, "layout": info.layout, "padded_vocab_size": one.padded_vocab_size},
            "to": {"tp": tp_size, "pp": pp, "layout": "sequential" if pp == 0 else "pipeline",
                   "padded_vocab_size": new_cfg.padded_vocab_size},
            "naming": naming, "optimizer_state": "dropped" if dropped else "none in source",
            "optimizer_files_dropped": len(dropped), "rng_state": "dropped" if had_rng else "none in source",
            "note": DROPPED_NOTE,
        }
        if dropped or had_rng:
            log(f"note: {DROPPED_NOTE}")
        if verify_logits:
            result = _verify(ckpt_dir, tmp / layout.tag(iteration), one, tolerance)
            verify.record(result, summary, log, what="logits before and after resharding", out=out)
    return summary


def _config_texts(ckpt_dir: Path, config_files, changes: dict) -> dict[str, str]:
    """The source's config files, with the new layout in ``overrides.txt``."""
    files = [Path(f) for f in config_files] if config_files else config_files_of(ckpt_dir)
    texts = {f.name: f.read_text() for f in files if f.name != layout.OVERRIDES_FILE}
    saved = ckpt_dir / layout.CONFIGS_DIR / layout.OVERRIDES_FILE
    overrides = json.loads(saved.read_text()) if saved.is_file() and not config_files else {}
    overrides.update(changes)
    texts[layout.OVERRIDES_FILE] = json.dumps(overrides, indent=1) + "\n"
    return texts


def _verify(before: Path, after: Path, one, tolerance: float | None) -> verify.Verification:
    from neox.checkpoint import load_model
    from neox.checkpoint.model_config import single_rank

    fp32 = in_precision(one, "fp32")
    vocab = tokenizer_vocab(one) or one.padded_vocab_size
    ids = verify.sample_ids(vocab, min(64, one.seq_length))
    ref = verify.engine_logits(load_model(before, config=fp32), ids, "fp32", None)
    new_cfg = in_precision(single_rank(config_for_checkpoint(after)), "fp32")
    with torch.no_grad():
        ours = verify.engine_logits(load_model(after, config=new_cfg), ids, "fp32", None)
    return verify.compare(ours, ref, vocab=min(vocab, ours.shape[-1], ref.shape[-1]), dtype="fp32", tolerance=tolerance)
