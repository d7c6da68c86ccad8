"""Where this process sits in the job: rank, world size, local rank and the rendezvous address.

Discovery order (the contract the Slurm templates rely on):

1. **torchrun or an explicit environment**: ``RANK`` and ``WORLD_SIZE`` set (with ``LOCAL_RANK``,
   ``MASTER_ADDR``, ``MASTER_PORT``). This is also how ``neox train --nproc N`` hands ranks to
   its children.
2. **Slurm** (one task per GPU under ``srun``): ``SLURM_PROCID`` → rank, ``SLURM_NTASKS`` →
   world size, ``SLURM_LOCALID`` → local rank; master address = the first host of
   ``SLURM_JOB_NODELIST`` (expanded here, in Python: ``node[01-03,07],other``), master port =
   ``MASTER_PORT`` if set, else 29500 + ``SLURM_JOB_ID`` % 1000 (jobs sharing a node do not clash).
3. Otherwise a **single process**.

No ssh, hostfile or pdsh is involved: every rank finds its peers through the master's TCP store.
Upstream GPT-NeoX does the same mapping with ``deepspeed_slurm: true`` but takes ``MASTER_ADDR``
from the job script; here it is computed, so a Slurm task needs no wrapper.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from neox.errors import NeoxError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str
    """Where it came from: ``env`` (torchrun/explicit/--nproc), ``slurm`` or ``single``."""

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def exported(self) -> dict[str, str]:
        """The variables torch.distributed and DeepSpeed read (``env://`` rendezvous)."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def discover(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Rank, world size, local rank and master address of this process (see the module docstring)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank = _int(env, "RANK")
        world = _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        if world > 1 and "MASTER_ADDR" not in env:
            raise NeoxError(
                f"RANK={rank} WORLD_SIZE={world} are set but MASTER_ADDR is not; "
                "export MASTER_ADDR (and MASTER_PORT) to the address of rank 0"
            )
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT
        return _checked(DistEnv(rank, world, local, env.get("MASTER_ADDR", "127.0.0.1"), port, "env"))
    if "SLURM_PROCID" in env:
        rank = _int(env, "SLURM_PROCID")
        world = _int(env, "SLURM_NTASKS") if "SLURM_NTASKS" in env else _int(env, "SLURM_NPROCS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise NeoxError("SLURM_PROCID is set but SLURM_JOB_NODELIST is not; run neox train under srun")
        master = expand_nodelist(nodelist)[0]
        if "MASTER_PORT" in env:
            port = _int(env, "MASTER_PORT")
        else:
            port = DEFAULT_PORT + _int(env, "SLURM_JOB_ID") % 1000 if "SLURM_JOB_ID" in env else DEFAULT_PORT
        return _checked(DistEnv(rank, world, local, env.get("MASTER_ADDR", master), port, "slurm"))
    return DistEnv(0, 1, 0, "127.0.0.1", DEFAULT_PORT, "single")


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise NeoxError(f"environment variable {name}={value!r} is not an integer; unset it or fix the launcher") from None


def _checked(d: DistEnv) -> DistEnv:
    if d.world_size < 1 or not 0 <= d.rank < d.world_size or d.local_rank < 0:
        raise NeoxError(
            f"rank {d.rank} / world size {d.world_size} / local rank {d.local_rank} from the {d.source} "
            "environment are inconsistent; check the launcher's RANK/WORLD_SIZE/LOCAL_RANK (or SLURM_*) variables"
        )
    return d


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm hostlist (``node[01-03,07],gpu-a[1-2]-x,other``) into host names, in order.

    Covers what ``scontrol show hostnames`` does for the lists Slurm puts in
    ``SLURM_JOB_NODELIST``: comma-separated entries, bracketed ranges with zero padding kept,
    and several bracket groups in one name.
    """
    hosts: list[str] = []
    for entry in _split_top_level(nodelist.strip()):
        if entry:
            hosts.extend(_expand_entry(entry, nodelist))
    if not hosts:
        raise NeoxError(f"Slurm node list {nodelist!r} is empty; run neox train inside a Slurm allocation")
    return hosts


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _expand_entry(entry: str, whole: str) -> list[str]:
    open_at = entry.find("[")
    if open_at < 0:
        return [entry]
    close_at = entry.find("]", open_at)
    if close_at < 0:
        raise NeoxError(f"Slurm node list {whole!r} has an unclosed '['; check SLURM_JOB_NODELIST")
    prefix, body, rest = entry[:open_at], entry[open_at + 1 : close_at], entry[close_at + 1 :]
    suffixes = _expand_entry(rest, whole) if rest else [""]
    out = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise NeoxError(f"Slurm node list {whole!r} has a bad range {item!r}; check SLURM_JOB_NODELIST")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        width = len(lo)
        for n in range(int(lo), int(hi) + 1):
            for suffix in suffixes:
                out.append(f"{prefix}{n:0{width}d}{suffix}")
    return out
