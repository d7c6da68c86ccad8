"""Train/valid/test datasets from a config, as upstream's ``build_train_valid_test_data_loaders``.

Two routes, as upstream (reference facts §3.7, §3.9):

- ``train_data_paths`` / ``valid_data_paths`` / ``test_data_paths`` (+ ``*_label_data_paths``,
  ``*_data_weights``): component i is named ``train_i`` (valid_i, test_i), built for
  ``ceil(T * w_i * 1.005)`` samples and blended by weight;
- ``data_path`` + ``split``: one prefix cut into contiguous document ranges named ``train``,
  ``valid``, ``test``, each built for exactly its T.

T is train_iters x train_batch_size for train, (train_iters // eval_interval + 1) x eval_iters
x train_batch_size for valid and eval_iters x train_batch_size for test; with ``train_epochs``
the index covers that many epochs instead (packed only).

Checked before anything is built: both files of every prefix, their consistency, label files
aligned with their text, no empty documents, and (on the rank that builds the sample index)
every token id below the model's padded vocabulary.
"""

from __future__ import annotations

import numpy as np

from neox.data.blending import BlendedDataset, normalized_weights_and_num_samples, weights_by_num_documents
from neox.data.gpt_dataset import GPTDataset
from neox.data.index_cache import _global_rank
from neox.data.indexed import IndexedDataset, check_tokens, strip_suffix
from neox.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


def _log(msg: str) -> None:
    if _global_rank() == 0:
        print(f"neox.data: {msg}", flush=True)


def requested_samples(cfg) -> dict[str, int | None]:
    """Samples requested per split (None in epoch mode)."""
    if getattr(cfg, "train_epochs", None):
        return dict.fromkeys(SPLITS)
    tbs = cfg.train_batch_size
    iters = cfg.train_iters
    eval_iters = getattr(cfg, "eval_iters", 0) or 0
    interval = getattr(cfg, "eval_interval", None) or iters or 1
    return {
        "train": iters * tbs,
        "valid": (iters // interval + 1) * eval_iters * tbs,
        "test": eval_iters * tbs,
    }


def split_boundaries(split: str, size: int) -> list[int]:
    """Upstream's ``get_train_valid_test_split_``: contiguous document ranges for data_path."""
    sep = "," if "," in split else "/" if "/" in split else None
    try:
        parts = [float(s) for s in (split.split(sep) if sep else [split])]
    except ValueError:
        raise ConfigError(f"split {split!r} must be numbers separated by ',' or '/', e.g. '969, 30, 1'") from None
    parts = (parts + [0.0, 0.0, 0.0])[:3]
    total = sum(parts)
    if not total > 0:
        raise ConfigError(f"split {split!r} must have a positive sum")
    parts = [p / total for p in parts]
    idx = [0]
    for p in parts:
        idx.append(idx[-1] + int(round(p * float(size))))
    diff = idx[-1] - size
    return [idx[0]] + [i - diff for i in idx[1:]]


def _open(prefix: str, what: str, warmup: bool) -> IndexedDataset:
    ds = IndexedDataset(strip_suffix(prefix), warmup=warmup)
    if len(ds) == 0:
        raise DataError(f"{what} {ds.prefix} has no documents; re-run preprocessing on non-empty input")
    if ds.dtype.kind == "f":
        raise DataError(f"{what} {ds.prefix} holds {ds.dtype} values, not token ids; point the config at the "
                        "_text_document (or _label_document) prefix")
    empty = np.flatnonzero(ds.sizes == 0)
    if len(empty):
        raise DataError(f"{what} {ds.prefix} has {len(empty)} empty documents (first: item {int(empty[0])}); "
                        "re-run preprocess_data.py, which drops empty documents and counts them")
    return ds


def _vocab_limit(cfg) -> int | None:
    return getattr(cfg, "padded_vocab_size", None)


def _component(cfg, name: str, prefix: str, label_prefix: str | None, num_samples, num_epochs) -> GPTDataset:
    warm = bool(getattr(cfg, "mmap_warmup", False))
    ds = _open(prefix, "dataset", warm)
    labels = _open(label_prefix, "label dataset", warm) if label_prefix else None
    return _gpt(cfg, name, ds.prefix, np.arange(len(ds), dtype=np.int32), ds, labels, num_samples, num_epochs)


def _gpt(cfg, name, prefix, documents, ds, labels, num_samples, num_epochs) -> GPTDataset:
    vocab = _vocab_limit(cfg)
    if vocab is not None:
        from neox.data import index_cache

        if index_cache.is_builder(getattr(cfg, "use_shared_fs", True)):
            check_tokens(ds, vocab)
    return GPTDataset(
        name, prefix, documents, ds, num_samples, cfg.seq_length, cfg.seed,
        pack_impl=getattr(cfg, "pack_impl", "packed"), allow_chopped=getattr(cfg, "allow_chopped", True),
        num_epochs=num_epochs, labels=labels, use_shared_fs=getattr(cfg, "use_shared_fs", True), log=_log,
    )


def _paths(cfg, key: str) -> list:
    value = getattr(cfg, key, None)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def build_datasets(cfg):
    """(train, valid, test): torch Datasets (None where a split has no data or no samples).

    Sample i is ``{"text": int64[seq_length + 1]}`` plus ``"label"`` with a label file.
    """
    if _paths(cfg, "pos_train_data_paths") or _paths(cfg, "neg_train_data_paths"):
        raise ConfigError("pairwise data (pos_*/neg_*_data_paths, for DPO/RM) is not handled by "
                          "neox.data.build_datasets; use train_data_paths with train_label_data_paths")
    want = requested_samples(cfg)
    epochs = 1 if getattr(cfg, "train_epochs", None) else None
    if epochs and getattr(cfg, "pack_impl", "packed") != "packed":
        raise ConfigError(f"train_epochs needs pack_impl: packed (got {cfg.pack_impl}), as upstream")
    if _paths(cfg, "train_data_paths"):
        return tuple(_blend(cfg, split, want[split], epochs) for split in SPLITS)
    if getattr(cfg, "data_path", None):
        return _split(cfg, want, epochs)
    raise ConfigError("no training data: set data_path, or train_data_paths, valid_data_paths and test_data_paths")


def _blend(cfg, split: str, total, epochs):
    paths = _paths(cfg, f"{split}_data_paths")
    if not paths or total == 0:
        return None
    labels = _paths(cfg, f"{split}_label_data_paths")
    if labels and len(labels) != len(paths):
        raise ConfigError(f"{split}_label_data_paths has {len(labels)} entries but {split}_data_paths has "
                          f"{len(paths)}; give one label prefix per data prefix")
    weights = _paths(cfg, f"{split}_data_weights") or [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ConfigError(f"{split}_data_weights has {len(weights)} entries but {split}_data_paths has "
                          f"{len(paths)}; give one weight per data prefix")
    if getattr(cfg, "weight_by_num_documents", False):
        docs = [len(_open(p, "dataset", False)) for p in paths]
        weights = weights_by_num_documents(docs, getattr(cfg, "weighted_sampler_alpha", 1.0))
    weights, counts = normalized_weights_and_num_samples([float(w) for w in weights], total)
    parts = [
        _component(cfg, f"{split}_{i}", p, labels[i] if labels else None, counts[i], epochs)
        for i, p in enumerate(paths)
    ]
    return BlendedDataset(parts, weights)


def _split(cfg, want, epochs):
    for split in SPLITS:
        if _paths(cfg, f"{split}_label_data_paths"):
            raise ConfigError(f"{split}_label_data_paths needs {split}_data_paths; data_path + split has no label files")
    ds = _open(cfg.data_path, "dataset", bool(getattr(cfg, "mmap_warmup", False)))
    bounds = split_boundaries(getattr(cfg, "split", "969, 30, 1"), len(ds))
    out = []
    for i, split in enumerate(SPLITS):
        lo, hi = bounds[i], bounds[i + 1]
        if hi <= lo or want[split] == 0:
            out.append(None)
            continue
        _log(f"{split}: documents [{lo}, {hi}) of {ds.prefix}")
        docs = np.arange(lo, hi, dtype=np.int32)
        out.append(_gpt(cfg, split, ds.prefix, docs, ds, None, want[split], epochs))
    return tuple(out)
