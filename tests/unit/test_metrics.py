"""Throughput, TFLOPS and MFU arithmetic, the peak table and the console line."""

from __future__ import annotations

import math

import pytest

from neox.train.loggers import format_train_line
from neox.train.metrics import IterationClock, hms, peak_tflops, throughput


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA GH200 480GB", 989.4),  # must not fall through to "H200" or "H100"
        ("NVIDIA H200", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("cpu", None),
        ("Some Future GPU", None),
        (None, None),
    ],
)
def test_peak_table(name, peak):
    assert peak_tflops(name) == peak


def test_peak_override_wins():
    assert peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0
    assert peak_tflops("cpu", 123.0) == 123.0


def test_throughput_and_mfu():
    # 1.4B-like: 8.47 GFLOP/token causal; 49k tokens/s/GPU on 8 GPUs is ~42% causal MFU on an H100
    flops = {"causal": 8.47e9, "noncausal": 9.07e9, "neox": 8.92e9, "neox_hfu": 8.92e9 * 4 / 3}
    tokens_per_iter = 8 * 1024 * 2048  # global batch 1024 x s 2048... on 8 GPUs
    t = tokens_per_iter / (49_000 * 8)
    r = throughput(t, tokens_per_iter=tokens_per_iter, world_size=8, flops_per_token=flops, peak=989.4)
    assert r.tokens_per_s == pytest.approx(392_000)
    assert r.tokens_per_s_per_gpu == pytest.approx(49_000)
    assert r.tflops_per_gpu == pytest.approx(8.47e9 * 49_000 / 1e12)
    assert r.mfu_causal == pytest.approx(8.47e9 * 49_000 / 989.4e12)
    assert r.mfu_neox == pytest.approx(8.92e9 * 49_000 / 989.4e12)
    assert r.hfu_neox == pytest.approx(r.mfu_neox * 4 / 3)
    m = r.metrics()
    assert m["throughput/mfu_causal_pct"] == pytest.approx(41.95, abs=0.01)
    cpu = throughput(t, tokens_per_iter=tokens_per_iter, world_size=8, flops_per_token=flops, peak=None)
    assert cpu.mfu_causal is None and "throughput/mfu_causal_pct" not in cpu.metrics()


def test_console_line_has_fixed_fields():
    m = {"train/lm_loss": 2.34567, "train/lr": 3e-4, "train/grad_norm": 0.5, "throughput/tokens_per_s": 123456.0,
         "throughput/tokens_per_s_per_gpu": 30864.0, "throughput/tflops_per_gpu": 261.4,
         "throughput/mfu_causal_pct": 26.4, "throughput/mfu_neox_pct": 27.9, "memory/peak_gib": 41.23,
         "time/elapsed_s": 3725.2, "time/eta_s": 90061.0}
    line = format_train_line(250, 1000, m)
    assert line == ("iter  250/1000 | lm_loss 2.3457 | lr 3.000e-04 | grad_norm 0.500 | tok/s 123,456 (30,864/gpu)"
                    " | TFLOPS/gpu 261.40 | MFU 26.4% (neox 27.9%) | mem 41.2 GiB | elapsed 1:02:05 | ETA 1-01:01:01")
    cpu = format_train_line(5, 20, {"train/lm_loss": 7.0, "train/grad_norm": math.nan})
    assert "MFU n/a" in cpu and "grad_norm n/a" in cpu and "ETA ?" in cpu


def test_clock_eta_uses_recent_iterations():
    c = IterationClock(window=2)
    c._recent.extend([10.0, 1.0, 3.0])  # the oldest falls out of the window
    assert c.recent_iter_s == 2.0 and c.eta_s(5) == 10.0
    assert hms(float("nan")) == "?" and hms(59.6) == "0:01:00"
