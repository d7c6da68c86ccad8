"""Start torch.distributed and DeepSpeed's communication layer for this process.

The backend is NCCL when CUDA is available, else gloo; the device is ``cuda:<local rank>``.
A single process uses an in-memory store (no port is opened, so concurrent single-process runs
on one machine never collide). Several processes rendezvous through ``MASTER_ADDR:MASTER_PORT``
(``env://``). The timeout of collectives is ``NEOX_DIST_TIMEOUT`` minutes (default 60: first
NCCL communicator creation on hundreds of ranks can take many minutes).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from neox.launch.env import DistEnv


def device_for(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init(env: DistEnv) -> torch.device:
    """Initialise the process group (idempotent) and DeepSpeed's comm; returns this rank's device."""
    import deepspeed
    import torch.distributed as dist

    if env.source == "single":
        # DeepSpeed's engine reads LOCAL_RANK; RANK/WORLD_SIZE stay unset, so whatever this process
        # starts later (e.g. `neox train --nproc 2` from a test) is not mistaken for a rank.
        os.environ.setdefault("LOCAL_RANK", "0")
    else:
        os.environ.update(env.exported())  # DeepSpeed reads the rank variables from the environment
    device = device_for(env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=float(os.environ.get("NEOX_DIST_TIMEOUT", "60")))
    if not dist.is_initialized():
        if env.world_size == 1:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(
                backend, init_method="env://", rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs
            )
    if backend == "gloo":
        _skip_cpu_shm_op()
    deepspeed.init_distributed(dist_backend=backend, timeout=timeout, verbose=False)
    return device


def _skip_cpu_shm_op() -> None:
    """Keep DeepSpeed's CPU backend from JIT-compiling its shared-memory all-reduce.

    That op serves only DeepSpeed's inference all-reduce, which training never calls, yet
    building it costs 40-90 s on a fresh machine (the first `just demo`, every fresh CI venv).
    DeepSpeed keeps its op-compatibility table as one module-level dict, so marking the op
    incompatible there makes the backend skip the build.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
