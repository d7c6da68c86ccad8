"""NCCL preflight: symbol checks and plugin loading against real shared libraries compiled here
(a libtorch_cuda that needs ncclCommShrink, an NCCL 2.26-like library without it and a 2.27-like
one with it, OFI plugins that load, miss a dependency or are not plugins), and the log parsing
that tells the OFI plugin from a TCP-socket fallback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from neox.cluster import nccl, preflight
from neox.errors import NeoxError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("nm") is None, reason="needs gcc and nm")

NCCL_COMMON = """
int ncclGetVersion(int *v) { *v = VERSION; return 0; }
int ncclAllReduce(void) { return 0; }
int ncclCommInitRank(void) { return 0; }
"""


def compile_lib(tmp: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / f"{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-nccl")
    torch_cuda = compile_lib(
        tmp, "libtorch_cuda",
        "int ncclCommShrink(void); int ncclAllReduce(void); int ncclGetVersion(int*);\n"
        "int use(void) { int v; ncclGetVersion(&v); return ncclCommShrink() + ncclAllReduce(); }\n",
    )
    old = compile_lib(tmp, "libnccl_2_26", NCCL_COMMON, "-DVERSION=22606")
    new = compile_lib(tmp, "libnccl_2_27", NCCL_COMMON + "int ncclCommShrink(void) { return 0; }\n", "-DVERSION=22705")
    fabric = compile_lib(tmp, "libfakefabric", "int fi_getinfo(void) { return 0; }\n")
    plugin = compile_lib(
        tmp, "libnccl-net", "extern int fi_getinfo(void);\nint ncclNetPlugin_v8[16];\nint init(void) { return fi_getinfo(); }\n",
        f"-L{tmp}", "-lfakefabric", f"-Wl,-rpath,{tmp}",
    )
    orphan_dir = tmp / "orphan"
    orphan_dir.mkdir()
    # A different soname: the loader would reuse an already loaded libfakefabric.so.
    shutil.copy(fabric, orphan_dir / "libgonefabric.so")
    orphan = compile_lib(
        tmp, "libnccl-net-orphan", "extern int fi_getinfo(void);\nint ncclNetPlugin_v8[16];\nint init(void) { return fi_getinfo(); }\n",
        f"-L{orphan_dir}", "-lgonefabric",
    )
    shutil.rmtree(orphan_dir)  # its libfabric is gone at run time, as with a missing bind
    not_plugin = compile_lib(tmp, "libnot-a-plugin", "int something(void) { return 1; }\n")
    return {"torch": torch_cuda, "old": old, "new": new, "plugin": plugin, "orphan": orphan, "not_plugin": not_plugin}


def test_symbols_torch_needs_come_from_its_undefined_nccl_symbols(libs):
    assert nccl.nccl_symbols_needed(libs["torch"]) == {"ncclCommShrink", "ncclAllReduce", "ncclGetVersion"}


def test_system_nccl_without_commshrink_is_refused_with_the_fix(libs):
    with pytest.raises(NeoxError) as err:
        nccl.check_system_nccl(libs["old"], libs["torch"], torch_version="torch 2.10.0")
    msg = str(err.value)
    assert f"the host NCCL 2.26.6 bound at {libs['old']} lacks ncclCommShrink, which torch 2.10.0" in msg
    assert "set NEOX_NCCL=image" in msg and "load a newer NCCL module" in msg
    assert "\n" not in msg


def test_system_nccl_with_every_symbol_passes(libs):
    assert nccl.check_system_nccl(libs["new"], libs["torch"]) == "2.27.5"
    assert nccl.missing_symbols(libs["new"], {"ncclCommShrink", "ncclAllReduce"}) == []


def test_plugin_that_loads_reports_its_api_tables(libs):
    info = nccl.check_plugin(str(libs["plugin"]))
    assert info.tables == ("ncclNetPlugin_v8",)


@pytest.mark.parametrize(
    "key, message",
    [
        ("orphan", "does not load (libgonefabric.so: cannot open shared object file"),
        ("not_plugin", "exports no ncclNetPlugin_v* table"),
        (None, "does not exist in the container; NCCL would fall back to TCP sockets"),
    ],
)
def test_plugin_failures_are_refused(libs, key, message):
    path = str(libs[key]) if key else "/opt/neox/ofi/libnccl-net.so"
    with pytest.raises(NeoxError, match="NCCL_NET_PLUGIN=") as err:
        nccl.check_plugin(path)
    assert message in str(err.value)


def test_preflight_refuses_nccl_net_without_a_plugin_and_passes_a_good_plugin(libs):
    with pytest.raises(NeoxError, match="NCCL_NET='AWS Libfabric' asks for a network plugin"):
        preflight.run({"NCCL_NET": "AWS Libfabric"}, probe=False)
    lines = preflight.run({"NCCL_NET": "AWS Libfabric", "NCCL_NET_PLUGIN": str(libs["plugin"])}, probe=False)
    assert lines[0] == "NCCL: the image's NCCL (image mode)"
    assert lines[1].startswith(f"OFI plugin: {libs['plugin']} loads (ncclNetPlugin_v8)")
    with pytest.raises(NeoxError, match="does not load"):
        preflight.run({"NCCL_NET_PLUGIN": str(libs["orphan"])}, probe=False)


OFI_LOG = """\
nid001:123:123 [0] NCCL INFO NCCL_NET_PLUGIN set by environment to /opt/neox/ofi/libnccl-net.so
nid001:123:123 [0] NCCL INFO NET/Plugin: Loaded net plugin AWS Libfabric (v8)
nid001:123:123 [0] NCCL INFO NET/OFI Initializing aws-ofi-nccl 1.14.0
nid001:123:123 [0] NCCL INFO NET/OFI Selected provider is cxi, fabric is cxi (found 4 nics)
nid001:123:123 [0] NCCL INFO Using network AWS Libfabric
"""
SOCKET_LOG = """\
nid001:123:123 [0] NCCL INFO NET/Plugin: Plugin load returned 2 : libnccl-net.so: cannot open shared object file: No such file or directory
nid001:123:123 [0] NCCL INFO NET/Plugin: No plugin found (libnccl-net.so), using internal implementation
nid001:123:123 [0] NCCL INFO NET/Socket : Using [0]hsn0:10.0.0.1<0>
nid001:123:123 [0] NCCL INFO Using network Socket
"""


def test_nccl_log_parsing_tells_ofi_from_sockets():
    ofi = nccl.parse_nccl_log(OFI_LOG)
    assert (ofi.network, ofi.is_ofi, ofi.plugin_loaded, ofi.plugin_error) == ("AWS Libfabric", True, True, None)
    nccl.require_ofi(ofi)
    sock = nccl.parse_nccl_log(SOCKET_LOG)
    assert (sock.network, sock.is_socket, sock.is_ofi) == ("Socket", True, False)
    with pytest.raises(NeoxError) as err:
        nccl.require_ofi(sock)
    assert str(err.value).startswith("NCCL would use Socket, not the OFI plugin (Plugin load returned 2")
    assert "refusing to train over TCP sockets" in str(err.value)
    with pytest.raises(NeoxError, match="no network line in the NCCL log"):
        nccl.require_ofi(nccl.parse_nccl_log("NCCL INFO Bootstrap : Using hsn0\n"))


def test_bandwidth_verdicts():
    from neox.cluster.allreduce import busbw

    assert busbw(10**9, 1.0, 2) == 1.0 and busbw(10**9, 1.0, 8) == 1.75 and busbw(10**9, 1.0, 1) == 0.0
    assert nccl.interpret_busbw(160.0, 2, "nccl").startswith("Slingshot")
    assert nccl.interpret_busbw(2.3, 2, "nccl").startswith("TCP sockets")
    assert nccl.interpret_busbw(20.0, 2, "nccl").startswith("between Slingshot and sockets")
    assert nccl.interpret_busbw(300.0, 1, "nccl").startswith("one node")
    assert "not the GPU network" in nccl.interpret_busbw(1.0, 2, "gloo")
