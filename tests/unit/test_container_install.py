"""The image's install logic and pins: containers/install.sh (the cuda profile as a dry run; the cpu
profile runs for real in the README quick start, which CI executes), neox.def's placeholders, the
build command, provenance helpers, and `neox verify` on this machine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from neox.cli.main import main
from neox.cluster import image, verify, versions
from neox.errors import NeoxError

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "containers" / "install.sh"


def dry_run(profile: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in versions.read_versions()}
    proc = subprocess.run(["bash", str(INSTALL), profile, "--venv", "/opt/venv", "--dry-run"], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return proc.stdout


def test_cuda_profile_builds_the_seed_matrix():
    out = dry_run("cuda")
    py = "/opt/venv/bin/python -m pip install --no-input"
    assert "+ python3.12 -m venv /opt/venv\n" in out
    assert f"+ {py} torch==2.10.0 --index-url https://download.pytorch.org/whl/cu126\n" in out
    assert re.search(r"\+ env DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 .*DS_BUILD_CPU_ADAM=1 .* --no-build-isolation "
                     r"--no-binary deepspeed deepspeed==0\.19\.8\n", out)
    assert (f"+ env FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS=90 {py} --no-build-isolation --no-binary "
            "flash-attn flash-attn==2.6.3\n") in out
    assert "NVTE_CUDA_ARCHS=90" in out and "transformer_engine[pytorch] @ git+https://github.com/NVIDIA/TransformerEngine.git@v1.12" in out
    assert f"+ {py} -c {REPO}/containers/constraints.txt -e {REPO}[dev]\n" in out
    assert "+ /opt/venv/bin/python -m neox.cluster.versions --check cuda\n" in out
    assert "MAX_JOBS=8" in out
    # Order: torch before everything compiled against it; the version check last.
    order = [out.index(s) for s in ("torch==2.10.0", "deepspeed==", "flash-attn==", "transformer_engine", "-e ", "--check cuda")]
    assert order == sorted(order)


def test_build_args_override_the_pins():
    out = dry_run("cuda", TORCH_VERSION="2.10.1", MAX_JOBS="4")
    assert "torch==2.10.1 --index-url" in out and "MAX_JOBS=4" in out


def test_cpu_profile_and_bad_profile():
    out = dry_run("cpu")
    assert "torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu" in out
    assert "flash-attn" not in out and "transformer_engine" not in out and "DS_BUILD" not in out
    assert "--check cpu" in out
    proc = subprocess.run(["bash", str(INSTALL), "rocm"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown profile 'rocm'; use cuda or cpu" in proc.stderr


def test_def_file_placeholders_all_come_from_versions_env():
    text = (REPO / "containers" / "neox.def").read_text()
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
    arguments = set(re.findall(r"^\s+(\w+)=", text.split("%arguments")[1].split("\n%")[0], re.M))
    assert placeholders - arguments <= set(versions.read_versions())
    assert arguments == {"GIT_COMMIT"}
    assert text.startswith("Bootstrap: docker\nFrom: {{ BASE_IMAGE }}\n")
    env = text.split("%environment")[1].split("\n%")[0]
    assert "LD_PRELOAD" not in env and "LD_LIBRARY_PATH" not in env
    assert 'TORCH_CUDA_ARCH_LIST="{{ TORCH_CUDA_ARCH_LIST }}"' in env and "HF_HOME" in env
    assert "exec neox \"$@\"" in text.split("%runscript")[1] and "neox verify" in text.split("%test")[1]
    assert "org.neox.git-commit {{ GIT_COMMIT }}" in text
    # %post hands every pin the install script reads to it.
    post = text.split("%post")[1].split("\n%")[0]
    for key in ("TORCH_VERSION", "FLASH_ATTN_VERSION", "TE_VERSION", "DEEPSPEED_VERSION", "DS_BUILD_OPS_LIST", "MAX_JOBS"):
        assert f'{key}="{{{{ {key} }}}}"' in post


def test_versions_pins_match_the_seed_matrix():
    v = versions.read_versions()
    assert (v["TORCH_VERSION"], v["FLASH_ATTN_VERSION"], v["TE_VERSION"], v["PYTHON_VERSION"]) == ("2.10.0", "2.6.3", "1.12.0", "3.12")
    assert v["BASE_IMAGE"] == "nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04"
    assert v["DEEPSPEED_VERSION"] == versions.read_constraints()["deepspeed"]
    assert versions.mismatches("cpu") == []


def test_build_command_and_argument_checks(tmp_path):
    cmd = image.build_command(tmp_path / "neox.sif", {"TORCH_VERSION": "2.10.1"})
    assert cmd[:3] == ["apptainer", "build", "--fakeroot"]
    assert cmd[3:7] == ["--build-arg-file", str(REPO / "containers" / "versions.env"), "--build-arg", "TORCH_VERSION=2.10.1"]
    assert cmd[-2:] == [str(tmp_path / "neox.sif"), str(REPO / "containers" / "neox.def")]
    with pytest.raises(NeoxError, match="build argument TORCH is not in containers/versions.env; known: BASE_IMAGE"):
        image.parse_build_args(["TORCH=2"])
    env = image.build_environment(tmp_path)
    assert env["APPTAINER_CACHEDIR"] == str(tmp_path / "cache") and env["APPTAINER_TMPDIR"] == str(tmp_path / "tmp")


def test_build_image_local_dry_run_prints_the_command(tmp_path, capsys):
    assert main(["cluster", "build-image", "local=true", f"sif={tmp_path}/x.sif", "MAX_JOBS=4", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("apptainer build --fakeroot --build-arg-file ") and "--build-arg MAX_JOBS=4" in out


def test_registry_references():
    assert image.split_reference("nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04") == (
        "registry-1.docker.io", "nvidia/cuda", "12.6.3-cudnn-devel-ubuntu24.04")
    assert image.split_reference("nvcr.io/nvidia/pytorch:24.12-py3") == ("nvcr.io", "nvidia/pytorch", "24.12-py3")
    assert image.split_reference("ubuntu") == ("registry-1.docker.io", "library/ubuntu", "latest")
    assert image.pinned_reference("nvidia/cuda:12.6.3-x", "sha256:ab") == "nvidia/cuda@sha256:ab"


def test_image_nccl_library_path(tmp_path):
    sif = tmp_path / "neox.sif"
    assert image.image_nccl_lib(str(sif)) == "/opt/venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2"
    image.provenance_path(sif).write_text('{"image": {"nccl_library": "/opt/v/nccl/libnccl.so.2"}}')
    assert image.image_nccl_lib(str(sif)) == "/opt/v/nccl/libnccl.so.2"


def test_verify_passes_on_this_cpu_install(capsys):
    checks = {c.name: c for c in verify.run_all()}
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert checks["torch"].detail.startswith("torch 2.")
    assert "not installed (CPU profile" in checks["flash-attn"].detail
    assert checks["kernels"].detail.startswith("no kernels built")
    assert main(["verify"]) == 0
    assert "neox verify: all checks passed" in capsys.readouterr().out


def test_verify_fails_on_a_missing_plugin(monkeypatch, capsys):
    monkeypatch.setenv("NCCL_NET", "AWS Libfabric")
    monkeypatch.delenv("NCCL_NET_PLUGIN", raising=False)
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL  nccl plugin\s+NCCL_NET='AWS Libfabric' but no NCCL_NET_PLUGIN", out, re.M)
    monkeypatch.setenv("NCCL_NET_PLUGIN", "/nonexistent/libnccl-net.so")
    assert main(["verify"]) == 1
    assert "does not exist in the container" in capsys.readouterr().out
