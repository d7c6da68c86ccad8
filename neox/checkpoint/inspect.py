"""What a NeoX checkpoint directory holds, and how two checkpoints differ.

:func:`describe` reports the layout (sequential / layer files), TP and PP degree, parameter-name
dialect, iteration, upstream ``args``, every tensor's name, shape (per rank and, with a config,
the full TP = 1 shape) and dtype, parameter count, file sizes, and which engine states are present
(optimizer shards, LR scheduler, RNG, data position). Tensors are opened with ``mmap`` so a large
checkpoint is described without reading its weights.

:func:`compare` merges two checkpoints of the same model (any layouts, TP degrees and dialects)
and reports the largest difference of every tensor, e.g. before and after a reshard. Upstream's
``inspect_checkpoints.py`` compares files pairwise by name, which cannot relate a TP = 2
checkpoint to a TP = 1 one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from neox.checkpoint import config_files_of, dialects, layout, shards, tp
from neox.checkpoint.reshard import RNG_KEYS
from neox.errors import CheckpointError

ENGINE_KEYS = ("lr_scheduler", "consumed_train_samples", "consumed_valid_samples", "global_steps", "skipped_steps")


def load_mmap(path: Path) -> object:
    """``torch.load`` with the tensors memory-mapped (falls back to a plain load for old formats)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch files cannot be mapped
        from neox.checkpoint.weights import torch_load

        return torch_load(path)
    except Exception as err:
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}: {err}); it is truncated or not a torch file") from None


def _rank_tensors(info: shards.Scan, rank: int) -> dict[str, torch.Tensor]:
    if info.layout == "sequential":
        sd = load_mmap(info.model_state_files[rank])
        module = sd.get("module") if isinstance(sd, Mapping) else None
        if not isinstance(module, Mapping):
            raise CheckpointError(f"{info.model_state_files[rank]} holds no weights ('module' is empty)")
        return dict(module)
    out = {}
    for idx in info.layer_indices:
        for name, value in load_mmap(info.layer_files[(idx, rank)]).items():
            out[f"sequential.{idx}.{name}"] = value
    return out


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def describe(path: str | Path, cfg=None) -> dict:
    """A JSON-able description of the checkpoint at ``path`` (a ``global_stepN`` or save directory).

    ``cfg`` (the model's config; default: the checkpoint's ``configs/`` if they load) adds the full
    (merged) shape of every tensor and the model's parameter count.
    """
    ckpt_dir = layout.resolve(path)
    info = shards.scan(ckpt_dir)
    states = load_mmap(info.model_state_files[0]) if info.model_state_files else {}
    states = states if isinstance(states, Mapping) else {}
    per_rank = [_rank_tensors(info, r) for r in range(info.tp)]
    naming = dialects.detect(per_rank[0])
    if cfg is None and config_files_of(ckpt_dir):
        try:
            from neox.checkpoint.model_config import config_for_checkpoint

            cfg = config_for_checkpoint(ckpt_dir)
        except Exception:  # a report still helps without the model's config
            cfg = None
    tensors = []
    full_params = 0
    current_names = dialects.to_current(per_rank[0], cfg.norm) if cfg is not None else {}
    for key, value in per_rank[0].items():
        if not torch.is_tensor(value):
            continue
        entry = {"name": key, "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        current = next((k for k, v in current_names.items() if v is value), None)
        if cfg is not None and current is not None:
            try:
                full = tp.full_shape(current, [tuple(s[key].shape) for s in per_rank], cfg)
            except CheckpointError:
                full = None
            if full is not None:
                entry["full_shape"] = list(full)
                full_params += int(torch.Size(full).numel())
        tensors.append(entry)
    model_files = info.model_state_files + list(info.layer_files.values())
    dtypes = Counter(t["dtype"] for t in tensors)
    return {
        "path": str(ckpt_dir),
        "iteration": states.get("iteration", layout.iteration_of(ckpt_dir.name)),
        "layout": info.layout,
        "tp": info.tp,
        "pp": info.pp,
        "naming": naming,
        "args": states.get("args"),
        "tensors": len(tensors),
        "parameters": full_params if cfg is not None and full_params else None,
        "elements_on_disk": sum(int(v.numel()) for s in per_rank for v in s.values() if torch.is_tensor(v)),
        "dtypes": dict(dtypes),
        "bytes": {
            "model": _size(model_files),
            "optimizer": _size(info.optimizer_files),
            "total": _size(p for p in ckpt_dir.rglob("*")),
        },
        "optimizer_files": len(info.optimizer_files),
        "engine_state": [k for k in ENGINE_KEYS if states.get(k) is not None],
        "rng_state": any(k in states for k in RNG_KEYS),
        "configs": [p.name for p in config_files_of(ckpt_dir)],
        "tensor_list": tensors,
    }


def attribute(path: str | Path, name: str) -> object:
    """An entry of ``mp_rank_00_model_states.pt`` by ``/``-separated path (upstream's ``--attributes``)."""
    ckpt_dir = layout.resolve(path)
    current: object = load_mmap(ckpt_dir / layout.model_states_file(0))
    for part in name.split("/"):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif hasattr(current, part):
            current = getattr(current, part)
        else:
            raise CheckpointError(f"{ckpt_dir / layout.model_states_file(0)} has no entry {name!r} (missing {part!r})")
    return current


def compare(a: str | Path, b: str | Path, *, config_files=None, atol: float = 0.0) -> dict:
    """Tensor-by-tensor comparison of two checkpoints of one model after merging each to TP = 1."""
    from neox.checkpoint.convert import read_checkpoint
    from neox.checkpoint.model_config import config_for_checkpoint

    states = []
    for path in (a, b):
        ckpt_dir = layout.resolve(path)
        full, _ = read_checkpoint(ckpt_dir, config_for_checkpoint(ckpt_dir, config_files))
        states.append(full)
    only_a, only_b = sorted(states[0].keys() - states[1].keys()), sorted(states[1].keys() - states[0].keys())
    diffs = {}
    for key in sorted(states[0].keys() & states[1].keys()):
        x, y = states[0][key], states[1][key]
        if x.shape != y.shape:
            rows = min(x.shape[0], y.shape[0])  # padded vocab rows may differ between TP degrees
            if x.shape[1:] != y.shape[1:]:
                diffs[key] = {"shape": [list(x.shape), list(y.shape)]}
                continue
            x, y = x[:rows], y[:rows]
        diff = (x.float() - y.float()).abs().max().item() if x.numel() else 0.0
        if diff > atol or x.dtype != y.dtype:
            diffs[key] = {"max_abs_diff": diff, "dtype": [str(x.dtype), str(y.dtype)]}
    return {
        "a": str(a), "b": str(b), "equal": not (only_a or only_b or diffs),
        "only_in_a": only_a, "only_in_b": only_b, "differing": diffs,
        "max_abs_diff": max((d.get("max_abs_diff", float("inf")) for d in diffs.values()), default=0.0),
    }
