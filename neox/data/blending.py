"""Blending several datasets by weight (upstream ``BlendableDataset``, reference facts §3.9).

Each component is built for ``ceil(T * w_i * 1.005)`` samples (T = samples requested for the
split, w normalised; the 0.5% is upstream's headroom). The blend is as long as the components
together; position k goes to the dataset furthest below its share (greedy, ties to the first),
without a further shuffle since every component is shuffled already. Upstream recomputes this
index on every rank; here it is the same greedy loop compiled with numba (about 10^7 positions
per second for a few datasets on one core), so it is not cached either.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neox.data import _kernels
from neox.errors import DataError


def normalized_weights_and_num_samples(weights: list[float], num_samples: int | None):
    """Upstream's ``get_normalized_weights_and_num_samples``, float for float."""
    total = sum(weights)
    if not total > 0.0:
        raise DataError(f"data weights {weights} must sum to a positive number")
    norm = [w / total for w in weights]
    if num_samples is None:
        return norm, [None] * len(norm)
    return norm, [int(math.ceil(num_samples * w * 1.005)) for w in norm]


def weights_by_num_documents(num_docs: list[int], alpha: float = 1.0) -> list[float]:
    """``weight_by_num_documents``: p_i = n_i / sum n, q_i ~ p_i^alpha, w_i ~ q_i (1 - p_i)."""
    if len(num_docs) == 1:
        return [1.0]
    total = sum(num_docs)
    p = [n / total for n in num_docs]
    q = [x**alpha for x in p]
    qs = sum(q)
    q = [x / qs for x in q]
    w = [a * (1 - b) for a, b in zip(q, p)]
    ws = sum(w)
    return [x / ws for x in w]


def blending_indices(weights, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index uint8[size], dataset_sample_index int64[size]) for normalised ``weights``."""
    w = np.array(weights, dtype=np.float64)
    w /= np.sum(w)
    if len(w) > 254:
        raise DataError(f"{len(w)} datasets in one blend; at most 254 are supported (uint8 index, as upstream)")
    dataset_index = np.zeros(size, dtype=np.uint8)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    _kernels.blending_indices(w, size, dataset_index, dataset_sample_index)
    return dataset_index, dataset_sample_index


class BlendedDataset(torch.utils.data.Dataset):
    """Datasets interleaved by weight; one component is the identity (as upstream)."""

    def __init__(self, datasets: list, weights: list[float]):
        if len(datasets) != len(weights):
            raise DataError(f"{len(datasets)} datasets but {len(weights)} weights; give one weight per data path")
        self.datasets = datasets
        self.weights = weights
        self.size = sum(len(d) for d in datasets)
        self.dataset_index, self.dataset_sample_index = blending_indices(weights, self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int):
        idx = int(idx)
        if idx >= self.size or idx < 0:
            idx %= self.size
        return self.datasets[self.dataset_index[idx]][int(self.dataset_sample_index[idx])]
