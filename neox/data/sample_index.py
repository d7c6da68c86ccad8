"""The GPT sample index: which tokens make training sample i, in upstream GPT-NeoX's order.

Three arrays, exactly as upstream's ``GPT2Dataset._build_index_mappings`` makes them (reference
facts §3.6, §9), so the same config reads the same samples in the same order:

- ``doc_idx``: the order in which documents (items) are visited;
- ``sample_idx``: [n + 1, 2] rows of (position in doc_idx, token offset) where sample k starts;
- ``shuffle_idx``: the permutation that maps training position -> sample.

One ``numpy.random.RandomState(seed)`` drives every shuffle in upstream's order (for
``pack_until_overflow`` the sample permutation is drawn *before* the document order). The dtypes
match upstream's cache files: int32/int32/uint32 for ``packed``, int64 for the other modes.

Deliberate deviations (upstream crashes or loops here; everywhere else the arrays are equal):

- ``pack_until_overflow``: a document skipped (too long with ``allow_chopped: false``, or fully
  masked) as the last one of a pass wraps to a fresh pass like any other document; upstream walks
  past the end and raises IndexError.
- ``pack_until_overflow`` and ``unpacked`` map positions through ``documents`` (the split's item
  range); upstream uses the position as an item id, which reads the wrong items for the valid
  and test ranges of a ``data_path`` split.
- ``unpacked`` without a label file packs every document (upstream requires labels).
- No eligible document at all is a one-line DataError instead of an endless loop.
"""

from __future__ import annotations

import numpy as np

from neox.data import _kernels
from neox.errors import DataError

PACK_IMPLS = ("packed", "pack_until_overflow", "unpacked")


def num_epochs_needed(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """Smallest E with (E * tokens_per_epoch - 1) // seq_length >= num_samples."""
    if tokens_per_epoch <= 1:
        raise DataError(f"dataset has {tokens_per_epoch} tokens; packed samples need at least 2")
    epochs = 1
    while (epochs * tokens_per_epoch - 1) // seq_length < num_samples:
        epochs += 1
    return epochs


def build_packed(documents: np.ndarray, sizes: np.ndarray, num_samples: int | None, num_epochs: int | None,
                 seq_length: int, seed: int):
    """``pack_impl: packed``: shuffled multi-epoch document stream cut into overlapping windows."""
    sizes = np.asarray(sizes, dtype=np.int32)
    tokens_per_epoch = int(sizes[documents].sum(dtype=np.int64))
    if not num_epochs:
        num_epochs = num_epochs_needed(tokens_per_epoch, seq_length, num_samples)
    rng = np.random.RandomState(seed=seed)
    # Epochs are tiled and then shuffled together, as upstream does.
    doc_idx = np.tile(np.asarray(documents, dtype=np.int32), num_epochs)
    rng.shuffle(doc_idx)
    total = (num_epochs * tokens_per_epoch - 1) // seq_length
    dtype = np.int32 if 2 * (total + 1) < np.iinfo(np.int32).max else np.int64
    sample_idx = np.empty((total + 1, 2), dtype=dtype)
    _kernels.packed_sample_idx(sizes, doc_idx, seq_length, total, sample_idx)
    shuffle_dtype = np.uint32 if total < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(total, dtype=shuffle_dtype)
    rng.shuffle(shuffle_idx)
    return doc_idx, sample_idx, shuffle_idx


def eligible(documents: np.ndarray, sizes: np.ndarray, labels, seq_length: int, allow_chopped: bool,
             label_prefix: int) -> np.ndarray:
    """Boolean per position of ``documents``: may it be packed in the non-``packed`` modes?

    Not when longer than seq_length + 1 with ``allow_chopped: false``, nor when its first
    ``label_prefix`` labels are all -100.
    """
    doc_sizes = np.asarray(sizes)[documents]
    ok = np.ones(len(documents), dtype=bool)
    if not allow_chopped:
        ok &= doc_sizes <= seq_length + 1
    if labels is not None:
        flat = labels.tokens()
        starts = np.asarray(labels.pointers)[documents] // labels.dtype.itemsize
        ok &= ~_kernels.fully_masked(flat, starts, np.asarray(labels.sizes)[documents], label_prefix)
    return ok


def build_pack_until_overflow(documents: np.ndarray, sizes: np.ndarray, labels, num_samples: int,
                              seq_length: int, seed: int, allow_chopped: bool):
    """``pack_until_overflow``: whole documents greedily packed until the next would overflow."""
    documents = np.asarray(documents, dtype=np.int64)
    rng = np.random.RandomState(seed=seed)
    shuffle_idx = np.arange(num_samples, dtype=np.int64)
    rng.shuffle(shuffle_idx)
    ok = eligible(documents, sizes, labels, seq_length, allow_chopped, seq_length + 1)
    if num_samples > 0 and not ok.any():
        raise DataError(_no_eligible_message(allow_chopped, labels, seq_length))
    doc_sizes = np.asarray(sizes, dtype=np.int64)[documents]
    perm = np.arange(len(documents), dtype=np.int64)
    rng.shuffle(perm)
    sample_starts = np.zeros(num_samples + 1, dtype=np.int64)
    doc_pos = np.empty(max(16, 2 * num_samples), dtype=np.int64)
    running, n_doc, n_sample = 0, 0, 0
    while n_sample < num_samples:
        order = perm[ok[perm]]
        if n_doc + len(order) > len(doc_pos):
            doc_pos = np.resize(doc_pos, max(2 * len(doc_pos), n_doc + len(order)))
        running, n_doc, n_sample, _ = _kernels.overflow_pass(
            order, doc_sizes, seq_length + 1, running, doc_pos, n_doc, sample_starts, n_sample, num_samples
        )
        if n_sample < num_samples:
            rng.shuffle(perm)  # upstream reshuffles its running permutation at each wrap-around
    sample_starts[num_samples] = n_doc
    sample_idx = np.zeros((num_samples + 1, 2), dtype=np.int64)
    sample_idx[:, 0] = sample_starts
    doc_idx = documents[doc_pos[:n_doc]]
    return doc_idx, sample_idx, shuffle_idx


def build_unpacked(documents: np.ndarray, sizes: np.ndarray, labels, num_samples: int, seq_length: int,
                   seed: int, allow_chopped: bool):
    """``unpacked``: one document per sample, documents in file order (cycling), samples shuffled."""
    documents = np.asarray(documents, dtype=np.int64)
    rng = np.random.RandomState(seed=seed)
    shuffle_idx = np.arange(num_samples, dtype=np.int64)
    rng.shuffle(shuffle_idx)
    sample_idx = np.zeros((num_samples + 1, 2), dtype=np.int64)
    sample_idx[:, 0] = np.arange(num_samples + 1)
    # Upstream checks the first seq_length labels here (not seq_length + 1 as in pack_until_overflow).
    ok_pos = np.flatnonzero(eligible(documents, sizes, labels, seq_length, allow_chopped, seq_length))
    if not len(ok_pos):
        raise DataError(_no_eligible_message(allow_chopped, labels, seq_length))
    doc_idx = documents[ok_pos[np.arange(num_samples + 1) % len(ok_pos)]]
    return doc_idx, sample_idx, shuffle_idx


def _no_eligible_message(allow_chopped: bool, labels, seq_length: int) -> str:
    why = []
    if not allow_chopped:
        why.append(f"longer than seq_length + 1 = {seq_length + 1} tokens (allow_chopped: false)")
    if labels is not None:
        why.append(f"fully masked in the label file {labels.prefix}")
    return ("no document can be packed: every document is " + " or ".join(why)
            + "; set allow_chopped: true, raise seq_length, or check the label file")


def build(pack_impl: str, documents, sizes, labels, num_samples: int | None, num_epochs: int | None,
          seq_length: int, seed: int, allow_chopped: bool):
    """The three index arrays for one dataset (no caching; see :mod:`neox.data.index_cache`)."""
    documents = np.asarray(documents)
    if pack_impl == "packed":
        return build_packed(documents, sizes, num_samples, num_epochs, seq_length, seed)
    if num_samples is None:
        raise DataError(f"pack_impl {pack_impl} needs train_iters (epoch mode, train_epochs, only supports packed)")
    if pack_impl == "pack_until_overflow":
        return build_pack_until_overflow(documents, sizes, labels, num_samples, seq_length, seed, allow_chopped)
    if pack_impl == "unpacked":
        return build_unpacked(documents, sizes, labels, num_samples, seq_length, seed, allow_chopped)
    raise DataError(f"pack_impl {pack_impl!r} is not known; use one of {', '.join(PACK_IMPLS)}")
