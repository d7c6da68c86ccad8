"""The pipe × data × tensor grid of a job, its process groups, and DeepSpeed's view of them.

Ranks are laid out as upstream GPT-NeoX lays them out (DeepSpeed's
``PipeModelDataParallelTopology``, axes [pipe, data, model]; facts §2.3):

    rank = pipe_rank · (data · tensor) + data_rank · tensor + tensor_rank

so a tensor-parallel group is ``tensor`` consecutive ranks (one node's GPUs when TP ≤ 4), and
checkpoint file names (``mp_rank_XX``, ``layer_LL-model_TT``) mean what they mean upstream.
:func:`build_topology` creates every group once, on every rank in the same order (a
``torch.distributed`` requirement), and makes the tensor group the one the model's layers use
(:func:`neox.parallel.set_tensor_parallel_group`).

:class:`DeepSpeedMpu` is the "model parallel unit" DeepSpeed's engine takes for tensor
parallelism without a pipeline: ZeRO partitions and gradient all-reduces run over the data group,
and the gradient norm for clipping is summed over the tensor group with replicated parameters
counted on TP rank 0 only (DeepSpeed reads ``get_model_parallel_*``,
``get_tensor_model_parallel_rank`` and ``get_data_parallel_*``; it treats an mpu with
``initialize_sequence_parallel`` as Ulysses, which this is not). With a pipeline, DeepSpeed's own
grid (built by its ``PipelineModule`` from the same topology) plays that role.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from neox.config.plan import coordinates
from neox.parallel.state import set_tensor_parallel_group


@dataclass(frozen=True)
class Topology:
    """This process's coordinates in the grid and the groups along each axis."""

    pipe: int
    data: int
    tensor: int
    rank: int
    pipe_rank: int
    data_rank: int
    tensor_rank: int
    tensor_group: dist.ProcessGroup | None = None
    """The ranks that differ only in tensor rank. Without model parallelism (pipe = tensor = 1)
    no groups are created (the data group is the whole job); otherwise every axis has a group,
    of one rank where that axis has size 1."""
    data_group: dist.ProcessGroup | None = None
    """The ranks that differ only in data rank: ZeRO partitions and gradient averaging."""
    pipe_group: dist.ProcessGroup | None = None
    """The ranks that differ only in pipeline stage."""
    model_group: dist.ProcessGroup | None = None
    """The pipe × tensor ranks of one model replica (upstream's "model parallel" group: its rank
    numbers the ``mp_rank_XX`` files of a pipeline checkpoint)."""

    @property
    def world_size(self) -> int:
        return self.pipe * self.data * self.tensor

    @property
    def model_rank(self) -> int:
        """Rank within the pipe × tensor group."""
        return self.pipe_rank * self.tensor + self.tensor_rank

    def rank_of(self, *, pipe: int, data: int, tensor: int) -> int:
        return pipe * self.data * self.tensor + data * self.tensor + tensor


def _axis_groups(pipe: int, data: int, tensor: int) -> dict[str, list[list[int]]]:
    """Every group of every axis, as lists of global ranks, in a fixed order."""
    ranks = range(pipe * data * tensor)
    coords = {r: coordinates(r, data, pipe, tensor) for r in ranks}

    def groups(varying: tuple[str, ...]) -> list[list[int]]:
        by_key: dict[tuple, list[int]] = {}
        for r in ranks:
            key = tuple(v for axis, v in coords[r].items() if axis not in varying)
            by_key.setdefault(key, []).append(r)
        return [by_key[k] for k in sorted(by_key)]

    return {
        "tensor": groups(("tensor",)),
        "data": groups(("data",)),
        "pipe": groups(("pipe",)),
        "model": groups(("pipe", "tensor")),
    }


def build_topology(*, pipe: int, data: int, tensor: int, sequence_parallel: bool = False) -> Topology:
    """Create the groups of the grid (a collective: every rank calls it) and set the TP group.

    Works without ``torch.distributed`` for a single process (all sizes 1). Data parallelism
    alone needs no groups beyond the job's own.
    """
    world = pipe * data * tensor
    rank = dist.get_rank() if dist.is_initialized() else 0
    actual = dist.get_world_size() if dist.is_initialized() else 1
    assert world == actual, f"pipe {pipe} x data {data} x tensor {tensor} = {world} but the job has {actual} ranks"
    coord = coordinates(rank, data, pipe, tensor)
    mine: dict[str, dist.ProcessGroup | None] = {}
    if pipe * tensor > 1:
        for axis, lists in _axis_groups(pipe, data, tensor).items():
            for ranks in lists:
                group = dist.new_group(ranks=ranks)
                if rank in ranks:
                    mine[axis] = group
    topo = Topology(
        pipe=pipe,
        data=data,
        tensor=tensor,
        rank=rank,
        pipe_rank=coord["pipe"],
        data_rank=coord["data"],
        tensor_rank=coord["tensor"],
        tensor_group=mine.get("tensor"),
        data_group=mine.get("data"),
        pipe_group=mine.get("pipe"),
        model_group=mine.get("model"),
    )
    set_tensor_parallel_group(topo.tensor_group if tensor > 1 else None, sequence_parallel=sequence_parallel)
    return topo


def topology_for(cfg) -> Topology:
    """:func:`build_topology` for a config's ``pipe_parallel_size``, data-parallel size and TP."""
    return build_topology(
        pipe=max(cfg.pipe_parallel_size, 1),
        data=cfg.data_parallel_size,
        tensor=cfg.model_parallel_size,
        sequence_parallel=cfg.sequence_parallel,
    )


def release_topology() -> None:
    """Forget the tensor group (the layers of models built afterwards run on one rank)."""
    set_tensor_parallel_group(None)


class DeepSpeedMpu:
    """The model-parallel unit DeepSpeed queries, for tensor parallelism without a pipeline."""

    def __init__(self, topo: Topology) -> None:
        assert topo.pipe == 1, "with a pipeline DeepSpeed uses its own grid"
        self.topo = topo

    # tensor ("model") parallelism: for pipe = 1 the model group is the tensor group
    def get_model_parallel_rank(self) -> int:
        return self.topo.tensor_rank

    def get_model_parallel_world_size(self) -> int:
        return self.topo.tensor

    def get_model_parallel_group(self):
        return self.topo.tensor_group

    def get_tensor_model_parallel_rank(self) -> int:
        return self.topo.tensor_rank

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.topo.tensor

    def get_tensor_model_parallel_group(self):
        return self.topo.tensor_group

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.topo.rank_of(pipe=0, data=self.topo.data_rank, tensor=0)

    # data parallelism
    def get_data_parallel_rank(self) -> int:
        return self.topo.data_rank

    def get_data_parallel_world_size(self) -> int:
        return self.topo.data

    def get_data_parallel_group(self):
        return self.topo.data_group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return [self.topo.rank_of(pipe=0, data=d, tensor=self.topo.tensor_rank) for d in range(self.topo.data)]

    # no pipeline
    def get_pipe_parallel_rank(self) -> int:
        return 0

    def get_pipe_parallel_world_size(self) -> int:
        return 1

