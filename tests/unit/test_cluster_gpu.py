"""GPU checks of the HPC layer against the real torch/NCCL on a CUDA machine (marked `gpu`):
the NCCL symbol check on torch's own libraries, the one-rank NCCL probe that names the network,
the all-reduce test, and `neox verify`'s GPU checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from neox.cluster import nccl, preflight, verify

pytestmark = pytest.mark.gpu


def _torch_nccl() -> tuple[Path, Path]:
    lib = nccl.torch_lib_dir()
    site = lib.parents[1]
    found = sorted(site.glob("nvidia/nccl*/lib/libnccl.so.2")) + sorted(site.glob("nvidia/nccl/lib/libnccl.so*"))
    if not found:
        pytest.skip("torch here links NCCL statically or from elsewhere (no nvidia-nccl wheel)")
    return lib / "libtorch_cuda.so", found[0]


def test_torch_needs_nccl_symbols_its_own_nccl_exports():
    torch_cuda, libnccl = _torch_nccl()
    needed = nccl.nccl_symbols_needed(torch_cuda)
    assert {"ncclAllReduce", "ncclCommInitRankConfig"} <= needed
    version = nccl.check_system_nccl(libnccl, torch_cuda)
    import torch

    assert version == ".".join(str(x) for x in torch.cuda.nccl.version())


def test_nccl_probe_names_the_network():
    choice = preflight.nccl_probe()
    assert choice.network is not None
    # No OFI plugin on a plain GPU host: require_ofi must refuse what NCCL chose.
    if not choice.is_ofi:
        with pytest.raises(Exception, match="refusing to train over TCP sockets"):
            nccl.require_ofi(choice)


def test_allreduce_on_one_gpu_reports_bandwidth():
    env = {**os.environ, "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "localhost",
           "SLURM_JOB_ID": "7", "SLURM_NNODES": "1"}
    out = subprocess.run([sys.executable, "-m", "neox.cli.main", "cluster", "allreduce", "--max-mib", "64"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "backend nccl" in out.stdout and "NCCL network: " in out.stdout
    assert "verdict: 0.0 GB/s: one rank: an all-reduce moves no data" in out.stdout


def test_verify_gpu_checks():
    checks = {c.name: c for c in verify.run_all()}
    assert checks["gpus"].ok and "GPU(s):" in checks["gpus"].detail
    assert checks["torch"].ok and "NCCL " in checks["torch"].detail
    for name in ("flash-attn", "transformer-engine"):
        c = checks[name]
        assert c.ok or "import" in c.detail, c.detail
        if c.ok and "max |" in c.detail:
            assert "(ok," in c.detail
