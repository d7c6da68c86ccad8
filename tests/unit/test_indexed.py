"""The .bin/.idx format: byte compatibility with upstream files, Megatron-Core interop, bad data."""

from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from neox.data.indexed import (
    IndexedDataset,
    IndexedDatasetBuilder,
    best_dtype,
    check_tokens,
    merge_datasets,
)
from neox.errors import DataError

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "data" / "golden" / "datasets"


def _docs(seed: int, n: int, vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(1, 50))) for _ in range(n)]


def _write(prefix, docs, dtype) -> None:
    with IndexedDatasetBuilder(prefix, dtype=dtype) as b:
        for d in docs:
            b.add_item(d)
            b.end_document()


@pytest.mark.parametrize("name", ["A_text_document", "A_text_label_document", "B_text_document"])
def test_rewrite_of_upstream_file_is_byte_identical(tmp_path, name):
    src = IndexedDataset(GOLDEN / name)
    _write(tmp_path / "out", list(src), src.dtype)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"out{ext}").read_bytes() == (GOLDEN / f"{name}{ext}").read_bytes(), ext


def test_reader_values_and_partial_get():
    ds = IndexedDataset(GOLDEN / "A_text_document")
    assert (len(ds), ds.num_tokens, ds.dtype) == (300, 28545, np.uint16)
    assert ds.sizes[3] == 1 and ds.sizes[30] == 200
    full = ds[0]
    assert np.array_equal(ds.get(0, offset=2, length=3), full[2:5])
    assert np.array_equal(ds.get(0, offset=5), full[5:])
    assert list(ds.doc_idx[:3]) == [0, 1, 2] and ds.doc_idx[-1] == 300


def test_batch_writes_equal_item_writes(tmp_path):
    docs = _docs(0, 40, 1000)
    _write(tmp_path / "a", docs, np.uint16)
    with IndexedDatasetBuilder(tmp_path / "b", dtype=np.uint16) as b:
        b.add_documents(np.concatenate(docs[:25]), [len(d) for d in docs[:25]])
        b.add_documents(np.concatenate(docs[25:]), [len(d) for d in docs[25:]])
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()


def test_merge_concatenates_items_and_documents(tmp_path):
    a, b = _docs(1, 10, 500), _docs(2, 7, 500)
    _write(tmp_path / "a", a, np.uint16)
    _write(tmp_path / "b", b, np.uint16)
    m = merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert len(m) == 17 and list(m.doc_idx) == list(range(18))
    for got, want in zip(m, a + b):
        assert np.array_equal(got, want)


def test_dtype_by_vocab_size():
    assert best_dtype(50277) == np.uint16 and best_dtype(65500) == np.int32 and best_dtype(None) == np.int64


def test_interrupted_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetBuilder(tmp_path / "x", dtype=np.int32) as b:
            b.add_item([1, 2, 3])
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_float_codes_are_neox_and_megatron_files_still_read(tmp_path):
    values = [np.array([0.5, -1.25, 3.0], dtype=np.float32)]
    _write(tmp_path / "f32", values, np.float32)
    raw = (tmp_path / "f32.idx").read_bytes()
    assert raw[17] == 6  # NeoX: code 6 = float32 (Megatron: float64)
    assert np.array_equal(IndexedDataset(tmp_path / "f32")[0], values[0])
    # A Megatron float32 file says 7; the .bin size shows the width.
    shutil.copy(tmp_path / "f32.bin", tmp_path / "meg.bin")
    (tmp_path / "meg.idx").write_bytes(raw[:17] + bytes([7]) + raw[18:])
    got = IndexedDataset(tmp_path / "meg")
    assert got.dtype == np.float32 and np.array_equal(got[0], values[0])


# ---------------------------------------------------------------------------- Megatron-Core interop

megatron = pytest.importorskip("megatron.core.datasets.indexed_dataset", reason="megatron-core not installed")


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_megatron_core_reads_our_files(tmp_path, dtype):
    docs = _docs(3, 60, 200 if dtype == np.uint8 else 60000)
    _write(tmp_path / "ours", docs, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = megatron.IndexedDataset(str(tmp_path / "ours"))
    assert len(theirs) == len(docs)
    assert list(theirs.document_indices) == list(range(len(docs) + 1))
    for i, d in enumerate(docs):
        got = theirs[i]
        assert got.dtype == dtype and np.array_equal(got, d), i


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_we_read_megatron_core_files(tmp_path, dtype):
    docs = _docs(4, 60, 30000)
    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=dtype)
    import torch

    for d in docs[:30]:
        builder.add_item(torch.from_numpy(d.astype(np.int64)))
        builder.end_document()
    builder.add_document(torch.from_numpy(np.concatenate(docs[30:]).astype(np.int64)), [len(d) for d in docs[30:]])
    builder.finalize(str(tmp_path / "meg.idx"))
    ours = IndexedDataset(tmp_path / "meg")
    assert ours.dtype == dtype and len(ours) == len(docs)
    for i, d in enumerate(docs):
        assert np.array_equal(ours[i], d), i
    # And byte-identical to what we write for the same items and document boundaries.
    with IndexedDatasetBuilder(tmp_path / "ours", dtype=dtype) as b:
        for d in docs[:30]:
            b.add_item(d)
            b.end_document()
        for d in docs[30:]:
            b.add_item(d)
        b.end_document()
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"meg{ext}").read_bytes(), ext


# ---------------------------------------------------------------------------------------- bad data


@pytest.fixture
def good(tmp_path):
    _write(tmp_path / "d", _docs(5, 20, 1000), np.uint16)
    return tmp_path / "d"


def test_missing_idx(good):
    Path(f"{good}.idx").unlink()
    with pytest.raises(DataError, match=r"d\.idx is missing \(found .*d\.bin\)"):
        IndexedDataset(good)


def test_missing_both(tmp_path):
    with pytest.raises(DataError, match=r"neither .*nope\.idx nor .*nope\.bin exists"):
        IndexedDataset(tmp_path / "nope")


def test_truncated_bin(good):
    data = Path(f"{good}.bin").read_bytes()
    Path(f"{good}.bin").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"d\.bin: .* bytes but the index needs .*truncated"):
        IndexedDataset(good)


def test_bin_of_another_dtype(good):
    arr = np.frombuffer(Path(f"{good}.bin").read_bytes(), dtype=np.uint16).astype(np.int32)
    Path(f"{good}.bin").write_bytes(arr.tobytes())
    with pytest.raises(DataError, match="do not belong together or the index was written with another dtype"):
        IndexedDataset(good)


def test_truncated_idx(good):
    raw = Path(f"{good}.idx").read_bytes()
    Path(f"{good}.idx").write_bytes(raw[:-8])
    with pytest.raises(DataError, match=r"d\.idx: index is .* bytes but its header .*truncated"):
        IndexedDataset(good)


def test_bad_magic_and_dtype_code(good):
    raw = Path(f"{good}.idx").read_bytes()
    Path(f"{good}.idx").write_bytes(b"XXXXXXXXX" + raw[9:])
    with pytest.raises(DataError, match="not a .idx file"):
        IndexedDataset(good)
    Path(f"{good}.idx").write_bytes(raw[:17] + bytes([9]) + raw[18:])
    with pytest.raises(DataError, match="unknown dtype code 9"):
        IndexedDataset(good)


def test_damaged_pointers(good):
    raw = bytearray(Path(f"{good}.idx").read_bytes())
    n = struct.unpack_from("<Q", raw, 18)[0]
    struct.pack_into("<q", raw, 34 + 4 * n + 8 * 3, 7)
    Path(f"{good}.idx").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="item 3 points to byte 7"):
        IndexedDataset(good)


def test_token_ids_beyond_vocab(good):
    ds = IndexedDataset(good)
    check_tokens(ds, 1000)
    with pytest.raises(DataError, match=r"token id \d+ in item \d+ is outside the vocabulary \(0\.\.99\)"):
        check_tokens(ds, 100)


def test_legacy_cached_format_reads(tmp_path):
    """TNTIDX ("cached"/"lazy"), written here from the layout in the reference facts §3.4."""
    docs = _docs(6, 5, 1000)
    flat = np.concatenate(docs).astype(np.int32)
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    n = len(docs)
    head = b"TNTIDX\x00\x00" + struct.pack("<QQQQQQ", 1, 4, 4, n, n, n + 1)
    body = np.arange(n + 1, dtype=np.int64).tobytes() + offsets.tobytes()
    body += np.array([len(d) for d in docs], dtype=np.int64).tobytes() + np.arange(n + 1, dtype=np.int64).tobytes()
    (tmp_path / "old.idx").write_bytes(head + body)
    (tmp_path / "old.bin").write_bytes(flat.tobytes())
    ds = IndexedDataset(tmp_path / "old")
    assert ds.legacy and len(ds) == n
    for got, want in zip(ds, docs):
        assert np.array_equal(got, want)
