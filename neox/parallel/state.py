"""Which tensor-parallel group this process belongs to.

The model's tensor-parallel layers need four facts: the process group their collectives run
over, their rank in it, its size, and whether activations between TP regions are sharded along
the sequence (Megatron's sequence parallelism, :mod:`neox.parallel.sequence`). They read them
once, when they are built, from the :class:`TensorParallel` returned by :func:`tensor_parallel`.
Until the training loop sets a group with :func:`set_tensor_parallel_group` (from the
data × pipe × tensor topology of :mod:`neox.parallel.topology`), the answer is a single process
with no group, so every collective is the identity. That is the state of a CPU test, the laptop demo and any
data-parallel-only run, whether or not ``torch.distributed`` is initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class TensorParallel:
    """A tensor-parallel group as the layers see it."""

    group: dist.ProcessGroup | None
    """The process group of the TP ranks. None for a single rank, or for building one rank's
    shard offline (shapes and sharding only: the collectives refuse to run without a group)."""
    rank: int
    """This process's rank within the group (0 ... world_size - 1)."""
    world_size: int
    """Number of TP ranks (upstream ``model_parallel_size``)."""
    sequence_parallel: bool = False
    """Activations outside the TP regions are split along the sequence over the ranks
    (upstream ``sequence_parallel``); always False for a single rank, where it means nothing."""

    def __post_init__(self) -> None:
        assert self.world_size >= 1 and 0 <= self.rank < self.world_size, self
        assert not (self.sequence_parallel and self.world_size == 1), "sequence parallelism needs TP > 1"


SINGLE = TensorParallel(group=None, rank=0, world_size=1)

# The group the launcher chose. One object, set once per process before the model is built;
# layers keep the value they saw, so changing it later does not change a built model.
_current: TensorParallel = SINGLE


def tensor_parallel() -> TensorParallel:
    """The tensor-parallel group new layers join (a single rank unless one was set)."""
    return _current


def set_tensor_parallel_group(
    group: dist.ProcessGroup | None, *, sequence_parallel: bool = False
) -> TensorParallel:
    """Make ``group`` the tensor-parallel group of layers built from now on.

    ``None`` resets to a single rank. ``sequence_parallel`` takes effect only with more than one
    rank (upstream: "has an effect only when TP > 1"). Returns the new state.
    """
    global _current
    if group is None:
        _current = SINGLE
    else:
        size = dist.get_world_size(group)
        _current = TensorParallel(
            group=group, rank=dist.get_rank(group), world_size=size, sequence_parallel=sequence_parallel and size > 1
        )
    return _current
