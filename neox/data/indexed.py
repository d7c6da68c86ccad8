"""The ``.bin/.idx`` indexed-dataset format: reader, streaming writer, merge.

Byte-compatible with upstream GPT-NeoX's ``MMapIndexedDataset`` and Megatron-Core's
``IndexedDataset`` ("MMIDIDX" version 1). Layout of ``<prefix>.idx`` (little endian, no padding)::

    magic b"MMIDIDX\\x00\\x00" | u64 version=1 | u8 dtype code | u64 N items | u64 D
    i32 sizes[N] | i64 pointers[N] (byte offset of each item in .bin) | i64 doc_idx[D]

``<prefix>.bin`` is the items' tokens back to back. The dtype codes are NeoX's; Megatron swaps
6 and 7 (float64/float32). Both projects write float files only for side data (reference
log-probs), and the two float widths differ, so the reader resolves code 6/7 from the ``.bin``
size: a file from either project reads correctly. The writer uses NeoX's codes.

The legacy ``TNTIDX`` ("cached"/"lazy") format is readable too (``data_impl: cached``).
Every inconsistency raises :class:`~neox.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from neox.errors import DataError

MMAP_MAGIC = b"MMIDIDX\x00\x00"
LEGACY_MAGIC = b"TNTIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D  (34 bytes)

# NeoX's code table (megatron/data/indexed_dataset.py). Megatron-LM/-Core: 6=float64, 7=float32.
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float32,
    7: np.float64,
    8: np.uint16,
}
_CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def dtype_code(dtype) -> int:
    """NeoX's code for a numpy dtype (what the writer stores in the header)."""
    try:
        return _CODE_OF[np.dtype(dtype)]
    except KeyError:
        raise DataError(f"dtype {np.dtype(dtype)} cannot be stored in a .bin/.idx dataset; use one of "
                        f"{', '.join(str(np.dtype(t)) for t in DTYPE_CODES.values())}") from None


def best_dtype(vocab_size: int | None) -> type[np.number]:
    """Token dtype upstream's ``preprocess_data.py`` picks: uint16 below 65500 tokens, else int32."""
    if vocab_size is None:
        return np.int64
    return np.uint16 if vocab_size < 65500 else np.int32


def data_file_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.bin"


def index_file_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.idx"


def strip_suffix(path: str | os.PathLike) -> str:
    """``foo.bin`` / ``foo.idx`` / ``foo`` -> ``foo`` (configs name the prefix)."""
    s = str(path)
    return s[:-4] if s.endswith((".bin", ".idx")) else s


# ---------------------------------------------------------------------------------------- reading


class IndexedDataset:
    """Memory-mapped read access to one ``.bin/.idx`` pair.

    ``ds[i]`` is item i as a numpy array (a view into the mapping); ``ds.get(i, offset, length)``
    reads part of it, as upstream's ``MMapIndexedDataset.get``. ``sizes`` (int32), ``pointers``
    (int64, bytes) and ``doc_idx`` (int64) are the index arrays.
    """

    def __init__(self, prefix: str | os.PathLike, *, warmup: bool = False):
        self.prefix = strip_suffix(prefix)
        idx_path, bin_path = index_file_path(self.prefix), data_file_path(self.prefix)
        _require_files(self.prefix, idx_path, bin_path)
        with open(idx_path, "rb") as f:
            head = f.read(_HEADER.size)
        if head.startswith(LEGACY_MAGIC):
            self._open_legacy(idx_path, bin_path)
        else:
            self._open_mmap(idx_path, bin_path, head)
        if warmup and self.bin_bytes:
            # Touch every page once so the first training steps do not fault them in.
            step = 1 << 24
            for start in range(0, self.bin_bytes, step):
                _ = self._bin[start : start + step].sum()

    # -- MMIDIDX

    def _open_mmap(self, idx_path: str, bin_path: str, head: bytes) -> None:
        idx_size = os.path.getsize(idx_path)
        if len(head) < _HEADER.size:
            raise DataError(f"{idx_path}: truncated index ({idx_size} bytes, the header alone is 34); "
                            "the file is damaged, re-run preprocessing")
        magic, version, code, n, d = _HEADER.unpack(head)
        if magic != MMAP_MAGIC:
            raise DataError(f"{idx_path}: not a .idx file (magic {magic[:9]!r}, want {MMAP_MAGIC!r}); "
                            "point the config at a prefix written by preprocess_data.py")
        if version != VERSION:
            raise DataError(f"{idx_path}: index version {version} is not supported (only 1)")
        if code not in DTYPE_CODES:
            raise DataError(f"{idx_path}: unknown dtype code {code} in the header (valid 1-8); the file is damaged")
        want = _HEADER.size + 12 * n + 8 * d
        if idx_size != want:
            raise DataError(f"{idx_path}: index is {idx_size} bytes but its header ({n} items, {d} doc_idx "
                            f"entries) needs {want}; the file is truncated or damaged, re-run preprocessing")
        self.legacy = False
        self._idx = np.memmap(idx_path, mode="r", dtype=np.uint8)
        off = _HEADER.size
        self.sizes = np.frombuffer(self._idx, dtype=np.int32, count=n, offset=off)
        self.pointers = np.frombuffer(self._idx, dtype=np.int64, count=n, offset=off + 4 * n)
        self.doc_idx = np.frombuffer(self._idx, dtype=np.int64, count=d, offset=off + 12 * n)
        self.bin_bytes = os.path.getsize(bin_path)
        self.dtype = np.dtype(self._resolve_dtype(code, bin_path))
        self._map_bin(bin_path)
        self._check_consistency(idx_path, bin_path)

    def _resolve_dtype(self, code: int, bin_path: str):
        if code not in (6, 7):
            return DTYPE_CODES[code]
        # NeoX: 6=float32, 7=float64; Megatron: the reverse. The .bin size tells them apart.
        total = int(self.sizes.sum(dtype=np.int64))
        if total == 0:
            return DTYPE_CODES[code]
        if self.bin_bytes == 4 * total:
            return np.float32
        if self.bin_bytes == 8 * total:
            return np.float64
        raise DataError(f"{bin_path}: {self.bin_bytes} bytes do not hold {total} float32 or float64 values "
                        "as its index says; the file is truncated or damaged")

    # -- TNTIDX (legacy "cached"/"lazy")

    def _open_legacy(self, idx_path: str, bin_path: str) -> None:
        raw = Path(idx_path).read_bytes()
        try:
            version, code, elsize, n, s = struct.unpack_from("<QQQQQ", raw, 8)
            (d,) = struct.unpack_from("<Q", raw, 48)
        except struct.error:
            raise DataError(f"{idx_path}: truncated legacy (TNTIDX) index; re-run preprocessing") from None
        if code not in DTYPE_CODES or np.dtype(DTYPE_CODES[code]).itemsize != elsize:
            raise DataError(f"{idx_path}: legacy index has dtype code {code} with element size {elsize}; damaged file")
        need = 56 + 8 * (2 * (n + 1) + s + d)
        if len(raw) < need:
            raise DataError(f"{idx_path}: legacy index is {len(raw)} bytes, its header needs {need}; re-run preprocessing")
        arr = np.frombuffer(raw, dtype=np.int64, offset=56)
        dim_offsets = arr[: n + 1]
        data_offsets = arr[n + 1 : 2 * n + 2]
        dims = arr[2 * n + 2 : 2 * n + 2 + s]
        if not np.array_equal(np.diff(dim_offsets), np.ones(n, dtype=np.int64)):
            raise DataError(f"{idx_path}: legacy index holds multi-dimensional items; only token sequences are supported")
        self.legacy = True
        self.dtype = np.dtype(DTYPE_CODES[code])
        self.sizes = dims.astype(np.int32)
        self.pointers = data_offsets[:-1] * elsize
        self.doc_idx = arr[2 * n + 2 + s : 2 * n + 2 + s + d]
        self.bin_bytes = os.path.getsize(bin_path)
        self._map_bin(bin_path)
        self._check_consistency(idx_path, bin_path)

    # -- shared

    def _map_bin(self, bin_path: str) -> None:
        if self.bin_bytes:
            self._bin = np.memmap(bin_path, mode="r", dtype=np.uint8)
        else:
            self._bin = np.zeros(0, dtype=np.uint8)

    def _check_consistency(self, idx_path: str, bin_path: str) -> None:
        n = len(self.sizes)
        item = self.dtype.itemsize
        if n and int(self.sizes.min()) < 0:
            raise DataError(f"{idx_path}: negative item size at item {int(np.argmin(self.sizes))}; the file is damaged")
        need = int(self.pointers[-1]) + int(self.sizes[-1]) * item if n else 0
        if self.bin_bytes < need:
            raise DataError(f"{bin_path}: {self.bin_bytes} bytes but the index needs {need} "
                            f"({n} items of {self.dtype}); the .bin is truncated, re-run preprocessing")
        if self.bin_bytes != need and not self.legacy:
            raise DataError(f"{bin_path}: {self.bin_bytes} bytes but the index describes {need} "
                            f"({n} items of {self.dtype}); .bin and .idx do not belong together or the "
                            "index was written with another dtype")
        if n and not self.legacy:
            expect = np.empty(n, dtype=np.int64)
            expect[0] = 0
            np.cumsum(self.sizes[:-1], dtype=np.int64, out=expect[1:])
            expect *= item
            if not np.array_equal(expect, self.pointers):
                bad = int(np.flatnonzero(expect != self.pointers)[0])
                raise DataError(f"{idx_path}: item {bad} points to byte {int(self.pointers[bad])}, expected "
                                f"{int(expect[bad])} (sizes and pointers disagree); the index is damaged")
        if len(self.doc_idx) and (self.doc_idx[0] != 0 or self.doc_idx[-1] != n):
            raise DataError(f"{idx_path}: doc_idx runs {int(self.doc_idx[0])}..{int(self.doc_idx[-1])}, "
                            f"expected 0..{n}; the index is damaged")

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def num_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Item ``i`` from element ``offset``, ``length`` elements (to the end if None)."""
        size = int(self.sizes[i])
        if length is None:
            length = size - offset
        start = int(self.pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self._bin, dtype=self.dtype, count=max(0, length), offset=start)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.get(j) for j in range(*i.indices(len(self)))]
        return self.get(int(i))

    def __iter__(self):
        for i in range(len(self)):
            yield self.get(i)

    def tokens(self) -> np.ndarray:
        """All tokens as one flat array (a view)."""
        return np.frombuffer(self._bin, dtype=self.dtype, count=self.num_tokens, offset=0)

    def max_token(self, chunk: int = 1 << 26) -> int:
        """Largest value in the file, scanned in chunks (bounded memory)."""
        flat, best = self.tokens(), None
        for start in range(0, len(flat), chunk):
            m = int(flat[start : start + chunk].max())
            best = m if best is None else max(best, m)
        return -1 if best is None else best

    def __repr__(self) -> str:
        return f"IndexedDataset({self.prefix!r}, items={len(self)}, dtype={self.dtype})"


def _require_files(prefix: str, idx_path: str, bin_path: str) -> None:
    missing = [p for p in (idx_path, bin_path) if not os.path.isfile(p)]
    if len(missing) == 2:
        raise DataError(f"dataset {prefix}: neither {idx_path} nor {bin_path} exists; give the prefix "
                        "without .bin/.idx, as written by preprocess_data.py (<output-prefix>_text_document)")
    if missing:
        other = bin_path if missing[0] == idx_path else idx_path
        raise DataError(f"dataset {prefix}: {missing[0]} is missing (found {other}); copy both files of the pair")


def exists(prefix: str | os.PathLike) -> bool:
    p = strip_suffix(prefix)
    return os.path.isfile(index_file_path(p)) and os.path.isfile(data_file_path(p))


def check_tokens(ds: IndexedDataset, vocab_size: int) -> None:
    """Raise DataError if any token id is outside [0, vocab_size)."""
    if len(ds) == 0:
        return
    flat = ds.tokens()
    chunk = 1 << 26
    for start in range(0, len(flat), chunk):
        part = flat[start : start + chunk]
        hi, lo = int(part.max()), int(part.min())
        if hi >= vocab_size or lo < 0:
            pos = start + int(np.flatnonzero((part >= vocab_size) | (part < 0))[0])
            item = int(np.searchsorted(np.cumsum(ds.sizes, dtype=np.int64), pos, side="right"))
            bad = int(flat[pos])
            raise DataError(f"{data_file_path(ds.prefix)}: token id {bad} in item {item} is outside the vocabulary "
                            f"(0..{vocab_size - 1}); the data was tokenized with another tokenizer, re-run "
                            "preprocessing with this config's tokenizer")


# ---------------------------------------------------------------------------------------- writing


class IndexedDatasetBuilder:
    """Streaming writer for a ``.bin/.idx`` pair with bounded memory.

    Tokens go straight to ``<prefix>.bin.tmp``; item sizes and document boundaries are spilled
    to temporary files and streamed into the index at :meth:`finalize`, so memory does not grow
    with the dataset. Nothing appears under the final names until ``finalize`` renames the pair
    (the ``.idx`` last), so an interrupted run never leaves files that look complete.

    Use as a context manager: leaving the block with an exception removes the partial files.
    """

    def __init__(self, prefix: str | os.PathLike, dtype=np.int64):
        self.prefix = strip_suffix(prefix)
        self.dtype = np.dtype(dtype)
        self._code = dtype_code(self.dtype)
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = data_file_path(self.prefix) + ".tmp"
        self._bin = open(self._bin_tmp, "wb")
        tmpdir = str(Path(self.prefix).parent)
        self._sizes = tempfile.TemporaryFile(dir=tmpdir, prefix=".sizes-")
        self._docs = tempfile.TemporaryFile(dir=tmpdir, prefix=".docs-")
        self._docs.write(np.zeros(1, dtype=np.int64).tobytes())
        self.num_items = 0
        self.num_docs = 1  # doc_idx entries, starting with 0
        self.num_tokens = 0
        self._closed = False

    def add_item(self, tokens) -> None:
        """Append one item (a sequence of values in this builder's dtype range)."""
        arr = np.asarray(tokens)
        if arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        self._bin.write(arr.tobytes(order="C"))
        self._sizes.write(np.int32(arr.size).tobytes())
        self.num_items += 1
        self.num_tokens += int(arr.size)

    def add_items(self, flat: np.ndarray, sizes: np.ndarray) -> None:
        """Append many items at once: ``flat`` holds them back to back, ``sizes`` their lengths."""
        flat = np.ascontiguousarray(flat, dtype=self.dtype)
        sizes = np.ascontiguousarray(sizes, dtype=np.int32)
        assert int(sizes.sum(dtype=np.int64)) == flat.size
        self._bin.write(flat.tobytes())
        self._sizes.write(sizes.tobytes())
        self.num_items += len(sizes)
        self.num_tokens += int(flat.size)

    def end_document(self) -> None:
        self._docs.write(np.int64(self.num_items).tobytes())
        self.num_docs += 1

    def add_documents(self, flat: np.ndarray, sizes: np.ndarray) -> None:
        """Append items that are one document each (what preprocessing writes)."""
        start = self.num_items
        self.add_items(flat, sizes)
        ends = np.arange(start + 1, start + 1 + len(sizes), dtype=np.int64)
        self._docs.write(ends.tobytes())
        self.num_docs += len(sizes)

    def merge(self, other: str | os.PathLike | IndexedDataset) -> None:
        """Append every item and document of another dataset (same dtype), copying its .bin."""
        ds = other if isinstance(other, IndexedDataset) else IndexedDataset(other)
        if ds.dtype != self.dtype:
            raise DataError(f"cannot merge {ds.prefix} ({ds.dtype}) into {self.prefix} ({self.dtype}); "
                            "datasets to merge must share a dtype")
        base = self.num_items
        self._sizes.write(np.ascontiguousarray(ds.sizes, dtype=np.int32).tobytes())
        docs = np.asarray(ds.doc_idx[1:], dtype=np.int64) + base
        self._docs.write(docs.tobytes())
        self.num_docs += len(docs)
        self.num_items += len(ds)
        total = ds.num_tokens * ds.dtype.itemsize
        with open(data_file_path(ds.prefix), "rb") as src:
            _copy(src, self._bin, total)
        self.num_tokens += ds.num_tokens

    def finalize(self) -> None:
        """Write the index and move both files into place."""
        self._bin.close()
        idx_tmp = index_file_path(self.prefix) + ".tmp"
        with open(idx_tmp, "wb") as f:
            f.write(_HEADER.pack(MMAP_MAGIC, VERSION, self._code, self.num_items, self.num_docs))
            self._sizes.seek(0)
            _copy(self._sizes, f, 4 * self.num_items)
            self._sizes.seek(0)
            carry, item = 0, self.dtype.itemsize
            for chunk in _read_chunks(self._sizes, np.int32, 1 << 22):
                ends = np.cumsum(chunk, dtype=np.int64) + carry
                starts = np.concatenate(([carry], ends[:-1])) if len(ends) else ends
                f.write((starts * item).tobytes())
                carry = int(ends[-1]) if len(ends) else carry
            self._docs.seek(0)
            _copy(self._docs, f, 8 * self.num_docs)
        self._sizes.close()
        self._docs.close()
        final_bin, final_idx = data_file_path(self.prefix), index_file_path(self.prefix)
        try:
            os.replace(self._bin_tmp, final_bin)
            os.replace(idx_tmp, final_idx)
        except OSError as err:
            # Never leave a .bin without its .idx (or an old .idx with a new .bin).
            for p in (self._bin_tmp, idx_tmp, final_bin):
                if os.path.isfile(p):
                    os.remove(p)
            self._closed = True
            raise DataError(f"cannot move {final_idx} into place ({err.strerror}); nothing was written") from None
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._closed:
            return
        for fh in (self._bin, self._sizes, self._docs):
            fh.close()
        for p in (self._bin_tmp, index_file_path(self.prefix) + ".tmp"):
            if os.path.exists(p):
                os.remove(p)
        self._closed = True

    def __enter__(self) -> IndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._closed:
                self.finalize()
        else:
            self.abort()


def _copy(src, dst, nbytes: int, block: int = 1 << 24) -> None:
    left = nbytes
    while left > 0:
        buf = src.read(min(block, left))
        if not buf:
            raise DataError(f"{getattr(src, 'name', 'input')}: ended {left} bytes early while copying; the file is truncated")
        dst.write(buf)
        left -= len(buf)


def _read_chunks(fh, dtype, count: int):
    item = np.dtype(dtype).itemsize
    while True:
        buf = fh.read(count * item)
        if not buf:
            return
        yield np.frombuffer(buf, dtype=dtype)


def merge_datasets(prefixes: Iterable[str | os.PathLike], output_prefix: str | os.PathLike) -> IndexedDataset:
    """Concatenate several datasets (same dtype) into ``output_prefix``; returns the result opened."""
    prefixes = [strip_suffix(p) for p in prefixes]
    if not prefixes:
        raise DataError("merge: no input datasets given")
    first = IndexedDataset(prefixes[0])
    with IndexedDatasetBuilder(output_prefix, dtype=first.dtype) as b:
        for p in prefixes:
            b.merge(p)
    return IndexedDataset(output_prefix)
