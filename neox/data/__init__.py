"""Datasets: mmap ``.bin/.idx`` reader/writer, GPT sample index, blending, packing, loss masks, loaders.

Public API (used by ``neox.train``):

- ``build_datasets(cfg) -> (train, valid, test)``: torch Datasets (or None); sample i is
  ``{"text": int64[seq_length + 1]}`` plus ``"label"`` with label files, in upstream GPT-NeoX's order;
- ``build_loader(dataset, cfg, *, dp_rank, dp_size, consumed_samples) -> iterator`` of this
  rank's micro-batches (dict of LongTensor [micro_batch, seq_length + 1]), endless, resuming at
  ``consumed_samples`` global samples (also after the data-parallel size changed);
- ``consumed_samples(cfg, iteration, split)``: upstream's resume position for a split;
- ``get_batch(batch, cfg, eod) -> (tokens, labels, loss_mask)``;
- ``IndexedDataset``, ``IndexedDatasetBuilder``, ``merge_datasets``: the ``.bin/.idx`` format.

Heavy submodules (numba kernels) load on first use.
"""

from __future__ import annotations

from neox.data.indexed import IndexedDataset, IndexedDatasetBuilder, best_dtype, merge_datasets

__all__ = [
    "IndexedDataset",
    "IndexedDatasetBuilder",
    "best_dtype",
    "build_datasets",
    "build_loader",
    "consumed_samples",
    "get_batch",
    "merge_datasets",
]


def build_datasets(cfg):
    from neox.data.build import build_datasets as _build

    return _build(cfg)


def build_loader(dataset, cfg, *, dp_rank: int, dp_size: int, consumed_samples: int = 0):
    from neox.data.loader import build_loader as _build

    return _build(dataset, cfg, dp_rank=dp_rank, dp_size=dp_size, consumed_samples=consumed_samples)


def consumed_samples(cfg, iteration: int, split: str = "train") -> int:
    from neox.data.loader import consumed_samples as _consumed

    return _consumed(cfg, iteration, split)


def get_batch(batch, cfg, eod):
    from neox.data.batch import get_batch as _get

    return _get(batch, cfg, eod)


build_datasets.__doc__ = "(train, valid, test) datasets for a config; see neox.data.build."
build_loader.__doc__ = "Endless micro-batch iterator for one data-parallel rank; see neox.data.loader."
get_batch.__doc__ = "(tokens, labels, loss_mask) from a micro-batch; see neox.data.batch."
