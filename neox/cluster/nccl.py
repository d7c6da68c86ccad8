"""NCCL checks that run before training: one libnccl with every symbol torch needs, an OFI
plugin that loads, and which network NCCL actually chose.

- **Symbols.** torch links libnccl.so.2 dynamically; the symbols it needs are the undefined
  ``nccl*`` symbols of ``libtorch_cuda.so`` (``nm -D --undefined-only``). torch 2.10 needs
  ``ncclCommShrink`` (NCCL >= 2.27), absent from NCCL 2.26, so binding an older host NCCL would
  crash at the first collective; here it is refused at launch with the fix.
- **Plugin.** ``NCCL_NET_PLUGIN`` must name a library that dlopens with its dependencies (host
  libfabric, libcxi) and exports an ``ncclNetPlugin_v*`` table; otherwise NCCL logs "No plugin
  found" and silently uses TCP sockets (~2 GB/s instead of ~160 GB/s on Slingshot).
- **Choice.** On a GPU node, a one-rank NCCL init with ``NCCL_DEBUG=INFO`` shows the network
  NCCL picked ("Using network AWS Libfabric" vs "Using network Socket").
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from neox.errors import NeoxError

PLUGIN_TABLE = re.compile(r"^ncclNetPlugin_v\d+$")
OFI_NAMES = ("aws libfabric", "ofi", "libfabric")


def torch_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def dynamic_symbols(lib: Path, *, undefined: bool) -> set[str]:
    """Names in a shared library's dynamic symbol table (undefined ones, or defined ones)."""
    if shutil.which("nm") is None:
        raise NeoxError("nm is not on PATH; install binutils to check NCCL symbols")
    args = ["nm", "-D", "--undefined-only" if undefined else "--defined-only", str(lib)]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NeoxError(f"nm cannot read {lib}: {' '.join(proc.stderr.split())}")
    names = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts:
            names.add(parts[-1].split("@")[0])
    return names


def nccl_symbols_needed(libtorch_cuda: Path) -> set[str]:
    """The NCCL API functions torch calls (its undefined ``nccl*``/``pnccl*`` symbols)."""
    return {s for s in dynamic_symbols(libtorch_cuda, undefined=True) if s.startswith("nccl")}


def missing_symbols(libnccl: Path, needed: set[str]) -> list[str]:
    """Which of ``needed`` the library does not export (looked up with dlsym after loading it)."""
    lib = _load(libnccl, "the NCCL library")
    return sorted(name for name in needed if not hasattr(lib, name))


def nccl_version(libnccl: Path) -> str | None:
    """``ncclGetVersion`` as ``2.27.5`` (None if the library does not export it)."""
    lib = _load(libnccl, "the NCCL library")
    if not hasattr(lib, "ncclGetVersion"):
        return None
    code = ctypes.c_int(0)
    if lib.ncclGetVersion(ctypes.byref(code)) != 0:
        return None
    v = code.value
    # NCCL >= 2.9 encodes major*10000 + minor*100 + patch; older major*1000 + minor*100 + patch.
    if v >= 10000:
        return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
    return f"{v // 1000}.{(v % 1000) // 100}.{v % 100}"


def _load(path: Path, what: str) -> ctypes.CDLL:
    if not path.is_file():
        raise NeoxError(f"{what} {path} does not exist; check the bind in the site profile")
    try:
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        raise NeoxError(f"{what} {path} does not load: {err}") from None


def check_system_nccl(libnccl: Path, libtorch_cuda: Path, *, torch_version: str = "torch") -> str:
    """NCCL ``system`` mode: refuse a bound NCCL that misses what torch needs; returns its version."""
    needed = nccl_symbols_needed(libtorch_cuda)
    missing = missing_symbols(libnccl, needed)
    version = nccl_version(libnccl) or "unknown"
    if missing:
        raise NeoxError(
            f"the host NCCL {version} bound at {libnccl} lacks {', '.join(missing)}, which {torch_version} in the image "
            "needs; set NEOX_NCCL=image in the site profile (use the image's NCCL) or load a newer NCCL module "
            "(NEOX_HOST_NCCL_LIB)"
        )
    return version


@dataclass(frozen=True)
class PluginInfo:
    path: str
    tables: tuple[str, ...]
    """The ``ncclNetPlugin_vN`` tables it exports (the plugin API versions it speaks)."""


def check_plugin(path: str) -> PluginInfo:
    """The plugin exists, loads with its dependencies and is an NCCL net plugin."""
    p = Path(path)
    if not p.is_file():
        raise NeoxError(
            f"NCCL_NET_PLUGIN={path} does not exist in the container; NCCL would fall back to TCP sockets. "
            "Check NEOX_OFI_PLUGIN in the site profile"
        )
    try:
        ctypes.CDLL(str(p), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        raise NeoxError(
            f"NCCL_NET_PLUGIN={path} does not load ({err}); NCCL would fall back to TCP sockets. "
            "Bind its dependencies (NEOX_HOST_LIBFABRIC, NEOX_HOST_LIBS) in the site profile"
        ) from None
    tables = tuple(sorted(s for s in dynamic_symbols(p, undefined=False) if PLUGIN_TABLE.match(s)))
    if not tables:
        raise NeoxError(f"NCCL_NET_PLUGIN={path} exports no ncclNetPlugin_v* table; it is not an NCCL network plugin")
    return PluginInfo(path, tables)


@dataclass(frozen=True)
class NetChoice:
    network: str | None
    """The ``Using network X`` name, or None when the log does not say."""
    plugin_loaded: bool
    plugin_error: str | None

    @property
    def is_ofi(self) -> bool:
        return self.network is not None and any(n in self.network.lower() for n in OFI_NAMES)

    @property
    def is_socket(self) -> bool:
        return self.network is not None and self.network.lower() == "socket"


_USING = re.compile(r"Using network\s+(.+?)\s*$", re.M)
_LOADED = re.compile(r"NET/Plugin\s*:?\s*Loaded (?:net|collnet)? ?plugin|NET/OFI\b|Loaded net plugin", re.I)
_NO_PLUGIN = re.compile(r"(No plugin found[^\n]*|Plugin load returned[^\n]*|Failed to open[^\n]*libnccl-net[^\n]*)", re.I)


def parse_nccl_log(text: str) -> NetChoice:
    """What an ``NCCL_DEBUG=INFO`` log says about the network (tolerant of version differences)."""
    using = _USING.findall(text)
    no_plugin = _NO_PLUGIN.search(text)
    return NetChoice(
        network=using[-1] if using else None,
        plugin_loaded=bool(_LOADED.search(text)),
        plugin_error=no_plugin.group(1).strip() if no_plugin else None,
    )


def require_ofi(choice: NetChoice) -> None:
    """Abort unless NCCL chose the OFI plugin (the profile asks for it)."""
    if choice.is_ofi:
        return
    why = f" ({choice.plugin_error})" if choice.plugin_error else ""
    got = choice.network or "no network line in the NCCL log"
    raise NeoxError(
        f"NCCL would use {got}, not the OFI plugin{why}; refusing to train over TCP sockets. "
        "Check NEOX_OFI_PLUGIN and the libfabric binds in the site profile, or run `just verify` on a compute node"
    )


def interpret_busbw(busbw_gbs: float, nodes: int, backend: str) -> str:
    """What an all-reduce bus bandwidth says about the network that carried it."""
    if backend != "nccl":
        return f"{backend} on CPU: this measures TCP between processes, not the GPU network"
    if nodes < 2:
        return "one node: NVLink/NVSwitch inside the node; the network is not exercised (use nodes=2 or more)"
    if busbw_gbs >= 40:
        return "Slingshot through the OFI plugin (2 nodes x 4 GH200 reach about 160 GB/s)"
    if busbw_gbs < 5:
        return "TCP sockets: NCCL is not using the OFI plugin (about 2 GB/s); check the plugin and binds"
    return "between Slingshot and sockets: the plugin is in use but degraded (check NCCL/FI variables, GDR level)"
