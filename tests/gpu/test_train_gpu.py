"""Training and the benchmark on one GPU (run by the lead on an H100): bf16 + fused AdamW + SDPA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu


def _neox(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neox.cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def test_bench_one_gpu_tiny_shape_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _neox("bench", "--shape", "neox-tiny", "--seq", "256", "--micro-batch", "4", "--steps", "3", "--warmup", "2",
                 "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "NVIDIA" in report["environment"]["device"] and report["environment"]["cuda"]
    (r,) = report["results"]
    assert r["shape"] == "neox-tiny" and r["precision"] == "bfloat16" and r["seq_length"] == 256
    assert r["tokens_per_s"] > 0 and r["tokens_per_s_per_gpu"] == pytest.approx(r["tokens_per_s"])
    assert r["tflops_per_gpu"] > 0 and r["peak_memory_gib"] > 0
    assert r["peak_tflops"] is not None, "this GPU is missing from neox.train.metrics.PEAK_TFLOPS"
    assert 0 < r["mfu_causal_pct"] < 100 and 0 < r["mfu_neox_pct"] < 100
    assert r["step_time_s"]["min"] <= r["step_time_s"]["median"] <= r["step_time_s"]["max"]
    assert r["loss_first"] > 0 and r["loss_last"] > 0


def _corpus(tmp_path: Path) -> str:
    import pydoc_data.topics

    import numpy as np

    from neox.data import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs/tokenizers/neox-tiny.json"))
    prefix = tmp_path / "pydoc_text_document"
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for text in list(pydoc_data.topics.topics.values())[:20]:
        builder.add_item(tok.encode(text) + [tok.eod])
        builder.end_document()
    builder.finalize()
    return str(prefix)


def _losses(path: Path) -> dict[int, float]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["iteration"]: r["train/lm_loss"] for r in recs if r["event"] == "train"}


@pytest.mark.parametrize("precision", ["bfloat16", "fp16"])
def test_gpu_training_resumes_exactly(tmp_path, precision):
    corpus = _corpus(tmp_path)
    common = ["configs/neox-tiny.yml", f"data_path={corpus}", f"precision={precision}", "train_iters=12",
              "lr_decay_iters=12", "log_interval=1", "eval_interval=6", "eval_iters=1", "num_workers=0",
              "hidden_dropout=0.1"]
    if precision == "fp16":
        common.append("fp16={enabled: true, loss_scale: 0, initial_scale_power: 12}")
    a = tmp_path / "a"
    proc = _neox("train", *common, f"save={a}/ckpt", "checkpoint_factor=6", f"log_dir={a}/logs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MFU n/a" not in proc.stdout and "mem " in proc.stdout
    if precision == "fp16":
        assert "loss_scale" in proc.stdout
    b = tmp_path / "b"
    proc = _neox("train", *common, f"load={a}/ckpt", "iteration=6", f"log_dir={b}/logs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    full, resumed = _losses(a / "logs" / "metrics.jsonl"), _losses(b / "logs" / "metrics.jsonl")
    assert [resumed[i] for i in range(7, 13)] == [full[i] for i in range(7, 13)]
    assert full[12] < full[1]
