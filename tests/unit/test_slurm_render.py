"""Rendered job scripts: the exact container line, binds and environment, for 64 Isambard nodes and
for the plain-process profile; readable, valid bash, and free of user-specific paths."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from pathlib import Path

import pytest

from neox.cluster import launch, profile, render, submit
from neox.errors import NeoxError

IMAGE_NCCL = "/opt/venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2"
EXPECTED_NEOX_ARRAY = """# How every rank starts neox: in the image.
NEOX=(
    env -u LD_PRELOAD -u LD_LIBRARY_PATH -u PYTHONPATH -u PYTHONHOME -u PYTHONUSERBASE -u VIRTUAL_ENV
    -u CUDA_HOME
    apptainer exec --nv
    --bind /projects
    --bind /lus
    --bind /local
    --bind /opt/cray/libfabric/1.22.0:/host/opt/cray/libfabric/1.22.0:ro
    --bind /usr/lib64/libcxi.so.1:/opt/neox/hostlibs/libcxi.so.1:ro
    --bind /usr/lib64/libnl-3.so.200:/opt/neox/hostlibs/libnl-3.so.200:ro
    --bind /usr/lib64/libnl-route-3.so.200:/opt/neox/hostlibs/libnl-route-3.so.200:ro
    --bind /opt/brics/aws-ofi-nccl/lib/libnccl-net.so:/opt/neox/ofi/libnccl-net.so:ro
    --env LD_LIBRARY_PATH=/host/opt/cray/libfabric/1.22.0/lib64:/opt/neox/hostlibs
    --env NCCL_NET_PLUGIN=/opt/neox/ofi/libnccl-net.so
    --env NEOX_NCCL_MODE=image
    --env PYTHONNOUSERSITE=1
    "$NEOX_SIF" neox
)"""


def isambard(**env):
    return profile.load("isambard-ai", {"NEOX_SIF": "/images/neox.sif", **env})


def shape(nodes=64):
    return render.JobShape(nodes=nodes, time="24:00:00", partition="workq", account="", job_name="neox-pythia")


def test_isambard_64_nodes_exact_container_line():
    script = submit.render_train(isambard(), shape(), IMAGE_NCCL)
    assert EXPECTED_NEOX_ARRAY in script
    assert '\nsrun --ntasks-per-node=4 --kill-on-bad-exit=0 --cpu-bind=cores "${NEOX[@]}" train "$RUN_DIR/config.yml"\n' in script
    for line in [
        "#SBATCH --nodes=64", "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=72", "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=24:00:00", "#SBATCH --partition=workq", "#SBATCH --signal=USR1@600", "#SBATCH --requeue",
        "#SBATCH --exclusive", "#SBATCH --output=slurm-%j.out", "#SBATCH --open-mode=append", "module load brics/nccl",
    ]:
        assert f"\n{line}\n" in script, line
    assert '"${NEOX[@]}" cluster preflight' in script
    assert "LD_PRELOAD=" not in script and "/host/usr/lib64" not in script
    assert "B:USR1" not in script


def test_rendered_script_is_readable_valid_bash_and_has_no_user_paths(tmp_path):
    script = submit.render_train(isambard(), shape(), IMAGE_NCCL)
    assert "{{" not in script and "}}" not in script
    assert max(len(line) for line in script.splitlines()) <= 110
    assert "\n\n\n" not in script
    for private in {str(Path.home()), os.getcwd(), getpass.getuser(), "/tmp", "/work"} - {"", "/", "root"}:
        assert private not in script, private
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_system_nccl_binds_the_host_library_over_the_image_copy():
    p = isambard(NEOX_NCCL="system", NEOX_HOST_NCCL_LIB="/opt/brics/nccl/2.28.3/lib/libnccl.so.2")
    binds = launch.container_binds(p, IMAGE_NCCL)
    assert binds[-1] == f"/opt/brics/nccl/2.28.3/lib/libnccl.so.2:{IMAGE_NCCL}:ro"
    assert launch.container_env(p)["NEOX_NCCL_MODE"] == "system"
    # Exactly one libnccl: image mode binds none, and neither mode preloads one.
    image_binds = launch.container_binds(isambard(), IMAGE_NCCL)
    assert not any("libnccl.so" in b for b in image_binds)
    assert not any("LD_PRELOAD" in w for w in launch.apptainer_exec(p, IMAGE_NCCL) if w != "LD_PRELOAD")


def test_local_profile_runs_plain_processes():
    script = submit.render_train(profile.load("local", {}), shape(nodes=2), "")
    assert "apptainer" not in script
    assert 'NEOX=(\n    "$NEOX_PYTHON" -m neox.cli.main\n)' in script
    assert '\nsrun --ntasks-per-node=1 --kill-on-bad-exit=0 "${NEOX[@]}" train "$RUN_DIR/config.yml"\n' in script
    assert "#SBATCH --gpus-per-node" not in script and "#SBATCH --exclusive" not in script
    assert "module load" not in script


def test_template_and_renderer_cannot_drift():
    with pytest.raises(NeoxError, match=r"placeholder \{\{b\}\} has no value"):
        render.fill("{{a}} {{b}}", {"a": "1"})
    with pytest.raises(NeoxError, match=r"values \['c'\] are not used"):
        render.fill("{{a}}", {"a": "1", "c": "2"})
    assert render.fill("x={{ a }}", {"a": "1"}) == "x=1"


def test_run_and_tunnel_templates_render():
    from neox.cluster import runcmd, tunnel

    p = isambard()
    run = runcmd.render_run(p, shape(nodes=1), ["neox", "verify"], in_image=True, image_nccl_lib=IMAGE_NCCL)
    assert '\nsrun --ntasks-per-node=1 --kill-on-bad-exit=0 --cpu-bind=cores "${IMAGE[@]}" neox verify\n' in run
    assert "#SBATCH --exclusive" not in run
    tun = tunnel.render_tunnel(p, shape(nodes=1), "alice-neox", IMAGE_NCCL)
    assert "#SBATCH --gpus-per-node=1" in tun
    assert re.search(r'"\$CODE/code" tunnel --accept-server-license-terms --name alice-neox', tun)
    host = runcmd.render_run(p, shape(nodes=1), ["hostname"], in_image=False)
    assert "IMAGE=()" in host and "apptainer" not in host
