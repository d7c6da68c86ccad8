"""The local launcher's exit-status rules and child environment."""

from __future__ import annotations

import subprocess
import sys

from neox.launch.local import _wait, child_env, free_port


def _procs(*codes: int, sleep: float = 0.0):
    return [subprocess.Popen([sys.executable, "-c", f"import time, sys; time.sleep({sleep}); sys.exit({c})"])
            for c in codes]


def test_all_zero_is_zero_and_stopped_is_75():
    assert _wait(_procs(0, 0)) == 0
    assert _wait(_procs(75, 0)) == 75
    assert _wait(_procs(75, 75)) == 75


def test_a_failing_rank_fails_the_job_and_stops_the_others():
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert _wait([*_procs(3), slow]) == 3
    assert slow.returncode is not None and slow.returncode != 0


def test_child_env():
    env = child_env(1, 2, 12345, {"SLURM_PROCID": "7", "PATH": "/bin"})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"]) == (
        "1", "1", "2", "127.0.0.1", "12345")
    assert "SLURM_PROCID" not in env and int(env["OMP_NUM_THREADS"]) >= 1
    assert 1024 < free_port() < 65536
