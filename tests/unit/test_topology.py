"""The pipe x data x tensor grid: upstream's rank order, DeepSpeed's view, and the single-process case.

Run: pytest -q tests/unit/test_topology.py
"""

from __future__ import annotations

import itertools

import pytest
from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

from neox.config.plan import coordinates
from neox.parallel import tensor_parallel
from neox.parallel.topology import DeepSpeedMpu, Topology, _axis_groups, build_topology

SHAPES = [(1, 4, 1), (1, 1, 4), (2, 2, 2), (4, 1, 2), (2, 3, 2)]


@pytest.mark.parametrize("pipe,data,tensor", SHAPES)
def test_groups_match_deepspeeds_pipe_model_data_topology(pipe, data, tensor):
    """Upstream builds PipeModelDataParallelTopology(pp, mp, dp): axes [pipe, data, model], model fastest."""
    ds = PipeModelDataParallelTopology(num_pp=pipe, num_mp=tensor, num_dp=data)
    ours = _axis_groups(pipe, data, tensor)
    assert sorted(ours["tensor"]) == sorted(ds.get_axis_comm_lists("model"))
    assert sorted(ours["data"]) == sorted(ds.get_axis_comm_lists("data"))
    assert sorted(ours["pipe"]) == sorted(ds.get_axis_comm_lists("pipe"))
    for rank in range(pipe * data * tensor):
        c = ds.get_coord(rank)
        assert coordinates(rank, data, pipe, tensor) == {"pipe": c.pipe, "data": c.data, "tensor": c.model}


@pytest.mark.parametrize("pipe,data,tensor", SHAPES)
def test_model_rank_numbers_mp_rank_files_as_deepspeeds_grid(pipe, data, tensor):
    """mp_rank_XX of a pipeline checkpoint is the rank within the pipe x tensor group (20B: PP 4 x TP 2 = 00..07)."""
    ds = PipeModelDataParallelTopology(num_pp=pipe, num_mp=tensor, num_dp=data)
    groups = _axis_groups(pipe, data, tensor)
    for rank in range(pipe * data * tensor):
        c = coordinates(rank, data, pipe, tensor)
        topo = Topology(pipe, data, tensor, rank, c["pipe"], c["data"], c["tensor"])
        grid_ranks = sorted(ds.get_axis_list(axis="data", idx=c["data"]))  # what DeepSpeed's grid numbers
        assert topo.model_rank == grid_ranks.index(rank)
        assert [rank in g for g in groups["model"]].count(True) == 1
        assert topo.rank_of(pipe=c["pipe"], data=c["data"], tensor=c["tensor"]) == rank


def test_twenty_b_layout_has_eight_model_ranks():
    pipe, data, tensor = 4, 2, 2
    ranks = {Topology(pipe, data, tensor, r, **_coords(r, pipe, data, tensor)).model_rank
             for r in range(pipe * data * tensor)}
    assert ranks == set(range(8))


def _coords(rank, pipe, data, tensor):
    c = coordinates(rank, data, pipe, tensor)
    return {"pipe_rank": c["pipe"], "data_rank": c["data"], "tensor_rank": c["tensor"]}


def test_single_process_topology_has_no_groups_and_one_tp_rank():
    topo = build_topology(pipe=1, data=1, tensor=1, sequence_parallel=True)
    assert (topo.world_size, topo.model_rank, topo.tensor_group, topo.data_group) == (1, 0, None, None)
    tp = tensor_parallel()
    assert (tp.world_size, tp.group, tp.sequence_parallel) == (1, None, False)  # SP means nothing at TP 1


def test_build_topology_refuses_a_grid_that_is_not_the_job():
    with pytest.raises(AssertionError, match="pipe 1 x data 2 x tensor 1 = 2 but the job has 1"):
        build_topology(pipe=1, data=2, tensor=1)


def test_deepspeed_mpu_reports_tensor_and_data_coordinates():
    for rank, (data, tensor) in itertools.product(range(4), [(2, 2)]):
        c = coordinates(rank, data, 1, tensor)
        mpu = DeepSpeedMpu(Topology(1, data, tensor, rank, 0, c["data"], c["tensor"]))
        assert mpu.get_model_parallel_rank() == mpu.get_tensor_model_parallel_rank() == rank % 2
        assert mpu.get_model_parallel_world_size() == mpu.get_tensor_model_parallel_world_size() == 2
        assert mpu.get_data_parallel_rank() == rank // 2 and mpu.get_data_parallel_world_size() == 2
        assert mpu.get_data_parallel_group_ranks() == [rank % 2, rank % 2 + 2]
        assert mpu.get_tensor_model_parallel_src_rank() == rank - rank % 2
        assert mpu.get_pipe_parallel_world_size() == 1
    # DeepSpeed treats an mpu with this method as Ulysses sequence parallelism, which it is not.
    assert not hasattr(mpu, "initialize_sequence_parallel")
    with pytest.raises(AssertionError, match="own grid"):
        DeepSpeedMpu(Topology(2, 1, 1, 0, 0, 0, 0))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["zero_optimization.stage=3", "model_parallel_size=2"],
         "zero_optimization.stage 3 needs pipe_parallel_size <= 1 and model_parallel_size 1 (got pipe 1, tensor 2): "
         "ZeRO 2/3 are not combined with tensor parallelism"),
        (["model_parallel_size=2", "sequence_parallel=true", "seq_length=63"],
         "sequence_parallel splits the sequence over the 2 tensor-parallel ranks but seq_length 63 is not divisible by 2"),
        (["model_parallel_size=3"], "model_parallel_size 3 must divide num_attention_heads 4"),
    ],
)
def test_tensor_parallel_combinations_are_refused_in_one_line(overrides, message):
    from pathlib import Path

    import neox.config
    from neox.errors import ConfigError

    tiny = str(Path(__file__).resolve().parents[2] / "configs/neox-tiny.yml")
    with pytest.raises(ConfigError) as err:
        neox.config.load([tiny], overrides, world_size=6)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_supported_layouts_pass_config_check():
    from pathlib import Path

    import neox.config

    tiny = str(Path(__file__).resolve().parents[2] / "configs/neox-tiny.yml")
    cfg = neox.config.load([tiny], ["model_parallel_size=2", "pipe_parallel_size=2", "sequence_parallel=true",
                                    "zero_optimization.stage=1"], world_size=8)
    assert (cfg.data_parallel_size, cfg.padded_vocab_size % 2) == (2, 0)
    # sequence_parallel at TP 1 is accepted and means nothing, as upstream
    assert neox.config.load([tiny], ["sequence_parallel=true"], world_size=1).sequence_parallel
