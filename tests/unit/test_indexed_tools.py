"""tools/datasets/merge_datasets.py and check_data.py, run in-process through their main()."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from neox.data.indexed import IndexedDataset

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "assets" / "data" / "golden" / "datasets"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "datasets" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_merge_tool(tmp_path, capsys):
    rc = _tool("merge_datasets")(["--input", str(GOLDEN / "A_text_document"), str(GOLDEN / "B_text_document"),
                                  "--output-prefix", str(tmp_path / "m")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["documents"] == 420 and out["tokens"] == 28545 + 28693
    m, b = IndexedDataset(tmp_path / "m"), IndexedDataset(GOLDEN / "B_text_document")
    assert np.array_equal(m[419], b[119])
    rc = _tool("merge_datasets")(["--input", str(GOLDEN / "A_text_document"), str(GOLDEN / "A_text_label_document"),
                                  "--output-prefix", str(tmp_path / "x")])
    assert rc == 1 and "must share a dtype" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))


def test_check_tool(capsys):
    check = _tool("check_data")
    rc = check([str(GOLDEN / "A_text_document"), "--labels", str(GOLDEN / "A_text_label_document"),
                "--vocab-size", "1000"])
    (info,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and info["max_token"] == 999 and info["min_doc"] == 1 and info["trained_tokens"] > 0
    rc = check([str(GOLDEN / "A_text_document"), "--vocab-size", "500"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "token id 528 in item 0 is outside the vocabulary (0..499)" in err[0]
    rc = check([str(GOLDEN / "A_text_document"), "--labels", str(GOLDEN / "B_text_document")])
    assert rc == 1 and "unsigned dtype uint16" in capsys.readouterr().err
