"""Rank discovery: torchrun/explicit env first, then Slurm, then a single process."""

from __future__ import annotations

import pytest

from neox.errors import NeoxError
from neox.launch.env import discover, expand_nodelist


@pytest.mark.parametrize(
    "nodelist,hosts",
    [
        ("node01", ["node01"]),
        ("node[01-03,07],other", ["node01", "node02", "node03", "node07", "other"]),
        ("nid[001098-001100]", ["nid001098", "nid001099", "nid001100"]),
        ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
        ("x1,y[9-10]", ["x1", "y9", "y10"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_bad_nodelist_is_one_clear_error():
    with pytest.raises(NeoxError, match="unclosed"):
        expand_nodelist("node[01-03")
    with pytest.raises(NeoxError, match="bad range 'a-b'"):
        expand_nodelist("node[a-b]")


def test_torchrun_env_wins_over_slurm():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]"}
    d = discover(env)
    assert (d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port, d.source) == (3, 8, 1, "h0", 1234, "env")


def test_slurm_master_is_first_host_and_port_from_job_id():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[07-08],login", "SLURM_JOB_ID": "123456"}
    d = discover(env)
    assert (d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port, d.source) == (
        5, 8, 1, "gpu07", 29500 + 456, "slurm")
    assert d.exported()["MASTER_ADDR"] == "gpu07"
    assert discover({**env, "MASTER_PORT": "40000"}).master_port == 40000


def test_single_process_and_errors():
    d = discover({})
    assert (d.rank, d.world_size, d.source) == (0, 1, "single") and not d.is_distributed
    with pytest.raises(NeoxError, match="MASTER_ADDR is not"):
        discover({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(NeoxError, match="RANK='x' is not an integer"):
        discover({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(NeoxError, match="inconsistent"):
        discover({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
