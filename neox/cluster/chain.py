"""What a training job does when its step ends: finish, chain the next link, or fail.

``neox train`` exits 0 when ``train_iters`` is reached and 75 when it stopped at the time-limit
signal with a checkpoint saved. On 75 the job submits the next link of the chain, the same
``job.sbatch`` with ``--dependency=afterany:<this job>``, so it starts as soon as this one ends
and resumes from ``save/latest``. A chain stops at ``NEOX_MAX_CHAINS`` links, and also when a
link saved no newer checkpoint than the one before (a run that cannot make progress within one
walltime would otherwise loop until the cap).

Why a new job rather than ``scontrol requeue``: Slurm holds a requeued batch job for about two
minutes (``BeginTime``) and keeps no record of the previous run's end. Node-fault requeues still
happen (the job has ``--requeue``): Slurm restarts the same job, ``SLURM_RESTART_COUNT`` > 0,
and it resumes from ``latest`` like any link.

Every outcome is written to ``state.json`` in the run directory, which ``just status`` reads
once the controller has forgotten the job.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from neox.cluster import render, slurmcmd, submit

STOPPED_EARLY = 75


def latest_checkpoint(save: str | None) -> str | None:
    if not save:
        return None
    path = Path(save) / "latest"
    return path.read_text().strip() if path.is_file() else None


def write_state(run_dir: Path, **fields) -> None:
    state = {"updated": _dt.datetime.now().isoformat(timespec="seconds"), **fields}
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(run_dir / "state.json")


def after_step(run_dir: Path, status: int, *, stage: str = "train", environ: dict[str, str] | None = None) -> int:
    """Act on the training step's exit status; returns the job's own exit status."""
    env = os.environ if environ is None else environ
    meta = render.read_meta(run_dir)
    job_id = env.get("SLURM_JOB_ID", "?")
    chain = int(env.get("NEOX_CHAIN", "0") or 0)
    max_chains = int(meta.get("max_chains", 0))
    latest = latest_checkpoint(meta.get("save"))
    common = {"job": job_id, "chain": chain, "status": status, "latest": latest}

    if stage == "preflight":
        write_state(run_dir, state="FAILED", reason="preflight check failed; see the job log", **common)
        print(f"neox: job {job_id}: the preflight check failed (exit {status}); nothing was trained")
        return status or 1
    if status == 0:
        write_state(run_dir, state="COMPLETED", **common)
        print(f"neox: job {job_id}: training finished (checkpoint {latest or 'none'})")
        return 0
    if status != STOPPED_EARLY:
        write_state(run_dir, state="FAILED", reason=f"neox train exited with status {status}", **common)
        print(f"neox: job {job_id}: neox train failed with exit status {status}; see {run_dir}/slurm-{job_id}.out")
        return status
    # Stopped at the time-limit signal with a checkpoint: chain the next link.
    previous = meta.get("last_latest")
    if latest is None or latest == previous:
        write_state(run_dir, state="STOPPED", reason="no new checkpoint in this link", **common)
        print(
            f"neox: job {job_id}: stopped at the time limit without a newer checkpoint than {previous or 'none'}; "
            "not chaining (raise time= or lower the checkpoint cost)"
        )
        return STOPPED_EARLY
    if chain >= max_chains:
        write_state(run_dir, state="STOPPED", reason=f"reached NEOX_MAX_CHAINS={max_chains}", **common)
        print(
            f"neox: job {job_id}: stopped at the time limit after {chain} chained link(s), the maximum; resume with "
            f"`just train {run_dir}/config.yml nodes={meta['nodes']}` or raise NEOX_MAX_CHAINS"
        )
        return STOPPED_EARLY
    meta["last_latest"] = latest
    render.write_meta(run_dir, meta)
    next_id = slurmcmd.sbatch(
        run_dir / "job.sbatch",
        extra=[f"--dependency=afterany:{job_id}", "--kill-on-invalid-dep=yes", f"--export=ALL,NEOX_CHAIN={chain + 1}"],
    )
    submit.record_job(run_dir, next_id, chain=chain + 1)
    write_state(run_dir, state="CHAINED", next_job=next_id, **common)
    print(f"neox: job {job_id}: checkpoint {latest} saved at the time limit; chained job {next_id} (link {chain + 1})")
    return 0
