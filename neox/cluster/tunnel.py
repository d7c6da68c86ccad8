"""VS Code tunnels on compute nodes: install the ``code`` CLI, submit ``slurm/tunnel.sbatch``,
wait for it to run, and print the GitHub device-code line and the vscode.dev URL from its log.

The CLI is the standalone ``code`` binary, one copy per architecture
(``$NEOX_VSCODE_DIR/<machine>/code``, default ``~/.local/share/neox/vscode``) because login and
compute nodes may differ; its tokens live next to it (``--cli-data-dir``), not in a shared
``~/.vscode``. In a container profile the tunnel runs inside the image, so the editor's
terminals have the image's Python, torch and neox. Waiting reads the log file (cheap), and asks
``squeue`` only every ``NEOX_POLL_SECONDS`` to notice a job that failed.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shutil
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

from neox.cluster import jobs, launch, render, slurmcmd, submit
from neox.cluster.profile import SiteProfile
from neox.errors import NeoxError

DOWNLOAD = "https://code.visualstudio.com/sha/download?build=stable&os=cli-alpine-{arch}"
ARCHES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x64", "amd64": "x64"}
_DEVICE = re.compile(r"^.*(?:github\.com/login/device|microsoft\.com/devicelogin).*$", re.M)
_URL = re.compile(r"https://vscode\.dev/tunnel/\S+")


def vscode_dir() -> Path:
    return Path(os.environ.get("NEOX_VSCODE_DIR") or Path.home() / ".local" / "share" / "neox" / "vscode")


def install_cli(machine: str | None = None, *, url: str | None = None) -> Path:
    """Download the standalone CLI for ``machine`` (default: this one) into its own directory."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise NeoxError(f"arch={machine!r}: the VS Code CLI is built for {', '.join(sorted(set(ARCHES)))}")
    target = vscode_dir() / machine
    source = url or os.environ.get("NEOX_VSCODE_CLI_URL") or DOWNLOAD.format(arch=ARCHES[machine])
    print(f"downloading the VS Code CLI ({ARCHES[machine]}) from {source}")
    try:
        with urllib.request.urlopen(source, timeout=120) as resp:
            data = resp.read()
    except OSError as err:
        raise NeoxError(f"cannot download the VS Code CLI from {source} ({err}); check the network or NEOX_VSCODE_CLI_URL") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = next((m for m in tar.getmembers() if Path(m.name).name == "code" and m.isfile()), None)
            if member is None:
                raise NeoxError(f"the download from {source} has no `code` binary")
            blob = tar.extractfile(member).read()
    except tarfile.TarError as err:
        raise NeoxError(f"the download from {source} is not a .tar.gz ({err})") from None
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "code.tmp"
    tmp.write_bytes(blob)
    tmp.chmod(0o755)
    tmp.replace(target / "code")
    print(f"installed {target / 'code'}")
    return target / "code"


def tunnel_name(name: str | None) -> str:
    """VS Code's rules: at most 20 characters of [a-z0-9-] (lower-cased; '_' and spaces become '-')."""
    raw = name or f"{os.environ.get('USER', 'neox')}-neox"
    clean = re.sub(r"[^a-z0-9-]", "", re.sub(r"[_\s]+", "-", raw.lower())).strip("-")
    if not clean:
        raise NeoxError(f"name={raw!r} has no usable characters; use letters, digits and '-'")
    if len(clean) > 20:
        if name:
            raise NeoxError(f"name={name!r} is {len(clean)} characters; VS Code tunnel names have at most 20")
        clean = clean[:20].rstrip("-")
    return clean


def render_tunnel(profile: SiteProfile, shape: render.JobShape, name: str, image_nccl_lib: str) -> str:
    prefix = launch.image_words(profile, image_nccl_lib, gpus=profile.gpus_per_node > 0)
    where = "in the image, so its terminals have neox and torch" if prefix else "on the host"
    return render.render(
        "tunnel.sbatch",
        {
            "job_name": shape.job_name,
            "cpus_per_task": str(profile.cpus_per_task),
            "time": shape.time,
            "sbatch_extra": render.sbatch_extra(profile, shape, gpus_per_node=min(profile.gpus_per_node, 1)),
            "module_load": render.module_load(profile),
            "image": launch.bash_array("IMAGE", prefix, f"The tunnel runs {where}."),
            "tunnel_name": name,
        },
    )


def start(profile: SiteProfile, *, name: str | None, time_limit: str | None, partition: str | None,
          account: str | None, wait_s: float = 1800, dry_run: bool = False) -> int:
    from neox.cluster import image

    tname = tunnel_name(name)
    machine_dir = vscode_dir()
    base = Path.cwd().resolve()
    sif = image.resolve_sif(profile, base) if profile.container == "apptainer" else ""
    shape = render.JobShape(
        nodes=1, time=time_limit or "08:00:00",
        partition=profile.partition if partition is None else partition,
        account=profile.account if account is None else account, job_name=f"neox-tunnel-{tname}"[:40],
    )
    script = render_tunnel(profile, shape, tname, image.image_nccl_lib(sif) if sif else "")
    run_dir = submit.make_run_dir((base / profile.runs_dir).resolve(), f"tunnel-{tname}")
    env = {"NEOX_PYTHON": sys.executable, "NEOX_VSCODE_DIR": str(machine_dir)}
    if sif:
        env["NEOX_SIF"] = sif
    meta = {"kind": "tunnel", "name": f"tunnel-{tname}", "run_dir": str(run_dir), "profile": profile.name, "nodes": 1,
            "jobs": []}
    render.write_run_dir(run_dir, job_script=script, profile=profile, env=env, meta=meta)
    if dry_run:
        print(f"rendered {run_dir / 'job.sbatch'} (not submitted: --dry-run)")
        return 0
    if shutil.which("code", path=str(machine_dir / platform.machine())) is None:
        print(f"neox: warning: no VS Code CLI in {machine_dir / platform.machine()}; run `just install-vscode-cli` "
              "(for the compute nodes' architecture) first", file=sys.stderr)
    job_id = slurmcmd.sbatch(run_dir / "job.sbatch")
    submit.record_job(run_dir, job_id, chain=0)
    print(f"submitted tunnel job {job_id} ({tname}); waiting for it to start ...", flush=True)
    _, url = wait_for_login(job_id, jobs.log_of(run_dir, job_id), wait_s)
    print(f"open: {url}")
    print(f"or in VS Code: Remote - Tunnels -> Connect to Tunnel -> {tname}")
    print(f"stop it (it holds its node until the time limit): just cancel {job_id}")
    return 0


def wait_for_login(job_id: str, log: Path, wait_s: float) -> tuple[str | None, str | None]:
    """Watch the log until the URL appears; fail with the log's tail if the job ends first."""
    deadline = time.monotonic() + wait_s
    last_poll = 0.0
    device = None
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if device is None and (m := _DEVICE.search(text)):
            device = m.group(0).strip()
            print(device, flush=True)
            print("(log in there; waiting for the tunnel URL ...)", flush=True)
        if u := _URL.search(text):
            return device, u.group(0)
        now = time.monotonic()
        if now - last_poll >= jobs.poll_seconds():
            last_poll = now
            state = slurmcmd.job_state(job_id)
            if state is None or state in ("FAILED", "CANCELLED", "COMPLETED", "TIMEOUT"):
                tail = " | ".join(text.strip().splitlines()[-3:]) or "no output"
                raise NeoxError(f"tunnel job {job_id} ended before printing a URL ({tail}); see {log}")
        time.sleep(1.0)
    raise NeoxError(f"tunnel job {job_id} printed no URL within {wait_s:.0f} s; it may still be queued: just logs {job_id}")
