"""`convert_all slurm=true` on a real Slurm controller (tools/ci/slurm-up.sh, site profile `local`).

One job per checkpoint converts it and uploads it to the local Hub stand-in of test_upload.py
(the real Hub is unreachable here); the jobs get ``HF_TOKEN`` from the submitting environment,
and neither the job scripts, their logs nor the state files contain it. A second submission finds
every step finished and submits nothing. Skips without a controller, except under
NEOX_REQUIRE_SLURM=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_upload import HubStub, assert_token_hidden, tool  # noqa: E402

pytestmark = pytest.mark.slurm


def _controller_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20)
    return proc.returncode == 0 and "node1" in proc.stdout


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not _controller_up():
        if os.environ.get("NEOX_REQUIRE_SLURM") == "1":
            pytest.fail("NEOX_REQUIRE_SLURM=1 but no Slurm controller answers (tools/ci/slurm-up.sh)")
        pytest.skip("no Slurm controller (start one with tools/ci/slurm-up.sh)")


def in_queue(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    return bool(out)


def test_convert_all_as_slurm_jobs(tmp_path):
    from test_convert_round_trip import make_hf_dir

    from neox.checkpoint import convert

    convert.hf_to_neox(str(make_hf_dir(tmp_path / "hf", "neox")), tmp_path / "run", iteration=10, progress=False)
    shutil.copytree(tmp_path / "run" / "global_step10", tmp_path / "run" / "global_step20")
    hub = HubStub()
    try:
        env = {"NEOX_SITE": "local", "NEOX_RUNS_DIR": str(tmp_path / "runs"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        args = (f"save_dir={tmp_path / 'run'}", "hf_repo=org/run", "slurm=true", "time=00:10:00", "backoff=0.01")
        proc = tool("convert_all.py", *args, hub=hub, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        jobs = json.loads(proc.stdout.strip().splitlines()[-1])["jobs"]
        assert [j["step"] for j in jobs] == [10, 20] and all(j["job"] for j in jobs)
        deadline = time.monotonic() + 240
        while any(in_queue(j["job"]) for j in jobs):
            assert time.monotonic() < deadline, "convert jobs did not finish in 240 s"
            time.sleep(2)
        out = tmp_path / "run-hf"
        for j in jobs:
            state = json.loads((out / ".convert_all" / f"global_step{j['step']}.json").read_text())
            log = Path(j["run_dir"]) / f"slurm-{j['job']}.out"
            assert state.get("converted") and state.get("uploaded"), log.read_text()[-3000:]
            assert (out / f"global_step{j['step']}" / "model.safetensors").is_file()
        assert sorted(set(hub.branches)) == ["global_step10", "global_step20"]
        assert_token_hidden(proc, tmp_path / "runs", out)

        again = tool("convert_all.py", *args, hub=hub, cwd=tmp_path, env=env)
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        assert again.returncode == 0 and summary["jobs"] == [] and summary["skipped_finished"] == [10, 20]
    finally:
        hub.close()
