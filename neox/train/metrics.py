"""Throughput, TFLOPS, MFU and ETA of training steps.

FLOPs per token come from :func:`neox.config.plan.flops_per_token` — one formula for the
planner, the log and the benchmark. It counts GQA, gated MLPs and the vocabulary term (upstream's
logged FLOPs do not: GPT-NeoX #1093, Megatron PR #682). Two MFUs are reported:

- **causal MFU** (the primary number): model FLOPs with causal attention (``6·N_matmul + 6·V·h +
  6·L·h·s`` per token) per second and GPU, over the device's dense bf16 peak;
- **NeoX MFU**: upstream GPT-NeoX's formula ``72·L·h²·(1 + s/(6h) + V/(16·L·h))`` per token, so
  runs compare directly with NeoX logs.

TFLOPS/GPU is the causal model-FLOPs rate. The peak comes from ``peak_theoretical_tflops`` if set,
else from :data:`PEAK_TFLOPS` by ``torch.cuda.get_device_name`` (dense bf16/fp16 tensor-core
peak, no sparsity); on a CPU or an unknown device MFU is n/a rather than a guess.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

# Dense bf16 peak in TFLOPS by device-name fragment, most specific first ("GH200" contains "H200").
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
)


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """Dense bf16 TFLOPS of ``device_name`` (``override`` wins); None where unknown (CPU)."""
    if override:
        return float(override)
    if not device_name:
        return None
    for fragment, tflops in PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return tflops
    return None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Throughput:
    """Rates of one measured window of training steps."""

    iter_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float
    mfu_causal: float | None
    mfu_neox: float | None
    hfu_neox: float | None

    def metrics(self) -> dict[str, float]:
        out = {
            "time/iter_s": self.iter_time_s,
            "throughput/tokens_per_s": self.tokens_per_s,
            "throughput/tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "throughput/tflops_per_gpu": self.tflops_per_gpu,
        }
        if self.mfu_causal is not None:
            out["throughput/mfu_causal_pct"] = 100 * self.mfu_causal
            out["throughput/mfu_neox_pct"] = 100 * self.mfu_neox
            out["throughput/hfu_neox_pct"] = 100 * self.hfu_neox
        return out


def throughput(
    iter_time_s: float, *, tokens_per_iter: int, world_size: int, flops_per_token: dict, peak: float | None
) -> Throughput:
    """Rates for iterations of ``iter_time_s`` seconds, each of ``tokens_per_iter`` tokens (global)."""
    tps = tokens_per_iter / iter_time_s
    per_gpu = tps / world_size

    def frac(kind: str) -> float | None:
        return None if peak is None else flops_per_token[kind] * per_gpu / (peak * 1e12)

    return Throughput(
        iter_time_s=iter_time_s,
        tokens_per_s=tps,
        tokens_per_s_per_gpu=per_gpu,
        tflops_per_gpu=flops_per_token["causal"] * per_gpu / 1e12,
        mfu_causal=frac("causal"),
        mfu_neox=frac("neox"),
        hfu_neox=frac("neox_hfu"),
    )


class IterationClock:
    """Wall time per iteration over a recent window, elapsed time, and the ETA from them."""

    def __init__(self, window: int = 50) -> None:
        self.start = time.perf_counter()
        self._last = self.start
        self._recent: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        """Mark the end of one iteration; returns its duration in seconds."""
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        self._recent.append(dt)
        return dt

    def pause(self) -> None:
        """Exclude the time since the last tick (evaluation, checkpointing) from the next iteration."""
        self._last = time.perf_counter()

    @property
    def recent_iter_s(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else float("nan")

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def eta_s(self, remaining_iters: int) -> float:
        return remaining_iters * self.recent_iter_s


def hms(seconds: float) -> str:
    """``3725.2`` -> ``1:02:05``; over a day Slurm's ``1-02:03:04``; ``nan`` -> ``?``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:d}:{m:02d}:{s:02d}"
