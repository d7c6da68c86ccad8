"""Site profiles: Python reads them exactly as bash does, and bad profiles fail with one line."""

from __future__ import annotations

import subprocess

import pytest

from neox.cluster import profile
from neox.errors import NeoxError


@pytest.mark.parametrize("name", profile.available())
def test_python_and_bash_read_shipped_profiles_the_same(name):
    path = profile.profile_path(name)
    env = {"PATH": "/usr/bin:/bin", "NEOX_SIF": "/images/neox.sif"}
    values, exported = profile.parse_env_file(path, env)
    out = subprocess.run(
        ["bash", "-c", f"set -u; source {path}; for k in {' '.join(values)}; do printf '%s=%s\\0' \"$k\" \"${{!k}}\"; done;"
         " env -0"], env=env, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    n = len(values)
    from_bash = dict(item.split("=", 1) for item in out[:n])
    exported_bash = {item.split("=", 1)[0] for item in out[n:] if "=" in item}
    assert from_bash == values
    assert set(exported) <= exported_bash
    assert not (set(values) - set(exported)) & (exported_bash - set(env))


def test_isambard_profile_values():
    p = profile.load("isambard-ai", {"NEOX_SIF": "/images/neox.sif"})
    assert (p.container, p.gpus_per_node, p.tasks_per_node, p.cpus_per_task) == ("apptainer", 4, 4, 72)
    assert p.partition == "workq" and p.time == "24:00:00" and p.nccl == "image"
    assert p.exports["NCCL_NET"] == "AWS Libfabric"
    assert p.exports["FI_CXI_RDZV_THRESHOLD"] == "0"
    assert p.exports["NCCL_PROTO"] == "^LL128"
    assert "LD_PRELOAD" not in p.exports and "LD_LIBRARY_PATH" not in p.exports
    assert all("/usr/lib64" not in v for v in p.exports.values())
    assert p.sif == "/images/neox.sif"


def test_environment_overrides_defaults():
    p = profile.load("isambard-ai", {"NEOX_NCCL": "system", "NEOX_PARTITION": "interactive", "NEOX_ACCOUNT": "brics.x"})
    assert (p.nccl, p.partition, p.account) == ("system", "interactive", "brics.x")
    local = profile.load("local", {})
    assert (local.container, local.gpus_per_node, local.tasks_per_node) == ("none", 0, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("NEOX_CONTAINER=docker\n", "NEOX_CONTAINER='docker'; use one of apptainer, none"),
        ("NEOX_NCCL=host\n", "NEOX_NCCL='host'; use 'image'"),
        ("NEOX_CONTAINER=apptainer\nNEOX_NCCL=system\n", "NEOX_NCCL=system needs NEOX_HOST_NCCL_LIB"),
        ("NEOX_GPUS_PER_NODE=four\n", "NEOX_GPUS_PER_NODE='four' is not an integer"),
        ("NEOX_GPUS_PER_NODE=4\nNEOX_TASKS_PER_NODE=2\n", "NEOX_TASKS_PER_NODE=2 but NEOX_GPUS_PER_NODE=4"),
        ("module load x\n", ":1: expected [export] KEY=VALUE"),
        ("NEOX_BINDS=/a /b\n", "must be one word; quote it"),
    ],
)
def test_bad_profiles_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "site.env"
    path.write_text(text)
    with pytest.raises(NeoxError) as err:
        profile.load(str(path), {})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(NeoxError, match=r"unknown site profile 'mars'; choose one of: .*isambard-ai.*local"):
        profile.load("mars", {})
