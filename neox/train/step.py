"""One optimizer step and one evaluation pass, as upstream GPT-NeoX's ``train_step`` / ``evaluate``.

A step runs ``gradient_accumulation_steps`` micro-batches of forward, ``engine.backward`` and
``engine.step``; DeepSpeed scales the loss by 1/GAS, all-reduces at the accumulation boundary,
clips, steps the optimizer and the LR schedule (or skips the step on fp16 overflow). The logged
metrics are the mean over the micro-batches, then over all ranks (upstream ``reduce_losses``).
The same function runs the training loop and ``neox bench``.

Under pipeline parallelism DeepSpeed's ``train_batch`` runs the whole 1F1B schedule over the
``gradient_accumulation_steps`` micro-batches (upstream's pipeline ``train_step``): it pulls
them through :class:`PipelineBatches`, which turns loader batches into the objective's
``(inputs, targets)``, and returns the mean loss, already averaged over data-parallel ranks and
sent to every stage.
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


def _needs_own_grad_norm(ds) -> bool:
    # fp32 without ZeRO: DeepSpeed clips with torch's global norm but does not keep the value.
    return not (ds.zero_optimization() or ds.bfloat16_enabled() or ds.fp16_enabled())


class PipelineBatches:
    """Loader batches as the pipeline engine wants them: ``(inputs, targets)`` per micro-batch."""

    def __init__(self, data: Iterator, objective, device: torch.device) -> None:
        self.data, self.objective, self.device = data, objective, device

    def __iter__(self):
        return self

    def __next__(self):
        return self.objective.pipeline_batch(to_device(next(self.data), self.device))


def _pipeline_step(engine, data: Iterator, objective) -> dict[str, torch.Tensor]:
    loss = engine.ds.train_batch(PipelineBatches(data, objective, engine.device))
    return {"lm_loss": loss.detach()}


def train_step(engine, data: Iterator, objective, gas: int) -> StepResult:
    from neox.parallel.grad_norm import grad_norm

    ds = engine.ds
    lr = float(ds.get_lr()[0])
    sums: dict[str, torch.Tensor] = {}
    own_norm = None
    if engine.pipeline:
        sums = {k: v * gas for k, v in _pipeline_step(engine, data, objective).items()}
    for micro in range(0 if engine.pipeline else gas):
        batch = to_device(next(data), engine.device)
        loss, parts = objective(ds, batch)
        ds.backward(loss)
        if micro == gas - 1 and _needs_own_grad_norm(ds):
            # after the boundary all-reduce, before clipping
            own_norm = grad_norm(ds.module.parameters(), engine.topo)
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
    if engine.pipeline:  # eval_batch runs gas micro-batches through the stages and averages their loss
        batches = PipelineBatches(data, objective, engine.device)
        total = sum(ds.eval_batch(batches).detach().float() for _ in range(iters))
        ds.train()
        return mean_over_ranks({"lm_loss": total / iters}, engine.device)
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
