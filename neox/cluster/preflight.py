"""``neox cluster preflight``: the checks a container job runs on its first node before training.

1. NCCL ``system`` mode: the host libnccl bound over the image's copy exports every symbol the
   image's torch needs, or the job stops with the fix (see :mod:`neox.cluster.nccl`).
2. A plugin is configured (``NCCL_NET_PLUGIN``): it loads with its dependencies and is an NCCL net
   plugin, and, when a GPU is visible, a one-rank NCCL init picks it ("Using network AWS
   Libfabric"). ``NCCL_NET`` set without a plugin is refused too. Never a silent TCP fallback.

Each failure is one line and a non-zero exit; the job then records FAILED without training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from neox.cluster import nccl
from neox.errors import NeoxError

PROBE = """
import os, torch, torch.distributed as dist
torch.cuda.set_device(0)
store = dist.HashStore()
dist.init_process_group("nccl", store=store, rank=0, world_size=1)
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
torch.cuda.synchronize()
dist.destroy_process_group()
"""


def image_nccl_lib() -> Path:
    """The libnccl.so.2 torch loads (the nvidia-nccl wheel in the image's venv)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations if spec else []):
        lib = Path(root) / "nccl" / "lib" / "libnccl.so.2"
        if lib.is_file():
            return lib
    raise NeoxError("the image has no nvidia/nccl/lib/libnccl.so.2 (nvidia-nccl wheel); rebuild the image")


def nccl_probe(timeout: float = 180) -> nccl.NetChoice:
    """Initialise NCCL once on GPU 0 with INFO logging and parse which network it chose."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "nccl.log"
        env = {**os.environ, "NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET", "NCCL_DEBUG_FILE": str(log)}
        proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=timeout)
        text = (log.read_text(errors="replace") if log.is_file() else "") + proc.stderr
        choice = nccl.parse_nccl_log(text)
        if proc.returncode != 0 and choice.network is None:
            last = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise NeoxError(f"NCCL init on GPU 0 failed before choosing a network: {last}")
        return choice


def gpu_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except ImportError:
        return False


def run(environ: dict[str, str] | None = None, *, probe: bool = True) -> list[str]:
    """Run the checks; returns the lines to print; raises NeoxError on the first failure."""
    env = os.environ if environ is None else environ
    lines = []
    mode = env.get("NEOX_NCCL_MODE", "image")
    if mode == "system":
        libdir = nccl.torch_lib_dir()
        if libdir is None:
            raise NeoxError("torch is not installed in this environment; run the preflight in the image")
        import torch

        version = nccl.check_system_nccl(image_nccl_lib(), libdir / "libtorch_cuda.so", torch_version=f"torch {torch.__version__}")
        lines.append(f"NCCL: host NCCL {version} (system mode) exports every symbol torch needs")
    else:
        lines.append("NCCL: the image's NCCL (image mode)")
    plugin = env.get("NCCL_NET_PLUGIN", "")
    if plugin and plugin not in ("none", "None"):
        info = nccl.check_plugin(plugin)
        lines.append(f"OFI plugin: {plugin} loads ({', '.join(info.tables)})")
        if probe and gpu_visible():
            choice = nccl_probe()
            nccl.require_ofi(choice)
            lines.append(f"NCCL chose: {choice.network}")
        elif probe:
            lines.append("NCCL network choice: not probed (no GPU visible here)")
    elif env.get("NCCL_NET"):
        raise NeoxError(
            f"NCCL_NET={env['NCCL_NET']!r} asks for a network plugin but NCCL_NET_PLUGIN is not set; "
            "set NEOX_OFI_PLUGIN in the site profile"
        )
    else:
        lines.append("network plugin: none configured (NCCL uses its built-in transports)")
    return lines
