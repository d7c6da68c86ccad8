"""tools/datasets/preprocess_data.py end to end: outputs checked against `tokenizers` itself."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox.data.indexed import IndexedDataset

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "datasets" / "preprocess_data.py"
TOKENIZER = REPO / "configs" / "tokenizers" / "neox-tiny.json"


def _texts() -> list[str]:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    rng = np.random.default_rng(0)
    out = [topics[keys[i % len(keys)]][: int(rng.integers(0, 1500))] for i in range(400)]
    out[7] = ""  # empty documents are skipped and counted
    out[100] = ""
    return out


def _run(*args, ok=True):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("pp")
    texts = _texts()
    lines = [json.dumps({"text": t, "title": t[:20][::-1]}) + "\n" for t in texts]
    (d / "in.jsonl").write_text("".join(lines))
    with gzip.open(d / "in.jsonl.gz", "wt") as f:
        f.writelines(lines)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "title": [t[:20][::-1] for t in texts]}), d / "in.parquet",
                   row_group_size=64)
    return d, texts


def test_tokens_match_the_tokenizer_and_workers_do_not_change_output(corpus):
    d, texts = corpus
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    common = ["--tokenizer-type", "HFTokenizer", "--vocab-file", TOKENIZER, "--append-eod", "--jsonl-keys", "text", "title"]
    s1 = _run("--input", d / "in.jsonl", "--output-prefix", d / "w1", "--workers", 1, *common)
    s2 = _run("--input", d / "in.jsonl", "--output-prefix", d / "w2", "--workers", 2, *common)
    for key in ("text", "title"):
        for ext in (".bin", ".idx"):
            assert (d / f"w1_{key}_document{ext}").read_bytes() == (d / f"w2_{key}_document{ext}").read_bytes()
    ds = IndexedDataset(d / "w1_text_document")
    kept = [t for t in texts if t]
    assert ds.dtype == np.uint16 and len(ds) == len(kept) == 398
    for i, t in enumerate(kept):
        assert list(ds[i]) == tok.encode(t).ids + [0], i
    titles = IndexedDataset(d / "w1_title_document")  # each key tokenizes its own field
    assert list(titles[0]) == tok.encode(kept[0][:20][::-1]).ids + [0]
    assert s1["documents"] == 398 and s1["skipped"] == 2 and s1["per_key"]["text"]["skipped_empty_text"] == 2
    assert s1["tokens"] == ds.num_tokens and s2["workers"] == 2
    assert s1["tokenizer"]["vocab_size"] == 2048 and s1["append_eod"] is True and s1["tokens_per_s"] > 0


@pytest.mark.parametrize("name", ["in.jsonl.gz", "in.parquet"])
def test_gzip_and_parquet_inputs_give_the_same_files(corpus, name):
    d, _ = corpus
    common = ["--tokenizer-type", "HFTokenizer", "--vocab-file", TOKENIZER, "--append-eod"]
    _run("--input", d / "in.jsonl", "--output-prefix", d / "ref", *common)
    _run("--input", d / name, "--output-prefix", d / "alt", "--workers", 2, *common)
    for ext in (".bin", ".idx"):
        assert (d / f"ref_text_document{ext}").read_bytes() == (d / f"alt_text_document{ext}").read_bytes()


def test_bad_input_is_one_line_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{not json}\n')
    proc = _run("--input", bad, "--output-prefix", tmp_path / "o", "--tokenizer-type", "HFTokenizer",
                "--vocab-file", TOKENIZER, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"preprocess_data: error: {bad}:3: not valid JSON "
                                                "(Expecting property name enclosed in double quotes); "
                                                "fix or remove that line"]
    assert not list(tmp_path.glob("o_*"))  # nothing half-written
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"text": "a"}\n{"body": "b"}\n')
    proc = _run("--input", nokey, "--output-prefix", tmp_path / "o", "--tokenizer-type", "HFTokenizer",
                "--vocab-file", TOKENIZER, ok=False)
    assert f"{nokey}:2: no key 'text' (keys: body)" in proc.stderr
    proc = _run("--input", tmp_path / "missing.jsonl", "--output-prefix", tmp_path / "o",
                "--tokenizer-type", "HFTokenizer", "--vocab-file", TOKENIZER, ok=False)
    assert proc.returncode == 1 and "missing.jsonl does not exist" in proc.stderr
