"""The cluster tier: `just` recipes against a real Slurm controller and two slurmd on this machine
(tools/ci/slurm-up.sh, started by .ci/run), with the real `neox train` on the CPU over gloo.

- `just train <tiny cfg> nodes=2` (site profile `local`) runs one rank on each node to completion
  and saves a checkpoint; `just status` and `just logs` show the job; requeued as after a node
  fault, the same job resumes from `latest`.
- A second run gets Slurm's time-limit signal early (its limit is shortened while it trains, so
  the `--signal=USR1@lead` warning fires within one of slurmctld's 30 s checks), checkpoints,
  chains the next job and finishes from `latest`.
- The container path runs the same job through a stand-in `apptainer` (tests/slurm/apptainer)
  that checks its arguments and runs the inner command: the real binary cannot be installed here.
- `just tunnel` with a stand-in `code` CLI, `just run -- cmd` and `just nccl-test` (gloo).

Without a reachable controller these tests skip, except under NEOX_REQUIRE_SLURM=1 (CI), where
they fail.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests" / "slurm"

pytestmark = pytest.mark.slurm


def _controller_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20)
    return proc.returncode == 0 and "node1" in proc.stdout and "node2" in proc.stdout


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not _controller_up():
        if os.environ.get("NEOX_REQUIRE_SLURM") == "1":
            pytest.fail("NEOX_REQUIRE_SLURM=1 but no Slurm controller with node1/node2 answers (tools/ci/slurm-up.sh)")
        pytest.skip("no Slurm controller with node1 and node2 (start one with tools/ci/slurm-up.sh)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A few hundred documents of English text (CPython's argparse source), tokenized with neox-tiny."""
    import argparse as stdlib_argparse

    from neox.data.indexed import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs" / "tokenizers" / "neox-tiny.json"))
    text = Path(stdlib_argparse.__file__).read_text()
    docs = [d for d in text.split("\n\n") if len(d) > 200]
    prefix = tmp_path_factory.mktemp("data") / "text_document"
    with IndexedDatasetBuilder(prefix, dtype=np.uint16) as b:
        for d in docs:
            b.add_item(list(tok.encode(d)) + [tok.eod])
            b.end_document()
    return prefix


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "NEOX_RUNS_DIR": str(tmp_path / "runs"),
        "NEOX_POLL_SECONDS": "2",
        "NEOX_SITE": "local",
    }


def just(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    just_bin = shutil.which("just", path=env["PATH"])
    assert just_bin, "just is not installed (rust-just)"
    return subprocess.run([just_bin, "--justfile", str(REPO / "justfile"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def submitted(proc: subprocess.CompletedProcess) -> tuple[str, Path]:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    run_dir = Path(re.search(r"run directory: (\S+)", proc.stdout).group(1))
    return job, run_dir


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def state(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def in_queue(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    return bool(out)


def log(run_dir: Path, job: str) -> str:
    path = run_dir / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.is_file() else ""


def tiny(data: Path, iters: int, *extra: str) -> list[str]:
    return ["configs/neox-tiny.yml", f"data_path={data}", f"train_iters={iters}", "log_interval=2",
            "eval_interval=1000", "eval_iters=0", *extra]


def test_two_nodes_train_to_completion_with_a_checkpoint(env, data):
    job, run_dir = submitted(just(env, "train", *tiny(data, 6, "checkpoint_factor=1000"), "nodes=2", "time=5"))
    status = just(env, "status")
    assert status.returncode == 0 and re.search(rf"^{job}\s+(PENDING|RUNNING|COMPLETED)", status.stdout, re.M), status.stdout
    wait_for(lambda: state(run_dir).get("state"), 240, f"job {job} to finish")
    text = log(run_dir, job)
    assert state(run_dir)["state"] == "COMPLETED", text[-3000:]
    assert "rank discovery slurm: 2 process(es)" in text
    assert f"job {job} link 0 restart 0 on node[1-2]" in text
    assert re.search(r"iter 6/6 \| lm_loss \d", text)
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "global_step6"
    assert (run_dir / "checkpoints" / "global_step6").is_dir()
    # After the controller has let the job go, status still knows it from the run directory.
    status = just(env, "status")
    assert re.search(rf"^{job}\s+COMPLETED\s+-\s+2\s+neox-tiny\s+6/6\s+\d+\.\d{{4}}", status.stdout, re.M), status.stdout
    logs = just(env, "logs", job)
    assert logs.returncode == 0 and "iter 6/6" in logs.stdout and "ended: COMPLETED" in logs.stdout
    # A node fault makes Slurm requeue the job (same id, SLURM_RESTART_COUNT=1); `scontrol requeue`
    # does the same, and StartTime=now skips the hold Slurm puts on requeued jobs. It resumes from
    # `latest` (load defaults to save), finds train_iters reached and finishes again.
    first_state = state(run_dir)
    subprocess.run(["scontrol", "requeue", job], check=True)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_for(lambda: state(run_dir) != first_state and state(run_dir).get("state"), 240, "the requeued job")
    text = log(run_dir, job)
    assert state(run_dir)["state"] == "COMPLETED", text[-3000:]
    assert f"job {job} link 0 restart 1 on node[1-2]" in text
    assert "neox: resuming at iteration 6" in text


@pytest.mark.slow
def test_time_limit_signal_checkpoints_chains_and_finishes(env, data):
    env = {**env, "NEOX_SIGNAL_LEAD": "60"}
    iters = 100
    job, run_dir = submitted(just(env, "train", *tiny(data, iters, "checkpoint_factor=1000"), "nodes=2", "time=10"))
    assert "#SBATCH --signal=USR1@60" in (run_dir / "job.sbatch").read_text()
    wait_for(lambda: re.search(r"iter +\d+/100", log(run_dir, job)), 180, "the first training line")
    # Shorten the limit while it trains. slurmctld signals when now + lead (60 s) + its 30 s check
    # period reaches the end, so with end = start + elapsed rounded up to minutes + 1 minute the
    # warning goes out at its next check, at least 30 s before the new limit would kill the job.
    used = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True).stdout.strip()
    minutes = math.ceil(sum(int(x) * 60**i for i, x in enumerate(reversed(used.split(":")))) / 60)
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes + 1}"], check=True)
    status = just(env, "status")
    assert re.search(rf"^{job}\s+RUNNING\s+\S+\s+2\s+neox-tiny\s+\d+/100", status.stdout, re.M), status.stdout
    first = wait_for(lambda: state(run_dir).get("state"), 150, "the signal and the chained job")
    text0 = log(run_dir, job)
    assert first == "CHAINED", text0[-3000:]
    stopped_at = state(run_dir)["latest"]
    assert re.fullmatch(r"global_step\d+", stopped_at) and int(stopped_at[11:]) < iters
    next_job = state(run_dir)["next_job"]
    meta = json.loads((run_dir / "run.json").read_text())
    assert [(j["id"], j["chain"]) for j in meta["jobs"]] == [(job, 0), (next_job, 1)]
    wait_for(lambda: state(run_dir).get("job") == next_job and state(run_dir).get("state"), 300, "the chained job")
    text1 = log(run_dir, next_job)
    assert state(run_dir)["state"] == "COMPLETED", text1[-3000:]
    assert f"job {next_job} link 1 restart 0" in text1
    resumed = re.search(r"training iterations (\d+) -> 100", text1)
    assert resumed and int(resumed.group(1)) == int(stopped_at[11:]), text1[-2000:]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"global_step{iters}"


def test_container_path_through_a_stand_in_apptainer(env, data, tmp_path):
    """The stand-in replaces `apptainer` (not installable here): it validates every argument the
    job passes and runs the inner command, so the rendered container line, the preflight and the
    ranks all run for real."""
    sif = tmp_path / "neox.sif"
    sif.write_bytes(b"stand-in image")
    calls = tmp_path / "apptainer-calls.jsonl"
    env = {**env, "PATH": f"{STANDINS}:{env['PATH']}", "NEOX_SIF": str(sif), "NEOX_STANDIN_LOG": str(calls),
           "NEOX_TEST_BIND": str(tmp_path)}
    profile = str(STANDINS / "container.env")
    job, run_dir = submitted(just(env, "train", *tiny(data, 4, "checkpoint_factor=1000"), "nodes=2", "time=5",
                                  f"profile={profile}"))
    wait_for(lambda: state(run_dir).get("state"), 240, f"job {job} to finish")
    text = log(run_dir, job)
    assert state(run_dir)["state"] == "COMPLETED", text[-3000:]
    assert "preflight: network plugin: none configured" in text
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [r["command"][:3] for r in records] == [
        ["neox", "cluster", "preflight"], ["neox", "train", f"{run_dir}/config.yml"], ["neox", "train", f"{run_dir}/config.yml"]
    ]
    for r in records:
        assert r["image"] == str(sif) and r["binds"] == [str(tmp_path)] and r["nv"] is False
        assert r["env"] == {"NEOX_NCCL_MODE": "image", "PYTHONNOUSERSITE": "1"}


def test_tunnel_prints_the_device_code_and_url(env, tmp_path):
    vscode = tmp_path / "vscode"
    (vscode / os.uname().machine).mkdir(parents=True)
    shutil.copy(STANDINS / "code", vscode / os.uname().machine / "code")
    env = {**env, "NEOX_VSCODE_DIR": str(vscode)}
    proc = just(env, "tunnel", "name=CI_Tunnel", "time=5", timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    job = re.search(r"submitted tunnel job (\d+) \(ci-tunnel\)", proc.stdout).group(1)
    try:
        assert "log into https://github.com/login/device and use code 4F2A-9C1D" in proc.stdout
        assert "open: https://vscode.dev/tunnel/ci-tunnel/home" in proc.stdout
        assert f"just cancel {job}" in proc.stdout
        assert in_queue(job)
    finally:
        cancel = just(env, "cancel", job)
    assert cancel.returncode == 0 and f"cancelled job {job}" in cancel.stdout
    wait_for(lambda: not in_queue(job), 60, "the tunnel job to go")


def test_run_a_command_and_the_allreduce_test(env):
    proc = just(env, "run", "nodes=2", "--", "hostname")
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    logs = just(env, "logs", job, timeout=120)
    assert logs.returncode == 0 and logs.stdout.count(os.uname().nodename) == 2, logs.stdout
    test = just(env, "nccl-test", "nodes=2", "time=5", timeout=240)
    assert test.returncode == 0, test.stderr
    assert "all-reduce over 2 rank(s) on 2 node(s), backend gloo" in test.stdout
    assert re.search(r"verdict: [\d.]+ GB/s: gloo on CPU", test.stdout), test.stdout
