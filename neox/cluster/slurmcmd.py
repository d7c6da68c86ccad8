"""Thin wrappers around the Slurm client commands (sbatch, squeue, scontrol, scancel).

Each turns a missing command or a refusal into one :class:`NeoxError` line that quotes Slurm's
own message, so ``neox slurm ...`` never shows a traceback for a cluster problem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from neox.errors import NeoxError


def _run(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    if shutil.which(args[0]) is None:
        raise NeoxError(f"{args[0]} is not on PATH; run this on a Slurm login node (or load the slurm module)")
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise NeoxError(f"{args[0]} failed: {msg}")
    return proc.stdout


def sbatch(script: Path, *, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> str:
    """Submit ``script`` from its directory (so ``$SLURM_SUBMIT_DIR`` is the run directory); the job id."""
    out = _run(["sbatch", "--parsable", *extra, script.name], cwd=script.parent, env=env)
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise NeoxError(f"sbatch printed {out.strip()!r} instead of a job id")
    return job_id


SQUEUE_FIELDS = ("JobID", "State", "TimeUsed", "TimeLimit", "NumNodes", "Name", "WorkDir", "Reason")
_SQUEUE_FORMAT = "%i|%T|%M|%l|%D|%j|%Z|%r"


def squeue(*, user: str | None = None, jobs: Sequence[str] = ()) -> list[dict[str, str]]:
    """The user's (or the given) jobs still known to the controller."""
    args = ["squeue", "--noheader", f"--format={_SQUEUE_FORMAT}"]
    if jobs:
        args.append(f"--jobs={','.join(jobs)}")
    else:
        args.append(f"--user={user or os.environ.get('USER') or _whoami()}")
    try:
        out = _run(args)
    except NeoxError as err:
        # A finished job id is "Invalid job id specified": report it as no rows.
        if jobs and "Invalid job id" in str(err):
            return []
        raise
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= len(SQUEUE_FIELDS):
            rows.append(dict(zip(SQUEUE_FIELDS, parts)))
    return rows


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def job_state(job_id: str) -> str | None:
    """``RUNNING``/``PENDING``/... while the controller knows the job, else None."""
    rows = squeue(jobs=[job_id])
    return rows[0]["State"] if rows else None


def show_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (StdOut, WorkDir, JobState, NodeList, ...)."""
    out = _run(["scontrol", "show", "job", "--oneliner", job_id])
    fields: dict[str, str] = {}
    for token in out.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def scancel(job_id: str, *, signal: str | None = None) -> None:
    args = ["scancel"]
    if signal:
        args.append(f"--signal={signal}")
    _run([*args, job_id])
