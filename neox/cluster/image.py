"""The Apptainer image: where it is, what is in it, and ``just build-image``.

The build runs ``apptainer build --fakeroot`` with ``containers/versions.env`` as the build-arg
file (every version in one place; ``KEY=value`` arguments override one), on a compute node
through Slurm (login nodes have no GPU and little memory for nvcc) or here with ``local=true``.
The Apptainer cache and temporary tree go to project storage (``APPTAINER_CACHEDIR``,
``APPTAINER_TMPDIR``: a ~25 GB build fills a home quota). Next to ``neox.sif`` the build writes
``neox.sif.json``: the versions, the base image and its registry digest, the git commit, and the
path of the image's libnccl (NCCL ``system`` mode binds the host's over it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from neox.cluster import versions
from neox.cluster.profile import REPO, SiteProfile
from neox.errors import NeoxError

DEF_FILE = REPO / "containers" / "neox.def"
# What install.sh records inside the image (read with `apptainer exec <sif> cat`).
IMAGE_INFO = "/opt/neox/image.json"


def resolve_sif(profile: SiteProfile, base: Path) -> str:
    if not profile.sif:
        raise NeoxError(
            f"site profile {profile.name} runs in the image but NEOX_SIF is not set; "
            "export NEOX_SIF=/path/to/neox.sif (build it with `just build-image`)"
        )
    sif = (base / os.path.expanduser(profile.sif)).resolve()
    if not sif.is_file():
        raise NeoxError(f"NEOX_SIF={sif} does not exist; build the image with `just build-image` or fix the path")
    return str(sif)


def provenance_path(sif: str | Path) -> Path:
    return Path(str(sif) + ".json")


def default_nccl_lib(v: dict[str, str] | None = None) -> str:
    """Where torch's NCCL (the nvidia-nccl-cu12 wheel) lives in the image's venv."""
    v = v or versions.read_versions()
    return f"{v['VENV']}/lib/python{v['PYTHON_VERSION']}/site-packages/nvidia/nccl/lib/libnccl.so.2"


def image_nccl_lib(sif: str) -> str:
    """The image's libnccl.so.2 path: from the provenance file when the build wrote one."""
    prov = provenance_path(sif)
    if prov.is_file():
        try:
            lib = json.loads(prov.read_text()).get("image", {}).get("nccl_library")
        except json.JSONDecodeError:
            raise NeoxError(f"{prov} is not valid JSON; rebuild the image or delete the file") from None
        if lib:
            return lib
    return default_nccl_lib()


# --- registry digest -------------------------------------------------------------------------------

_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def split_reference(ref: str) -> tuple[str, str, str]:
    """``nvidia/cuda:12.6.3-...`` -> (registry, repository, tag); Docker Hub by default."""
    name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    first = name.split("/")[0]
    if "." in first or ":" in first or first == "localhost":
        registry, repo = first, name.split("/", 1)[1]
    else:
        registry, repo = "registry-1.docker.io", name if "/" in name else f"library/{name}"
    return registry, repo, tag


def pinned_reference(ref: str, digest: str) -> str:
    """``name:tag`` + digest -> ``name@digest`` (Apptainer refuses a tag and a digest together)."""
    last = ref.split("/")[-1]
    name = ref[: len(ref) - len(last)] + last.split(":")[0]
    return f"{name}@{digest}"


def registry_digest(ref: str, *, timeout: float = 20.0) -> str:
    """The manifest (list) digest a tag points to now, from the registry's HTTP API."""
    registry, repo, tag = split_reference(ref)
    headers = {"Accept": _ACCEPT}
    if registry == "registry-1.docker.io":
        token_url = f"https://auth.docker.io/token?service=registry.docker.io&scope=repository:{repo}:pull"
        with urllib.request.urlopen(token_url, timeout=timeout) as resp:
            headers["Authorization"] = f"Bearer {json.load(resp)['token']}"
    req = urllib.request.Request(f"https://{registry}/v2/{repo}/manifests/{tag}", headers=headers, method="HEAD")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        digest = resp.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        raise NeoxError(f"registry {registry} returned no digest for {ref}")
    return digest


# --- build -------------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_build_args(words: list[str]) -> dict[str, str]:
    """``KEY=value`` overrides of versions.env; unknown keys are errors (a typo would be ignored)."""
    known = versions.read_versions()
    out = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq:
            raise NeoxError(f"build argument {w!r} is not KEY=value (e.g. TORCH_VERSION=2.10.0)")
        if key not in known and key != "GIT_COMMIT":
            raise NeoxError(f"build argument {key} is not in containers/versions.env; known: {', '.join(sorted(known))}")
        out[key] = value
    return out


def build_command(sif: Path, overrides: dict[str, str], *, fakeroot: bool = True) -> list[str]:
    cmd = ["apptainer", "build"]
    if fakeroot:
        cmd.append("--fakeroot")
    cmd += ["--build-arg-file", str(REPO / "containers" / "versions.env")]
    for key, value in overrides.items():
        cmd += ["--build-arg", f"{key}={value}"]
    return [*cmd, str(sif), str(DEF_FILE)]


def build_environment(cache_dir: Path) -> dict[str, str]:
    return {
        "APPTAINER_CACHEDIR": str(cache_dir / "cache"),
        "APPTAINER_TMPDIR": str(cache_dir / "tmp"),
        "TMPDIR": str(cache_dir / "tmp"),
    }


def build_local(sif: Path, overrides: dict[str, str], cache_dir: Path) -> int:
    """Build here (a compute node, or any machine with apptainer), then write the provenance."""
    if shutil.which("apptainer") is None:
        raise NeoxError("apptainer is not on PATH; build on the cluster (`just build-image`) or install Apptainer")
    v = versions.read_versions()
    args = dict(overrides)
    base = args.get("BASE_IMAGE", v["BASE_IMAGE"])
    digest = ""
    try:
        digest = registry_digest(base)
        # Build from the digest, so the recorded base is exactly what was built.
        args["BASE_IMAGE"] = pinned_reference(base, digest)
    except (OSError, urllib.error.URLError, NeoxError) as err:
        print(f"neox: warning: could not look up the digest of {base} ({err}); the provenance will say so", file=sys.stderr)
    args.setdefault("GIT_COMMIT", git_commit())
    env = {**os.environ, **build_environment(cache_dir)}
    for key in ("APPTAINER_CACHEDIR", "APPTAINER_TMPDIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    sif.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(sif, args)
    print("+ " + shlex.join(cmd), flush=True)
    started = _dt.datetime.now()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    if rc != 0:
        raise NeoxError(f"apptainer build failed (exit {rc}); the log above shows the failing step")
    write_provenance(sif, {**v, **args, "BASE_IMAGE": base}, base_digest=digest, started=started)
    print(f"built {sif} and {provenance_path(sif)}")
    return 0


def write_provenance(sif: Path, build_args: dict[str, str], *, base_digest: str, started: _dt.datetime) -> dict:
    inside = {}
    proc = subprocess.run(["apptainer", "exec", str(sif), "cat", IMAGE_INFO], capture_output=True, text=True)
    if proc.returncode == 0:
        inside = json.loads(proc.stdout)
    record = {
        "sif": str(sif),
        "built": started.isoformat(timespec="seconds"),
        "git_commit": build_args.get("GIT_COMMIT", "unknown"),
        "base_image": build_args["BASE_IMAGE"],
        "base_digest": base_digest or "unknown (registry not reachable at build time)",
        "build_args": {k: v for k, v in build_args.items() if k not in ("GIT_COMMIT",)},
        "image": inside,
    }
    tmp = provenance_path(sif).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(provenance_path(sif))
    return record
