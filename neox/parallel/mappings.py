"""Autograd-aware collectives at the edges of a tensor-parallel region.

The four Megatron "mappings" (GPT-NeoX ``megatron/mpu/mappings.py``), each a pair of a forward
op and its adjoint in the backward pass:

| function | forward | backward |
|---|---|---|
| :func:`copy_to_tensor_parallel_region` | identity | all-reduce |
| :func:`reduce_from_tensor_parallel_region` | all-reduce | identity |
| :func:`scatter_to_tensor_parallel_region` | keep this rank's slice of the last dim | all-gather |
| :func:`gather_from_tensor_parallel_region` | all-gather along the last dim | keep this rank's slice |

With one TP rank every function returns its input unchanged, without an autograd node, so the
single-device path pays nothing for them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from neox.parallel.state import TensorParallel

# torch 2.13 renamed all_gather_into_tensor (kept as a deprecated alias); older torch has only that.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _group(tp: TensorParallel) -> dist.ProcessGroup:
    # Without this check a missing group would silently mean the default (world) group.
    assert tp.group is not None, f"TP world size {tp.world_size} without a process group: no collectives"
    return tp.group


def _all_reduce_copy(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    # The sum goes into a fresh buffer: the caller may still use x (a residual branch, or a
    # gradient autograd hands to several consumers), so an in-place all-reduce must not touch it.
    out = torch.clone(x, memory_format=torch.contiguous_format)
    dist.all_reduce(out, group=_group(tp))
    return out


def _split_last_dim(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    size = x.shape[-1]
    assert size % tp.world_size == 0, f"last dim {size} is not divisible by TP {tp.world_size}"
    part = size // tp.world_size
    return x[..., tp.rank * part : (tp.rank + 1) * part].contiguous()


def _gather_last_dim(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    x = x.contiguous()
    # Gathered along dim 0 (the layout every backend accepts), then viewed as [tp, ...].
    out = torch.empty((tp.world_size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    _all_gather_single(out, x, group=_group(tp))
    # [tp, ..., n] -> [..., tp, n] -> [..., tp * n]: rank r's slice lands at r * n.
    out = out.view(tp.world_size, *x.shape)
    return out.movedim(0, -2).reshape(*x.shape[:-1], tp.world_size * x.shape[-1])


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce_copy(grad, ctx.tp), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        return _all_reduce_copy(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return _split_last_dim(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last_dim(grad, ctx.tp), None


class _GatherFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return _gather_last_dim(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return _split_last_dim(grad, ctx.tp), None


def copy_to_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Enter a TP region: identity forward, all-reduce of the gradient backward."""
    return x if tp.world_size == 1 else _CopyToRegion.apply(x, tp)


def reduce_from_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Leave a TP region by summing the ranks' partial results; gradient passes through."""
    return x if tp.world_size == 1 else _ReduceFromRegion.apply(x, tp)


def scatter_to_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Keep this rank's contiguous slice of the last dimension; all-gather backward."""
    return x if tp.world_size == 1 else _ScatterToRegion.apply(x, tp)


def gather_from_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Concatenate the ranks' last-dimension slices in rank order; slice backward."""
    return x if tp.world_size == 1 else _GatherFromRegion.apply(x, tp)
