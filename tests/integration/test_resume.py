"""Exact resume, multi-rank parity and preemption, through the real `neox train` command.

- 20 iterations straight vs resumed from the step-10 checkpoint: bitwise equal losses, for ZeRO-0
  and ZeRO-1, on 1 and 2 ranks (2 ranks: `--nproc 2` over gloo). The ZeRO-1 single-rank run has
  dropout on, so the RNG state must come back too.
- 2 ranks with ZeRO-1 and ZeRO-2 follow the 1-rank loss curve at the same global batch (fp32
  tolerance; dropout off, since ranks draw their masks per micro-batch).
- SIGUSR1 mid-run: exit status 75 after saving; resuming continues the straight run bit for bit.

Runs are cached per module so each configuration trains once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "neox-tiny.yml")

# A smaller neox-tiny: 2 layers, h64, s64; global batch 8; eval every 5 steps.
BASE = [
    "num_layers=2", "hidden_size=64", "num_attention_heads=4", "seq_length=64", "max_position_embeddings=64",
    "train_iters=20", "lr_decay_iters=20", "warmup=0.1", "log_interval=1", "eval_interval=5", "eval_iters=1",
    "num_workers=0", "split=90,10,0",
]
DROPOUT = ["hidden_dropout=0.1", "attention_dropout=0.1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """~25k tokens of CPython's pydoc text as a .bin/.idx pair, tokenized with the tiny tokenizer."""
    import pydoc_data.topics

    from neox.data import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs/tokenizers/neox-tiny.json"))
    prefix = tmp_path_factory.mktemp("data") / "pydoc_text_document"
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for text in list(pydoc_data.topics.topics.values())[:20]:
        builder.add_item(tok.encode(text) + [tok.eod])
        builder.end_document()
    builder.finalize()
    return str(prefix)


def run_train(out: Path, corpus: str, *overrides: str, nproc: int = 1, expect: int = 0, stop_after: int | None = None):
    """Run `neox train` into ``out``; returns {iteration: lm_loss} from its metrics.jsonl."""
    cmd = [sys.executable, "-m", "neox.cli.main", "train", TINY, *BASE, f"data_path={corpus}",
           f"log_dir={out / 'logs'}", *overrides]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if stop_after is not None and line.startswith(f"iter {stop_after:>2d}/"):
                proc.send_signal(signal.SIGUSR1)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert proc.returncode == expect, f"exit {proc.returncode} (expected {expect}):\n{log[-4000:]}"
    return losses(out / "logs" / "metrics.jsonl"), log


def losses(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == "train":
            out[rec["iteration"]] = rec["train/lm_loss"]
    return out


_cache: dict = {}


def _settings(zero: int, nproc: int) -> list[str]:
    dropout = DROPOUT if (zero, nproc) == (1, 1) else []
    return [f"zero_optimization.stage={zero}", f"train_micro_batch_size_per_gpu={8 // nproc}", *dropout]


def straight(tmp_path_factory, corpus, zero: int, nproc: int) -> tuple[dict, Path]:
    """20 iterations, saving at 10 and 20 (cached)."""
    if (zero, nproc) not in _cache:
        out = tmp_path_factory.mktemp(f"straight_z{zero}_n{nproc}")
        got, _ = run_train(out, corpus, *_settings(zero, nproc), f"save={out / 'ckpt'}", "checkpoint_factor=10",
                           nproc=nproc)
        _cache[zero, nproc] = (got, out / "ckpt")
    return _cache[zero, nproc]


@pytest.mark.parametrize("zero,nproc", [(0, 1), (1, 1), (0, 2), (1, 2)])
def test_resume_is_bitwise_exact(tmp_path_factory, corpus, zero, nproc):
    full, ckpt = straight(tmp_path_factory, corpus, zero, nproc)
    assert sorted(full) == list(range(1, 21))
    assert (ckpt / "global_step10" / "mp_rank_00_model_states.pt").is_file()
    out = tmp_path_factory.mktemp(f"resumed_z{zero}_n{nproc}")
    resumed, log = run_train(out, corpus, *_settings(zero, nproc), f"load={ckpt}", "iteration=10", nproc=nproc)
    assert "resuming at iteration 10" in log
    assert sorted(resumed) == list(range(11, 21))
    assert [resumed[i] for i in range(11, 21)] == [full[i] for i in range(11, 21)]
    assert full[20] < full[1] - 0.5  # it learns


@pytest.mark.parametrize("zero", [1, 2])
def test_two_ranks_match_one_rank(tmp_path_factory, corpus, zero):
    one, _ = straight(tmp_path_factory, corpus, 0, 1)  # global batch 8 on one rank
    if zero == 1:
        two, _ = straight(tmp_path_factory, corpus, 1, 2)  # 4 per rank
    else:
        out = tmp_path_factory.mktemp("two_ranks_z2")
        two, _ = run_train(out, corpus, *_settings(2, 2), nproc=2)
    a = np.array([one[i] for i in range(1, 21)])
    b = np.array([two[i] for i in range(1, 21)])
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5)
    assert not np.array_equal(a[:1], a[-1:])


def test_sigusr1_saves_exits_75_and_resumes_exactly(tmp_path_factory, corpus):
    full, _ = straight(tmp_path_factory, corpus, 1, 1)
    out = tmp_path_factory.mktemp("preempted")
    ckpt = out / "ckpt"
    t0 = time.monotonic()
    part, log = run_train(out, corpus, *_settings(1, 1), f"save={ckpt}", "checkpoint_factor=100", f"load={ckpt}",
                          stop_after=6, expect=75)
    assert "stop signal received" in log and "checkpoint saved; resume from latest" in log
    stopped_at = max(part)
    assert 6 <= stopped_at < 20 and time.monotonic() - t0 < 120
    assert (ckpt / "latest").read_text() == f"global_step{stopped_at}"
    assert [part[i] for i in range(1, stopped_at + 1)] == [full[i] for i in range(1, stopped_at + 1)]
    # the same command again (load = save, as a requeued Slurm job) continues from latest
    rest, log = run_train(out, corpus, *_settings(1, 1), f"save={ckpt}", "checkpoint_factor=100", f"load={ckpt}")
    assert f"resuming at iteration {stopped_at}" in log
    assert [rest[i] for i in range(stopped_at + 1, 21)] == [full[i] for i in range(stopped_at + 1, 21)]
