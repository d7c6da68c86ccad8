"""Training-side data: build_datasets routes, index caches, the resumable loader, get_batch."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neox.data import build_datasets, build_loader, consumed_samples, get_batch, index_cache
from neox.data.build import split_boundaries
from neox.data.indexed import IndexedDatasetBuilder
from neox.data.loader import ResumableBatchSampler
from neox.errors import ConfigError, DataError

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "data" / "golden" / "datasets"


@pytest.fixture
def data(tmp_path):
    for f in GOLDEN.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _cfg(**kw):
    base = dict(seq_length=32, seed=1234, pack_impl="packed", allow_chopped=True, train_iters=20,
                train_batch_size=4, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1,
                data_parallel_size=2, eval_iters=2, eval_interval=10, num_workers=0, use_shared_fs=True,
                split="969, 30, 1", eod_mask_loss=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_split_boundaries_match_upstream_rounding():
    assert split_boundaries("969, 30, 1", 300) == [0, 291, 300, 300]
    assert split_boundaries("949,50,1", 1000) == [0, 949, 999, 1000]
    assert split_boundaries("8/1/1", 7) == [0, 5, 6, 7]  # rounds to 6+1+1, shifted back by 1


def test_data_path_route_uses_contiguous_ranges_and_upstream_names(data):
    cfg = _cfg(data_path=str(data / "A_text_document"), split="80,15,5")
    train, valid, test = build_datasets(cfg)
    assert Path(train.stem).name == "A_text_document_train_indexmap_80ns_32sl_1234s_packedpi_ac"
    assert Path(valid.stem).name == "A_text_document_valid_indexmap_24ns_32sl_1234s_packedpi_ac"  # (20//10+1)*2*4
    assert Path(test.stem).name == "A_text_document_test_indexmap_8ns_32sl_1234s_packedpi_ac"
    assert set(np.unique(train.doc_idx)) <= set(range(240)) and set(np.unique(valid.doc_idx)) <= set(range(240, 285))
    assert set(np.unique(test.doc_idx)) <= set(range(285, 300))


def test_cache_is_reused_not_rebuilt(data, monkeypatch):
    cfg = _cfg(data_path=str(data / "A_text_document"))
    first = build_datasets(cfg)[0][5]["text"]
    calls = []
    monkeypatch.setattr("neox.data.sample_index.build", lambda *a, **k: calls.append(1))
    again = build_datasets(cfg)[0][5]["text"]
    assert calls == [] and np.array_equal(first, again)


@pytest.fixture
def rank_from_env(monkeypatch):
    """Ranks from RANK alone: an in-process training test earlier in the session may have left a
    world-1 process group initialised (rank 0), which would otherwise win."""
    monkeypatch.setattr(index_cache, "_global_rank", lambda: int(os.environ.get("RANK", "0")))


def test_non_builder_rank_waits_for_files_then_loads(data, monkeypatch, rank_from_env):
    cfg = _cfg(train_data_paths=[str(data / "B_text_document")], valid_data_paths=[], test_data_paths=[])
    monkeypatch.setenv("RANK", "1")
    done = {}

    def waiter():
        done["ds"] = build_datasets(cfg)[0]

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert "ds" not in done  # still polling: nothing built yet
    monkeypatch.setenv("RANK", "0")
    built = build_datasets(cfg)[0]
    t.join(timeout=30)
    assert np.array_equal(done["ds"][3]["text"], built[3]["text"])


def test_non_builder_rank_times_out_with_a_clear_message(data, monkeypatch, rank_from_env):
    cfg = _cfg(train_data_paths=[str(data / "B_text_document")], valid_data_paths=[], test_data_paths=[])
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("NEOX_DATA_INDEX_TIMEOUT", "0.2")
    with pytest.raises(DataError, match="waited 0 s for the sample-index cache .*global rank 0.*use_shared_fs: false"):
        build_datasets(cfg)


def test_use_shared_fs_false_builds_on_local_rank_0(data, monkeypatch, rank_from_env):
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = _cfg(train_data_paths=[str(data / "B_text_document")], valid_data_paths=[], test_data_paths=[],
               use_shared_fs=False)
    assert len(build_datasets(cfg)[0]) > 0
    assert not index_cache.is_builder(True)


def test_cache_dir_override(data, tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NEOX_DATA_CACHE_DIR", str(cache))
    build_datasets(_cfg(data_path=str(data / "A_text_document")))
    assert len(list(cache.glob("A_text_document_train_indexmap_*_doc_idx.npy"))) == 1
    assert not list(data.glob("*indexmap*"))


def test_bad_config_and_data_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="no training data"):
        build_datasets(_cfg())
    cfg = _cfg(train_data_paths=[str(data / "A_text_document")], valid_data_paths=[], test_data_paths=[],
               train_label_data_paths=[str(data / "B_text_document")])
    with pytest.raises(DataError, match="unsigned dtype uint16, which cannot hold -100"):
        build_datasets(cfg)
    with IndexedDatasetBuilder(tmp_path / "empty_doc", dtype=np.uint16) as b:
        for doc in ([5, 6, 7], [], [8, 9]):
            b.add_item(doc)
            b.end_document()
    with pytest.raises(DataError, match=r"empty_doc has 1 empty documents \(first: item 1\)"):
        build_datasets(_cfg(data_path=str(tmp_path / "empty_doc")))
    with IndexedDatasetBuilder(tmp_path / "floats", dtype=np.float32) as b:
        b.add_item([0.5, 1.5])
        b.end_document()
    with pytest.raises(DataError, match="floats holds float32 values, not token ids"):
        build_datasets(_cfg(data_path=str(tmp_path / "floats")))
    with pytest.raises(DataError, match="token id .* is outside the vocabulary"):
        build_datasets(_cfg(data_path=str(data / "A_text_document"), padded_vocab_size=512))


def test_unpacked_without_labels_packs_one_document_per_sample(data):
    cfg = _cfg(train_data_paths=[str(data / "A_text_document")], valid_data_paths=[], test_data_paths=[],
               pack_impl="unpacked")
    train = build_datasets(cfg)[0]
    ds = train.datasets[0]
    assert list(ds.doc_idx[:5]) == [0, 1, 2, 3, 4]
    j = int(ds.shuffle_idx[0])
    doc = ds.indexed[j][:33]
    assert np.array_equal(train[0]["text"][: len(doc)], doc)


# ------------------------------------------------------------------------------------------ loader


def _positions(num, micro, rank, dp, consumed, steps):
    it = iter(ResumableBatchSampler(num, micro, rank, dp, consumed))
    return [next(it) for _ in range(steps)]


def test_sampler_matches_upstream_contiguous_slices_and_cycles():
    # 10 samples, global micro-batch 4 -> 2 per pass (drop_last), rank 1 takes [2, 4) of each.
    assert _positions(10, 2, 1, 2, 0, 3) == [[2, 3], [6, 7], [2, 3]]
    assert _positions(10, 2, 0, 2, 0, 3) == [[0, 1], [4, 5], [0, 1]]


def test_sampler_resume_equals_uninterrupted_run():
    full = [_positions(100, 3, r, 4, 0, 20) for r in range(4)]
    for step in (1, 7, 8, 13):
        for r in range(4):
            assert _positions(100, 3, r, 4, step * 12, 20 - step) == full[r][step:]


def test_sampler_resume_after_data_parallel_size_change():
    # 6 global micro-batches of 4 ranks x 2, then resume on 2 ranks x 4 (same global batch of 8).
    before = [i for step in range(6) for r in range(4) for i in _positions(64, 2, r, 4, 0, 6)[step]]
    after = [i for step in range(2) for r in range(2) for i in _positions(64, 4, r, 2, 48, 2)[step]]
    assert before == list(range(48)) and after == list(range(48, 64))
    # A global batch that no longer divides the pass still continues at the first unseen sample.
    assert _positions(64, 5, 0, 1, 48, 1) == [[48, 49, 50, 51, 52]]


def test_build_loader_batches_and_resume(data):
    cfg = _cfg(train_data_paths=[str(data / "A_text_document"), str(data / "B_text_document")],
               train_data_weights=[1, 2], valid_data_paths=[], test_data_paths=[])
    train = build_datasets(cfg)[0]
    it = build_loader(train, cfg, dp_rank=1, dp_size=2, consumed_samples=0)
    b0, b1 = next(it), next(it)
    assert b0["text"].dtype == torch.int64 and b0["text"].shape == (2, 33)
    assert torch.equal(b0["text"][0], torch.from_numpy(train[2]["text"]))
    assert torch.equal(b1["text"][1], torch.from_numpy(train[7]["text"]))
    resumed = next(build_loader(train, cfg, dp_rank=1, dp_size=2, consumed_samples=4))
    assert torch.equal(resumed["text"], b1["text"])
    assert consumed_samples(cfg, 3) == 12 and consumed_samples(cfg, 25, "valid") == 2 * 2 * 2 * 2


def test_build_loader_with_workers_gives_same_batches(data):
    cfg = _cfg(data_path=str(data / "B_text_document"), num_workers=2)
    train = build_datasets(cfg)[0]
    with_workers = build_loader(train, cfg, dp_rank=0, dp_size=1, consumed_samples=6)
    cfg.num_workers = 0
    plain = build_loader(train, cfg, dp_rank=0, dp_size=1, consumed_samples=6)
    for _ in range(3):
        assert torch.equal(next(with_workers)["text"], next(plain)["text"])


# --------------------------------------------------------------------------------------- get_batch


def test_get_batch_shifts_and_masks():
    text = torch.tensor([[5, 0, 7, 8, 0], [1, 2, 3, 4, 5]])
    label = torch.tensor([[-100, -100, 7, 8, -100], [-100, 2, 3, -100, -100]])
    cfg = SimpleNamespace(eod_mask_loss=False)
    tokens, labels, mask = get_batch({"text": text}, cfg, eod=0)
    assert torch.equal(tokens, text[:, :-1]) and torch.equal(labels, text[:, 1:])
    assert mask.dtype == torch.float32 and mask.sum() == 8
    tokens, labels, mask = get_batch({"text": text, "label": label}, cfg, eod=0)
    assert labels.tolist() == [[0, 7, 8, 0], [2, 3, 0, 0]]
    assert mask.tolist() == [[0, 1, 1, 0], [1, 1, 0, 0]]
    cfg.eod_mask_loss = True
    _, _, mask = get_batch({"text": text}, cfg, eod=0)
    assert mask.tolist() == [[1, 0, 1, 1], [1, 1, 1, 1]]




def test_with_a_real_config(tmp_path):
    """neox.config.load -> build_datasets -> build_loader -> get_batch on the tiny preset."""
    from pydoc_data.topics import topics

    from neox.config import load
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(Path(__file__).resolve().parents[2] / "configs/tokenizers/neox-tiny.json"))
    with IndexedDatasetBuilder(tmp_path / "pydoc_text_document", dtype=np.uint16) as b:
        for key in sorted(topics):
            b.add_item(tok.encode(topics[key]) + [tok.eod])
            b.end_document()
    cfg = load(["configs/neox-tiny.yml"], [f"data_path={tmp_path / 'pydoc_text_document'}", "train_iters=10",
                                           "eval_interval=5", "eval_iters=2", "num_workers=0"])
    train, valid, test = build_datasets(cfg)
    assert len(train) >= 10 * cfg.train_batch_size and valid is not None
    batch = next(build_loader(train, cfg, dp_rank=0, dp_size=1, consumed_samples=0))
    tokens, labels, mask = get_batch(batch, cfg, tok.eod)
    assert tokens.shape == (cfg.train_micro_batch_size_per_gpu, cfg.seq_length) and mask.all()
    assert torch.equal(labels[:, :-1], tokens[:, 1:])
