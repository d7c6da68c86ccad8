"""Compiled loops behind the sample index and blending (numba, no C++ build step).

Each function is a sequential walk that upstream GPT-NeoX runs in C++ (``helpers.cpp``) or in a
Python loop; they are written here from the documented behaviour (reference facts §3.6, §3.9,
§9) and checked against upstream's own output (tests/assets/data/golden). numba compiles without
``fastmath``, so no floating-point contraction changes the blending order.
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    import numba
except ImportError:  # a dependency of neox; missing only in stripped environments
    numba = None


def _njit(fn):
    """Compile without fastmath; cache the machine code when a writable cache location exists
    (a read-only image with no writable home just compiles once per process, ~0.5 s). Without
    numba the same loops run interpreted: correct, but slow for large datasets."""
    if numba is None:
        warnings.warn(
            "numba is not installed: the data index loops run in pure Python (slow for large "
            "datasets); pip install numba",
            stacklevel=2,
        )
        return fn
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:
        return numba.njit(fn)


@_njit
def packed_sample_idx(sizes, doc_idx, seq_length, num_samples, out):
    """Fill ``out[num_samples + 1, 2]`` with (position in doc_idx, token offset) of each sample start.

    Every sample takes ``seq_length + 1`` tokens; the next one starts on the last of them, so
    consecutive samples share one token (upstream's ``build_sample_idx``).
    """
    doc_pos = 0
    offset = 0
    out[0, 0] = 0
    out[0, 1] = 0
    for k in range(1, num_samples + 1):
        remaining = seq_length + 1
        while remaining != 0:
            length = sizes[doc_idx[doc_pos]] - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                doc_pos += 1
                offset = 0
        out[k, 0] = doc_pos
        out[k, 1] = offset


@_njit
def overflow_pass(order, sizes, limit, running, doc_idx, n_doc, sample_idx, n_sample, target):
    """Pack one pass over the documents in ``order`` for ``pack_until_overflow``.

    A document joins the current sample unless that would exceed ``limit`` (= seq_length + 1)
    tokens; then it opens a new sample. A running length of 0 also opens one (the first document,
    and upstream's treatment of empty documents). Stops right after the document that opens sample
    number ``target``. Returns (running, n_doc, n_sample, documents consumed from ``order``).
    """
    for i in range(len(order)):
        d = order[i]
        length = sizes[d]
        if running == 0:
            sample_idx[n_sample] = n_doc
            n_sample += 1
            running += length
        elif running + length > limit:
            running = length
            sample_idx[n_sample] = n_doc
            n_sample += 1
        else:
            running += length
        doc_idx[n_doc] = d
        n_doc += 1
        if n_sample == target:
            return running, n_doc, n_sample, i + 1
    return running, n_doc, n_sample, len(order)


@_njit
def fully_masked(labels, starts, sizes, prefix):
    """For each item: are all of its first ``prefix`` labels -100? (True for empty items.)"""
    out = np.ones(len(sizes), dtype=np.bool_)
    for i in range(len(sizes)):
        n = min(sizes[i], prefix)
        s = starts[i]
        for j in range(n):
            if labels[s + j] != -100:
                out[i] = False
                break
    return out


@_njit
def blending_indices(weights, size, dataset_index, dataset_sample_index):
    """Greedy blend: position k goes to the dataset furthest below its share ``w_i * max(k, 1)``.

    Ties go to the lowest index (upstream's ``build_blending_indices``).
    """
    n = len(weights)
    counts = np.zeros(n, dtype=np.int64)
    for k in range(size):
        kk = max(float(k), 1.0)
        best = 0
        best_err = weights[0] * kk - float(counts[0])
        for i in range(1, n):
            err = weights[i] * kk - float(counts[i])
            if err > best_err:
                best_err = err
                best = i
        dataset_index[k] = best
        dataset_sample_index[k] = counts[best]
        counts[best] += 1
