"""Tensor, sequence and pipeline parallelism over NCCL on 2 or 4 GPUs (run by the lead on H100s).

The parity layouts of ``tools/bench/gpu_parallel.py`` (the CPU version of this check runs in CI:
tests/integration/test_parallel_parity.py): a tiny model trains 20 steps in fp32 on one GPU and in
every layout that fits (TP 2, PP 2, TP 2 + SP; with 4 GPUs also TP 2 x DP 2, PP 2 x DP 2,
TP 2 x PP 2 + SP); each loss curve stays within 1e-4 of the one-GPU curve (fp32 with TF32 off:
only the summation order differs; cuBLAS picks other kernels for the split shapes and atomics in
the backward make runs differ by ~1e-7 relative per step). Then ``neox bench --nproc 2`` runs TP 2
and PP 2 layouts in bf16 and reports them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "bench"))
import gpu_parallel as harness  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs at least 2 GPUs"),
]


def test_parity_over_nccl(tmp_path):
    gpus = torch.cuda.device_count()
    report = harness.parity(harness.PARITY, tmp_path, gpus=min(gpus, 4), tolerance=1e-4, timeout=300,
                            deadline=float("inf"))
    ran = [r for r in report["runs"] if not r["status"].startswith("skipped")]
    assert len(ran) >= 4, report
    for row in ran:
        assert row["status"] == "ok", row
    (tmp_path / "parity.json").write_text(json.dumps(report, indent=1))


@pytest.mark.parametrize("overrides", [["model_parallel_size=2"], ["pipe_parallel_size=2", "gradient_accumulation_steps=4"],
                                       ["model_parallel_size=2", "sequence_parallel=true"]])
def test_bench_two_gpu_layouts(tmp_path, overrides):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "neox.cli.main", "bench", "--nproc", "2", "--shape", "neox-tiny", "--seq", "256",
         "--micro-batch", "4", "--steps", "3", "--warmup", "2", "--json", str(out), *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())["results"]
    assert r["world_size"] == 2 and r["precision"] == "bfloat16"
    lay = r["layout"]
    assert lay["pipe"] * lay["tensor"] * lay["data"] == 2 and (lay["tensor"] == 2) == ("model_parallel_size=2" in overrides)
    assert r["tokens_per_s_per_gpu"] > 0 and r["peak_memory_gib"] > 0
    assert r["loss_first"] > 0 and r["loss_last"] > 0
