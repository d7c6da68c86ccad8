"""``just status``, ``just logs`` and ``just cancel``: the user's jobs and their run directories.

A job is tied to its run directory by Slurm itself (the job's working directory is the run
directory, where ``sbatch`` was called) and by ``<runs dir>/.jobs/<job id>``, written at
submission, which still answers after the controller has forgotten a finished job.

Polling: ``squeue`` is asked at most every ``NEOX_POLL_SECONDS`` (default 60 s, the Isambard
usage policy); following a log reads the file, which costs the scheduler nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from neox.cluster import progress, render, slurmcmd
from neox.errors import NeoxError

FINISHED_SHOWN = 5


def poll_seconds() -> float:
    return float(os.environ.get("NEOX_POLL_SECONDS", "60"))


def run_dir_of(job_id: str, runs_dir: Path) -> Path | None:
    index = runs_dir / ".jobs" / job_id
    if index.is_file():
        return Path(index.read_text().strip())
    rows = slurmcmd.squeue(jobs=[job_id])
    if rows and (Path(rows[0]["WorkDir"]) / "run.json").is_file():
        return Path(rows[0]["WorkDir"])
    return None


def log_of(run_dir: Path, job_id: str) -> Path:
    return run_dir / f"slurm-{job_id}.out"


def read_state(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def recent_runs(runs_dir: Path, limit: int) -> list[Path]:
    runs = [p.parent for p in runs_dir.glob("*/run.json")]
    return sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)[:limit]


def status_rows(runs_dir: Path) -> list[list[str]]:
    """Live jobs from squeue, then the latest finished runs under ``runs_dir``."""
    rows = []
    live_dirs = set()
    for job in slurmcmd.squeue():
        run_dir = Path(job["WorkDir"])
        meta = render.read_meta(run_dir) if (run_dir / "run.json").is_file() else None
        name = meta["name"] if meta else job["Name"]
        if meta:
            live_dirs.add(run_dir)
            prog = progress.of_run(meta, log_of(run_dir, job["JobID"])) if meta.get("kind") == "train" else progress.Progress()
        else:
            prog = progress.Progress()
        state = job["State"] if job["State"] != "PENDING" else f"PENDING ({job['Reason']})"
        rows.append([job["JobID"], state, job["TimeUsed"], job["NumNodes"], name, *prog.cells()])
    for run_dir in recent_runs(runs_dir, FINISHED_SHOWN):
        if run_dir in live_dirs:
            continue
        meta = render.read_meta(run_dir)
        if not meta.get("jobs"):
            continue
        last = meta["jobs"][-1]["id"]
        state = read_state(run_dir).get("state", "ENDED")
        prog = progress.of_run(meta, log_of(run_dir, last)) if meta.get("kind") == "train" else progress.Progress()
        rows.append([last, state, "-", str(meta.get("nodes", "-")), meta["name"], *prog.cells()])
    return rows


HEADER = ["JOB", "STATE", "ELAPSED", "NODES", "RUN", "ITER", "LOSS", "TOK/S", "ETA"]


def print_status(runs_dir: Path) -> int:
    rows = status_rows(runs_dir)
    if not rows:
        print(f"no jobs in the queue and no runs under {runs_dir}")
        return 0
    table = [HEADER, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def latest_job(runs_dir: Path) -> str:
    for run_dir in recent_runs(runs_dir, 50):
        jobs = render.read_meta(run_dir).get("jobs")
        if jobs:
            return jobs[-1]["id"]
    raise NeoxError(f"no submitted runs under {runs_dir}; give a job id (just logs <job>)")


def follow(job_id: str, runs_dir: Path, *, follow: bool = True, out=sys.stdout) -> int:
    """Print a job's log; with ``follow``, keep printing until the job (and its chained links) end."""
    run_dir = run_dir_of(job_id, runs_dir)
    if run_dir is None:
        fields = slurmcmd.show_job(job_id)
        log = Path(fields.get("StdOut", ""))
        if not log.is_file():
            raise NeoxError(f"job {job_id}: no run directory under {runs_dir} and no log file; was it submitted from here?")
        out.write(log.read_text(errors="replace"))
        return 0
    while True:
        log = log_of(run_dir, job_id)
        pos = 0
        last_poll = 0.0
        print(f"==> {log} <==", file=out, flush=True)
        while True:
            if log.is_file():
                with log.open("r", errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                if chunk:
                    out.write(chunk)
                    out.flush()
            if not follow:
                return 0
            now = time.monotonic()
            if now - last_poll >= poll_seconds():
                last_poll = now
                if slurmcmd.job_state(job_id) is None:
                    break
            time.sleep(min(2.0, poll_seconds()))
        # Read what the job wrote after the last poll, then move on to a chained link.
        if log.is_file():
            with log.open("r", errors="replace") as f:
                f.seek(pos)
                out.write(f.read())
        state = read_state(run_dir)
        if state.get("state") == "CHAINED" and state.get("job") == job_id and state.get("next_job"):
            job_id = state["next_job"]
            continue
        print(f"==> job {job_id} ended: {state.get('state', 'see the log')}", file=out, flush=True)
        return 0


def cancel(job_id: str, runs_dir: Path) -> int:
    """Cancel a job and any chained link already queued after it."""
    to_cancel = [job_id]
    run_dir = run_dir_of(job_id, runs_dir)
    if run_dir is not None:
        ids = [j["id"] for j in render.read_meta(run_dir).get("jobs", [])]
        to_cancel += [j for j in ids if j != job_id and int(j) > int(job_id) and slurmcmd.job_state(j)]
    for j in to_cancel:
        slurmcmd.scancel(j)
    print(f"cancelled job{'s' if len(to_cancel) > 1 else ''} {', '.join(to_cancel)}")
    return 0
