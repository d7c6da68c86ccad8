"""Megatron-style sequence parallelism: activations outside the TP regions split along the sequence.

Without it, every TP rank holds the whole ``[b, s, h]`` activation between the tensor-parallel
regions (the norms, dropout and residual adds), so that memory does not shrink with TP. With
``sequence_parallel`` (upstream key; Korthikanti et al. 2022) each rank keeps ``s / tp``
positions there, and the region edges change collective:

| edge | without | with sequence parallelism |
|---|---|---|
| enter a region (column-parallel input, the LM head) | identity; all-reduce backward | all-gather the sequence; reduce-scatter backward |
| leave a region (row-parallel output, embedding) | all-reduce; identity backward | reduce-scatter the sequence; all-gather backward |

The communication volume is the same (an all-reduce is a reduce-scatter plus an all-gather).
Activations are ``[b, s, h]``, so the sequence is dim 1 (Megatron uses ``[s, b, h]`` and dim 0):
each collective moves the rank slices into place with one copy, except for micro batch 1.

A column-parallel linear fed by the gathered sequence keeps only the rank's shard for its backward
pass and gathers it again there (:func:`sequence_parallel_linear`, as Megatron does), so the
whole-sequence input of the QKV and MLP projections is never held between forward and backward.

Parameters that act on sequence shards while being replicated over TP (the norms, the row-parallel
biases added after the reduce-scatter, learned position embeddings) see only their rank's
positions, so their gradients are partial; :func:`sum_gradients_over_tensor_parallel` makes each
such parameter all-reduce its gradient over the TP group as autograd produces it (Megatron sums them
after the backward pass; doing it in autograd keeps it independent of DeepSpeed's engine and
pipeline schedule). Dropout on sequence shards must differ between ranks, so it runs under the
model-parallel RNG (:mod:`neox.parallel.random`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from neox.parallel.mappings import (
    _all_gather_single,
    _all_reduce_copy,
    _group,
    copy_to_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
)
from neox.parallel.state import TensorParallel

SEQUENCE_DIM = 1
# torch 2.13 renamed reduce_scatter_tensor (kept as a deprecated alias); older torch has only that.
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _chunk(size: int, tp: TensorParallel) -> int:
    assert size % tp.world_size == 0, f"sequence length {size} is not divisible by TP {tp.world_size}"
    return size // tp.world_size


def _split_sequence(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    part = _chunk(x.shape[SEQUENCE_DIM], tp)
    return x.narrow(SEQUENCE_DIM, tp.rank * part, part).contiguous()


def _gather_sequence(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    b, part = x.shape[0], x.shape[SEQUENCE_DIM]
    out = torch.empty((tp.world_size * b, *x.shape[1:]), dtype=x.dtype, device=x.device)
    _all_gather_single(out, x.contiguous(), group=_group(tp))
    # [tp·b, c, ...] -> [tp, b, c, ...] -> [b, tp, c, ...] -> [b, tp·c, ...]: rank r's slice at r·c.
    out = out.view(tp.world_size, *x.shape).movedim(0, 1)
    return out.reshape(b, tp.world_size * part, *x.shape[2:])


def _reduce_scatter_sequence(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    b, s = x.shape[0], x.shape[SEQUENCE_DIM]
    part = _chunk(s, tp)
    # [b, s, ...] -> [tp, b, c, ...] contiguous, so rank r's block is the r-th slab of dim 0.
    slabs = x.reshape(b, tp.world_size, part, *x.shape[2:]).movedim(1, 0).contiguous()
    out = torch.empty((b, part, *x.shape[2:]), dtype=x.dtype, device=x.device)
    _reduce_scatter_single(out, slabs.view(tp.world_size * b, part, *x.shape[2:]), group=_group(tp))
    return out


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return _gather_sequence(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter_sequence(grad, ctx.tp), None


class _ReduceScatterSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return _reduce_scatter_sequence(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return _gather_sequence(grad, ctx.tp), None


class _ScatterSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tp):
        ctx.tp = tp
        return _split_sequence(x, tp)

    @staticmethod
    def backward(ctx, grad):
        return _gather_sequence(grad, ctx.tp), None


class _SequenceParallelLinear(torch.autograd.Function):
    """``linear(gather(x_shard), W, b)`` that saves ``x_shard`` and re-gathers it for the backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, tp):
        ctx.tp, ctx.has_bias = tp, bias is not None
        ctx.save_for_backward(x, weight)
        return torch.nn.functional.linear(_gather_sequence(x, tp), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        tp = ctx.tp
        grad_x = _reduce_scatter_sequence(grad.matmul(weight), tp) if ctx.needs_input_grad[0] else None
        grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            full = _gather_sequence(x, tp)
            grad_w = grad.reshape(-1, grad.shape[-1]).t().matmul(full.reshape(-1, full.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b, None


def sequence_parallel_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tp: TensorParallel
) -> torch.Tensor:
    """The column-parallel product on the gathered sequence: ``[b, s/tp, in]`` -> ``[b, s, out/tp]``."""
    return _SequenceParallelLinear.apply(x, weight, bias, tp)


def gather_from_sequence_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """``[b, s/tp, ...]`` shards -> the whole ``[b, s, ...]`` on every rank; reduce-scatter backward."""
    return x if tp.world_size == 1 else _GatherSequence.apply(x, tp)


def reduce_scatter_to_sequence_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Sum the ranks' partial ``[b, s, ...]`` and keep this rank's ``s/tp`` positions; all-gather backward."""
    return x if tp.world_size == 1 else _ReduceScatterSequence.apply(x, tp)


def scatter_to_sequence_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Keep this rank's positions of a replicated ``[b, s, ...]``; all-gather backward."""
    return x if tp.world_size == 1 else _ScatterSequence.apply(x, tp)


def enter_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """The input of a TP region: as is (gradient all-reduced), or the gathered sequence under SP."""
    if tp.sequence_parallel:
        return gather_from_sequence_parallel_region(x, tp)
    return copy_to_tensor_parallel_region(x, tp)


def leave_tensor_parallel_region(x: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Sum the ranks' partial outputs: all-reduce, or reduce-scatter along the sequence under SP."""
    if tp.sequence_parallel:
        return reduce_scatter_to_sequence_parallel_region(x, tp)
    return reduce_from_tensor_parallel_region(x, tp)


def local_positions(seq_len: int, tp: TensorParallel, device=None) -> torch.Tensor:
    """The sequence positions this rank holds outside the TP regions (all of them without SP)."""
    positions = torch.arange(seq_len, device=device)
    if not tp.sequence_parallel:
        return positions
    part = _chunk(seq_len, tp)
    return positions[tp.rank * part : (tp.rank + 1) * part]


def sum_gradients_over_tensor_parallel(params: list[nn.Parameter], tp: TensorParallel) -> None:
    """Make each of ``params`` all-reduce its gradient over the TP group as autograd computes it.

    For parameters replicated over TP that see only this rank's sequence shard. The hook runs
    once per backward pass per parameter (autograd sums the uses of a leaf before its hook), on
    every rank in the same order, so the collectives match.
    """
    if not tp.sequence_parallel:
        return
    for p in params:
        if getattr(p, "sequence_parallel", False):
            continue  # already hooked (a module shared by two layers, e.g. the tied embedding)
        p.sequence_parallel = True
        p.register_hook(lambda grad, tp=tp: _all_reduce_copy(grad, tp))
