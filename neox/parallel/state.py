"""Which tensor-parallel group this process belongs to.

The model's tensor-parallel layers need three facts: the process group their collectives run
over, their rank in it and its size. They read them once, when they are built, from the
:class:`TensorParallel` returned by :func:`tensor_parallel`. Until the launcher sets a group
with :func:`set_tensor_parallel_group` (the "tensor, sequence and pipeline parallelism" issue
builds the data × pipe × tensor topology), the answer is a single process with no group, so
every collective is the identity. That is the state of a CPU test, the laptop demo and any
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

    def __post_init__(self) -> None:
        assert self.world_size >= 1 and 0 <= self.rank < self.world_size, self


SINGLE = TensorParallel(group=None, rank=0, world_size=1)

# The group the launcher chose. One object, set once per process before the model is built;
# layers keep the value they saw, so changing it later does not change a built model.
_current: TensorParallel = SINGLE


def tensor_parallel() -> TensorParallel:
    """The tensor-parallel group new layers join (a single rank unless one was set)."""
    return _current


def set_tensor_parallel_group(group: dist.ProcessGroup | None) -> TensorParallel:
    """Make ``group`` the tensor-parallel group of layers built from now on.

    ``None`` resets to a single rank. Returns the new state.
    """
    global _current
    if group is None:
        _current = SINGLE
    else:
        _current = TensorParallel(
            group=group, rank=dist.get_rank(group), world_size=dist.get_world_size(group)
        )
    return _current
