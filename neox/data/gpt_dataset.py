"""GPT training samples read through the sample index (upstream ``GPT2Dataset``).

Sample i is ``{"text": int64[seq_length + 1]}`` plus ``"label"`` when a label file is given,
built as upstream builds it: the tokens from ``sample_idx[j]`` to ``sample_idx[j + 1]``
(inclusive) along ``doc_idx``, j = ``shuffle_idx[i]``; padded with 0 (text) and -100 (labels)
or cut to seq_length + 1. In ``pack_until_overflow`` and ``unpacked`` a sample therefore ends
with the first token of the next sample's first document, as upstream's do.

``len()`` is upstream's: one less than the samples built. Indices past the shuffle index wrap
around modulo ``len()`` (upstream's IndexError fallback, which blending relies on).

Deviation: upstream cannot read the last ``pack_until_overflow`` sample (its end points past
``doc_idx``) and silently returns sample 0 in its place. Here that sample is read in full
(its documents, no extra token, padded).
"""

from __future__ import annotations

import numpy as np
import torch

from neox.data import index_cache, sample_index
from neox.data.indexed import IndexedDataset
from neox.errors import DataError


class GPTDataset(torch.utils.data.Dataset):
    """One dataset prefix (with an optional aligned label file) seen through its sample index."""

    def __init__(self, name: str, data_prefix: str, documents: np.ndarray, indexed: IndexedDataset,
                 num_samples: int | None, seq_length: int, seed: int, *, pack_impl: str = "packed",
                 allow_chopped: bool = True, num_epochs: int | None = None, labels: IndexedDataset | None = None,
                 use_shared_fs: bool = True, log=print):
        if pack_impl not in sample_index.PACK_IMPLS:
            raise DataError(f"pack_impl {pack_impl!r} is not known; use one of {', '.join(sample_index.PACK_IMPLS)}")
        if labels is not None:
            _check_aligned(indexed, labels)
        self.name = name
        self.indexed = indexed
        self.labels = labels
        self.seq_length = seq_length
        self.pack_impl = pack_impl
        self.stem = index_cache.cache_stem(data_prefix, name, num_samples, seq_length, seed, pack_impl, allow_chopped)

        def build():
            return sample_index.build(pack_impl, documents, indexed.sizes, labels, num_samples, num_epochs,
                                      seq_length, seed, allow_chopped)

        self.doc_idx, self.sample_idx, self.shuffle_idx = index_cache.load_or_build(
            self.stem, build, use_shared_fs=use_shared_fs, log=log)
        self._len = min(len(self.shuffle_idx) - 1, len(self.sample_idx) - 1)
        if self._len <= 0:
            raise DataError(f"dataset {data_prefix} ({name}) yields no training sample of seq_length "
                            f"{seq_length}; it has {indexed.num_tokens} tokens in {len(documents)} documents")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        idx = int(idx)
        if idx >= len(self.shuffle_idx) or idx < 0:
            return self[idx % self._len]
        j = int(self.shuffle_idx[idx])
        first, first_off = (int(v) for v in self.sample_idx[j])
        last, last_off = (int(v) for v in self.sample_idx[j + 1])
        out = {"text": self._read(self.indexed, first, first_off, last, last_off, pad=0)}
        if self.labels is not None:
            out["label"] = self._read(self.labels, first, first_off, last, last_off, pad=-100)
        return out

    def _read(self, ds: IndexedDataset, first: int, first_off: int, last: int, last_off: int, pad: int) -> np.ndarray:
        want = self.seq_length + 1
        doc = self.doc_idx
        if first == last:
            parts = [ds.get(int(doc[first]), first_off, last_off - first_off + 1)]
        else:
            parts = [ds.get(int(doc[first]), first_off)]
            parts += [ds.get(int(doc[k])) for k in range(first + 1, min(last, len(doc)))]
            if last < len(doc):  # the last pack_until_overflow sample has no next document
                parts.append(ds.get(int(doc[last]), 0, last_off + 1))
        out = np.full(want, pad, dtype=np.int64)
        pos = 0
        for p in parts:
            n = min(len(p), want - pos)
            out[pos : pos + n] = p[:n]
            pos += n
            if pos == want:
                break
        return out


def _check_aligned(text: IndexedDataset, labels: IndexedDataset) -> None:
    if labels.dtype.kind == "u":
        raise DataError(f"label file {labels.prefix} has unsigned dtype {labels.dtype}, which cannot hold -100; "
                        "write labels as int32 (preprocess_data_with_chat_template.py does)")
    if labels.dtype.kind == "f":
        raise DataError(f"label file {labels.prefix} holds floats ({labels.dtype}); labels must be integer token ids")
    if len(text) != len(labels) or not np.array_equal(text.sizes, labels.sizes):
        n = min(len(text), len(labels))
        bad = int(np.flatnonzero(text.sizes[:n] != labels.sizes[:n])[0]) if n and not np.array_equal(
            text.sizes[:n], labels.sizes[:n]) else n
        raise DataError(f"label file {labels.prefix} is not aligned with {text.prefix}: "
                        f"{len(labels)} vs {len(text)} items, first difference at item {bad}; "
                        "write both from the same preprocessing run")
