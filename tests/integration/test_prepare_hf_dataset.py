"""`just prepare` end to end on local datasets: parquet file, save_to_disk dir, chat data,
pipeline_results.json, resume after an interrupted stage, defaults and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox.data.indexed import IndexedDataset

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "datasets" / "prepare_hf_dataset.py"
TOKENIZER = REPO / "configs" / "tokenizers" / "neox-tiny.json"
CHAT_TOK = REPO / "tests" / "assets" / "data" / "chat-tokenizer"
ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1"}


def _texts(n: int = 300) -> list[str]:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    return [topics[keys[(7 * i) % len(keys)]][: 50 + (37 * i) % 900] for i in range(n)]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    import datasets

    d = tmp_path_factory.mktemp("hf")
    texts = _texts()
    ds = datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    ds.to_parquet(str(d / "corpus.parquet"))
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(20))}).save_to_disk(str(d / "saved"))
    chats = [[{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}] for i in range(40)]
    datasets.Dataset.from_dict({"messages": chats}).save_to_disk(str(d / "chat"))
    return d, texts


def _just(*args, env=None, ok=True):
    cmd = ["just", "prepare", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **ENV, "NEOX_PYTHON": sys.executable, **(env or {})})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_parquet_end_to_end_and_resume(local, tmp_path):
    d, texts = local
    out = tmp_path / "out"
    proc = _just(f"dataset={d / 'corpus.parquet'}", f"tokenizer={TOKENIZER}", f"output={out}")
    res = json.loads((out / "pipeline_results.json").read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1])["tokens"] == res["tokens"]
    assert res["inputs"]["column"] == "text" and res["inputs"]["tokenizer"]["vocab_size"] == 2048
    assert res["inputs"]["tokenizer"]["fingerprint"] and res["eod_policy"] == "EOD id 0 appended to every document"
    assert [s for s in res["stages"] if res["stages"][s]["done"]] == ["load", "count", "export", "tokenize"]
    ds = IndexedDataset(out / "out_text_document")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    assert len(ds) == 300 and list(ds[5]) == tok.encode(texts[5]).ids + [0]
    assert res["stages"]["count"]["tokens"] + 300 == res["stages"]["tokenize"]["tokens"] == ds.num_tokens
    assert all(res["stages"][s]["seconds"] >= 0 for s in res["stages"])

    # Rerun: every stage is recognised as done.
    proc = _just(f"dataset={d / 'corpus.parquet'}", f"tokenizer={TOKENIZER}", f"output={out}")
    assert proc.stderr.count("already done, skipping") == 4

    # Interrupted tokenize stage: the output cannot be moved into place (a directory is in the
    # way). Nothing that looks complete may remain, and the rerun starts at that stage.
    for f in out.glob("out_text_document.*"):
        f.unlink()
    res = json.loads((out / "pipeline_results.json").read_text())
    del res["stages"]["tokenize"]
    (out / "pipeline_results.json").write_text(json.dumps(res))
    (out / "out_text_document.idx").mkdir()
    proc = _just(f"dataset={d / 'corpus.parquet'}", f"tokenizer={TOKENIZER}", f"output={out}", ok=False)
    assert proc.returncode != 0
    assert not (out / "out_text_document.bin").exists() and not list(out.glob("*.tmp"))
    assert "tokenize" not in json.loads((out / "pipeline_results.json").read_text())["stages"]
    (out / "out_text_document.idx").rmdir()
    proc = _just(f"dataset={d / 'corpus.parquet'}", f"tokenizer={TOKENIZER}", f"output={out}")
    assert "export: already done" in proc.stderr and "tokenize ..." in proc.stderr
    assert np.array_equal(IndexedDataset(out / "out_text_document").sizes, ds.sizes)


def test_save_to_disk_split_default_output_under_data_root(local, tmp_path):
    d, _ = local
    root = tmp_path / "root"
    _just(f"dataset={d / 'saved'}", "split=validation", f"tokenizer={TOKENIZER}", "skip_count=true",
          env={"NEOX_DATA_ROOT": str(root)})
    out = root / "saved-validation"
    res = json.loads((out / "pipeline_results.json").read_text())
    assert "count" not in res["stages"] and res["documents"] == 20
    assert len(IndexedDataset(out / "saved-validation_text_document")) == 20


def test_chat_dataset_autodetects_messages(local, tmp_path):
    d, _ = local
    out = tmp_path / "chat"
    _just(f"dataset={d / 'chat'}", f"tokenizer={CHAT_TOK}", f"output={out}")
    res = json.loads((out / "pipeline_results.json").read_text())
    assert res["inputs"]["column"] == "messages" and res["documents"] == 40
    labels = IndexedDataset(out / "chat_messages_label_document")
    assert labels.dtype == np.int32 and (labels.tokens() == -100).any() and (labels.tokens() >= 0).any()


def _main(argv, capsys, monkeypatch, env=None):
    """In-process run of the script's main() (the CLI path without a new interpreter)."""
    import importlib.util

    for k, v in {**ENV, **(env or {})}.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("prepare_hf_dataset", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_errors_are_one_line(local, tmp_path, capsys, monkeypatch):
    d, _ = local
    proc = _just(f"dataset={d / 'saved'}", "split=nope", f"tokenizer={TOKENIZER}", f"output={tmp_path / 'x'}", ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (f"prepare_hf_dataset: error: dataset {d / 'saved'} has no split 'nope'; it has train, validation"
            in proc.stderr.splitlines())
    env = {"NEOX_DATA_ROOT": "", "NEOX_SITE": str(tmp_path / "nosite.env")}
    rc, err = _main([f"dataset={d / 'corpus.parquet'}", f"tokenizer={TOKENIZER}"], capsys, monkeypatch, env)
    assert rc == 1 and err[-1].startswith("prepare_hf_dataset: error: no output directory: pass --output-dir (output=)")
    rc, err = _main(["dataset=someorg/not-cached-anywhere", f"tokenizer={TOKENIZER}", f"output={tmp_path / 'y'}"],
                    capsys, monkeypatch)
    assert rc == 1 and err[-1].startswith("prepare_hf_dataset: error: dataset someorg/not-cached-anywhere")
    rc, err = _main([f"dataset={d / 'corpus.parquet'}", f"output={tmp_path / 'z'}"], capsys, monkeypatch)
    assert rc == 1 and err[-1].startswith("prepare_hf_dataset: error: --tokenizer is required")
