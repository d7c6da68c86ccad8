"""One optimizer step and one evaluation pass, as upstream GPT-NeoX's ``train_step`` / ``evaluate``.

A step runs ``gradient_accumulation_steps`` micro-batches of forward, ``engine.backward`` and
``engine.step``; DeepSpeed scales the loss by 1/GAS, all-reduces at the accumulation boundary,
clips, steps the optimizer and the LR schedule (or skips the step on fp16 overflow). The logged
metrics are the mean over the micro-batches, then over all ranks (upstream ``reduce_losses``).
The same function runs the training loop and ``neox bench``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class StepResult:
    metrics: dict[str, float]
    """Objective metrics (``lm_loss``...), averaged over micro-batches and ranks."""
    lr: float
    """The learning rate this step applied."""
    grad_norm: float | None
    """Global gradient norm before clipping (None when the step was skipped)."""
    skipped: bool
    """fp16 overflow: DeepSpeed skipped the update (and the LR step)."""
    loss_scale: float | None


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def mean_over_ranks(values: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Average scalar tensors over every rank with one all-reduce; returns python floats."""
    if not values:
        return {}
    names = sorted(values)
    packed = torch.stack([values[k].detach().float().to(device).reshape(()) for k in names])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(packed)
        packed /= dist.get_world_size()
    return dict(zip(names, packed.tolist()))


def _grad_norm(parameters) -> float:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def _needs_own_grad_norm(ds) -> bool:
    # fp32 without ZeRO: DeepSpeed clips with torch's global norm but does not keep the value.
    return not (ds.zero_optimization() or ds.bfloat16_enabled() or ds.fp16_enabled())


def train_step(engine, data: Iterator, objective, gas: int) -> StepResult:
    ds = engine.ds
    lr = float(ds.get_lr()[0])
    sums: dict[str, torch.Tensor] = {}
    own_norm = None
    for micro in range(gas):
        batch = to_device(next(data), engine.device)
        loss, parts = objective(ds, batch)
        ds.backward(loss)
        if micro == gas - 1 and _needs_own_grad_norm(ds):
            own_norm = _grad_norm(ds.module.parameters())  # after the boundary all-reduce, before clipping
        ds.step()
        for k, v in parts.items():
            sums[k] = sums[k] + v if k in sums else v
    metrics = mean_over_ranks({k: v / gas for k, v in sums.items()}, engine.device)
    skipped = not ds.was_step_applied()
    norm = own_norm if own_norm is not None else ds.get_global_grad_norm()
    if torch.is_tensor(norm):
        norm = float(norm)
    scale = getattr(ds.optimizer, "cur_scale", None) if ds.fp16_enabled() else None
    return StepResult(
        metrics=metrics,
        lr=lr,
        grad_norm=None if skipped or norm is None or not math.isfinite(norm) else norm,
        skipped=skipped,
        loss_scale=float(scale) if scale is not None else None,
    )


@torch.no_grad()
def evaluate(engine, data: Iterator, objective, iters: int, gas: int) -> dict[str, float]:
    """Mean objective metrics over ``iters`` × ``gas`` micro-batches, averaged over ranks (upstream ``evaluate``)."""
    ds = engine.ds
    ds.eval()
    sums: dict[str, torch.Tensor] = {}
    try:
        for _ in range(iters * gas):
            _, parts = objective(ds, to_device(next(data), engine.device))
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v
    finally:
        ds.train()
    return mean_over_ranks({k: v / (iters * gas) for k, v in sums.items()}, engine.device)
