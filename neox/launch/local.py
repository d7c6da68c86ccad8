"""Run N ranks of a command on this machine, without ssh: ``neox train --nproc N``.

Each child is a fresh ``python -m neox.cli.main <args>`` with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT`` set, which
:func:`neox.launch.env.discover` then reads. On a CPU-only machine each child gets an equal share
of the cores (``OMP_NUM_THREADS``) unless the user set it.

SIGTERM/SIGUSR1/SIGINT sent to the launcher are passed on to every child, so ``neox train
--nproc N`` stops early and saves like a single process. If a child fails, the others are
terminated. The exit status is 0 if all children exit 0, 75 if all exit 0 or 75 (stopped early
after a checkpoint), else the first failure's status.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from neox.train.preempt import EXIT_STOPPED

FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(rank: int, nproc: int, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for var in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        env.pop(var, None)  # the children's ranks are ours, not the allocation's
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if "OMP_NUM_THREADS" not in env:
        import torch

        if not torch.cuda.is_available():
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env


def run(argv: list[str], nproc: int) -> int:
    """Run ``neox <argv>`` as ``nproc`` local ranks; returns the combined exit status."""
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "neox.cli.main", *argv], env=child_env(r, nproc, port))
        for r in range(nproc)
    ]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        return _wait(procs)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(procs: list[subprocess.Popen]) -> int:
    failed: int | None = None
    while True:
        codes = [p.poll() for p in procs]
        bad = [c for c in codes if c not in (None, 0, EXIT_STOPPED)]
        if bad and failed is None:
            failed = bad[0]
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + 10
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if all(c is not None for c in (p.poll() for p in procs)):
            break
        time.sleep(0.05)
    if failed is not None:
        return failed
    codes = [p.returncode for p in procs]
    return EXIT_STOPPED if EXIT_STOPPED in codes else 0
