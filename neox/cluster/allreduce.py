"""``neox cluster allreduce``: the all-reduce bandwidth test behind ``just nccl-test nodes=N``.

Run as one task per GPU under ``srun`` (ranks from the Slurm variables, as training does). It
times ``all_reduce`` over message sizes, reports bus bandwidth the way nccl-tests does
(algorithm bandwidth x 2(n-1)/n), and says what the largest size's number means: Slingshot
through the OFI plugin, or TCP sockets. Rank 0 also reads its own ``NCCL_DEBUG=INFO`` log to
name the network NCCL chose. On CPU it runs over gloo (useful only to test the plumbing).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from neox.cluster import nccl


def busbw(size_bytes: int, seconds: float, world: int) -> float:
    """Bus bandwidth in GB/s of one all-reduce of ``size_bytes`` that took ``seconds`` (0 for one rank: nothing moves)."""
    return size_bytes / seconds * 2 * (world - 1) / world / 1e9


def main(max_mib: int | None = None, iters: int = 10) -> int:
    import torch
    import torch.distributed as dist

    from neox.launch.env import discover

    d = discover()
    os.environ.update(d.exported())
    use_nccl = torch.cuda.is_available()
    debug_file = None
    if use_nccl:
        torch.cuda.set_device(d.local_rank)
        if d.rank == 0:
            debug_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"neox-nccl-{os.getpid()}.log"
            os.environ.update({"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET", "NCCL_DEBUG_FILE": str(debug_file)})
    backend = "nccl" if use_nccl else "gloo"
    dist.init_process_group(backend)
    device = torch.device("cuda", d.local_rank) if use_nccl else torch.device("cpu")
    top = (max_mib or (1024 if use_nccl else 16)) * 2**20
    sizes = [s for s in (2**20, 8 * 2**20, 64 * 2**20, 256 * 2**20, 2**30) if s <= top] or [top]
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if d.rank == 0:
        print(f"all-reduce over {d.world_size} rank(s) on {nodes} node(s), backend {backend}")
        print(f"{'size':>10}  {'time (ms)':>10}  {'busbw (GB/s)':>12}")
    result = 0.0
    for size in sizes:
        x = torch.ones(size // 4, dtype=torch.float32, device=device)
        for _ in range(2):
            dist.all_reduce(x)
        _sync(use_nccl)
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(x)
        _sync(use_nccl)
        t = (time.perf_counter() - start) / iters
        result = busbw(size, t, d.world_size)
        if d.rank == 0:
            print(f"{size // 2**20:>8}MiB  {t * 1e3:>10.2f}  {result:>12.2f}")
    if d.rank == 0:
        if debug_file is not None and debug_file.is_file():
            choice = nccl.parse_nccl_log(debug_file.read_text(errors="replace"))
            print(f"NCCL network: {choice.network or 'not reported'}"
                  + (f" ({choice.plugin_error})" if choice.plugin_error else ""))
        verdict = ("one rank: an all-reduce moves no data; use more GPUs or nodes" if d.world_size == 1
                   else nccl.interpret_busbw(result, nodes, backend))
        print(f"verdict: {result:.1f} GB/s: {verdict}")
    dist.destroy_process_group()
    return 0


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()
