"""Site profiles: ``slurm/sites/<name>.env``, everything site-specific in one file.

A profile is read twice: by Python here (to render the job: nodes, GPUs, binds, the container
line) and by bash in the job (``source``: module loads and the exported NCCL/libfabric
variables). So it is restricted to a subset both read the same way: ``[export] KEY=VALUE``
lines, values as one shell word (quoted or not), ``${NAME}`` and ``${NAME:-default}``
expansions of the environment or of earlier keys, and ``#`` comments. Keys named ``NEOX_*``
configure the launcher; exported keys are the job's environment (and pass into the container).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from neox.errors import NeoxError

REPO = Path(__file__).resolve().parents[2]
SITES_DIR = REPO / "slurm" / "sites"

_LINE = re.compile(r"^(export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_EXPAND = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")

NCCL_MODES = ("image", "system")
CONTAINERS = ("apptainer", "none")


@dataclass(frozen=True)
class SiteProfile:
    """What a site profile says, typed. Field docs name the profile key."""

    name: str
    path: Path
    container: str = "none"
    """NEOX_CONTAINER: ``apptainer`` (ranks run in the image) or ``none`` (plain processes)."""
    sif: str = ""
    """NEOX_SIF: the image file (absolute after resolution); needed when container=apptainer."""
    gpus_per_node: int = 0
    """NEOX_GPUS_PER_NODE: GPUs requested per node (0: a CPU cluster, gloo)."""
    tasks_per_node: int = 1
    """NEOX_TASKS_PER_NODE: ranks per node; one per GPU when GPUs are used."""
    cpus_per_task: int = 1
    """NEOX_CPUS_PER_TASK: CPU cores per rank."""
    partition: str = ""
    """NEOX_PARTITION: default partition (empty: the cluster default)."""
    account: str = ""
    """NEOX_ACCOUNT: project to charge (empty: the user's default)."""
    time: str = "01:00:00"
    """NEOX_TIME: default walltime of one job link."""
    signal_lead: int = 300
    """NEOX_SIGNAL_LEAD: seconds before the time limit at which Slurm signals the ranks (USR1)."""
    max_chains: int = 10
    """NEOX_MAX_CHAINS: how many follow-on jobs a run may submit after time-limit stops."""
    runs_dir: str = "runs"
    """NEOX_RUNS_DIR: where run directories are created (relative: to the current directory)."""
    modules: tuple[str, ...] = ()
    """NEOX_MODULES: environment modules the job loads on the host before launching."""
    nccl: str = "image"
    """NEOX_NCCL: ``image`` (the container's NCCL) or ``system`` (the host's, bound over it)."""
    host_nccl_lib: str = ""
    """NEOX_HOST_NCCL_LIB: the host libnccl.so.2 (system mode)."""
    ofi_plugin: str = ""
    """NEOX_OFI_PLUGIN: the host aws-ofi-nccl plugin library; empty: no network plugin required."""
    host_libfabric: str = ""
    """NEOX_HOST_LIBFABRIC: host libfabric prefix (with lib64/), bound under /host."""
    host_libs: tuple[str, ...] = ()
    """NEOX_HOST_LIBS: single host libraries (libcxi, libnl) exposed in a dedicated directory."""
    binds: tuple[str, ...] = ()
    """NEOX_BINDS: file systems to bind into the container (``src[:dst[:opts]]``)."""
    srun_args: tuple[str, ...] = ()
    """NEOX_SRUN_ARGS: extra srun arguments for the training step."""
    sbatch_args: tuple[str, ...] = ()
    """NEOX_SBATCH_ARGS: extra ``#SBATCH`` options of training jobs (e.g. ``--exclusive``)."""
    exports: dict[str, str] = field(default_factory=dict)
    """Every exported variable, in file order: the job's environment."""

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_node > 0


def profile_path(name_or_path: str) -> Path:
    """``isambard-ai`` -> ``slurm/sites/isambard-ai.env``; a path to a ``.env`` file is taken as is."""
    p = Path(name_or_path)
    if p.suffix == ".env" or "/" in name_or_path:
        if not p.is_file():
            raise NeoxError(f"site profile {name_or_path} does not exist; pass a file or one of: {', '.join(available())}")
        return p.resolve()
    p = SITES_DIR / f"{name_or_path}.env"
    if not p.is_file():
        raise NeoxError(f"unknown site profile {name_or_path!r}; choose one of: {', '.join(available())} (slurm/sites/*.env)")
    return p


def available() -> list[str]:
    return sorted(p.stem for p in SITES_DIR.glob("*.env"))


def parse_env_file(path: Path, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The values of a profile as bash would set them, and the names it exports (in order)."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, str] = {}
    exported: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise NeoxError(f"{path}:{lineno}: expected [export] KEY=VALUE, got {raw.strip()!r}")
        is_export, key, rest = bool(m.group(1)), m.group(2), m.group(3)
        try:
            words = shlex.split(rest, comments=True, posix=True)
        except ValueError as err:
            raise NeoxError(f"{path}:{lineno}: cannot parse the value of {key}: {err}") from None
        if len(words) > 1:
            raise NeoxError(f"{path}:{lineno}: the value of {key} must be one word; quote it")
        # Single-quoted text is literal in bash; only expand what was not single-quoted.
        value = words[0] if words else ""
        if not rest.lstrip().startswith("'"):
            value = _expand(value, {**env, **values}, path, lineno)
        values[key] = value
        if is_export and key not in exported:
            exported.append(key)
    return values, exported


def _expand(text: str, scope: Mapping[str, str], path: Path, lineno: int) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        if m.group(2) is not None:
            got = scope.get(name, "")
            # bash expands the default too (`${A:-$B/x}`); defaults hold no braces here.
            return got if got else _EXPAND.sub(sub, m.group(3))
        return scope.get(name, "")

    return _EXPAND.sub(sub, text)


def load(name_or_path: str, environ: Mapping[str, str] | None = None) -> SiteProfile:
    """Read and check a site profile (one-line errors name the file and key)."""
    path = profile_path(name_or_path)
    values, exported = parse_env_file(path, environ)

    def get(key: str, default: str = "") -> str:
        return values.get(key, default)

    def integer(key: str, default: int) -> int:
        text = get(key, str(default)) or str(default)
        try:
            n = int(text)
        except ValueError:
            raise NeoxError(f"{path}: {key}={text!r} is not an integer") from None
        if n < 0:
            raise NeoxError(f"{path}: {key}={n} must be >= 0")
        return n

    def words(key: str) -> tuple[str, ...]:
        return tuple(shlex.split(get(key)))

    container = get("NEOX_CONTAINER", "none") or "none"
    if container not in CONTAINERS:
        raise NeoxError(f"{path}: NEOX_CONTAINER={container!r}; use one of {', '.join(CONTAINERS)}")
    nccl = get("NEOX_NCCL", "image") or "image"
    if nccl not in NCCL_MODES:
        raise NeoxError(f"{path}: NEOX_NCCL={nccl!r}; use 'image' (the container's NCCL) or 'system' (the host's)")
    gpus = integer("NEOX_GPUS_PER_NODE", 0)
    tasks = integer("NEOX_TASKS_PER_NODE", gpus or 1)
    if tasks < 1:
        raise NeoxError(f"{path}: NEOX_TASKS_PER_NODE must be >= 1")
    if gpus and tasks != gpus:
        raise NeoxError(
            f"{path}: NEOX_TASKS_PER_NODE={tasks} but NEOX_GPUS_PER_NODE={gpus}; neox runs one rank per GPU, "
            "so drop NEOX_TASKS_PER_NODE or make them equal"
        )
    if nccl == "system" and container == "apptainer" and not get("NEOX_HOST_NCCL_LIB"):
        raise NeoxError(f"{path}: NEOX_NCCL=system needs NEOX_HOST_NCCL_LIB (the host libnccl.so.2 to bind)")
    return SiteProfile(
        name=path.stem,
        path=path,
        container=container,
        sif=get("NEOX_SIF"),
        gpus_per_node=gpus,
        tasks_per_node=tasks,
        cpus_per_task=max(1, integer("NEOX_CPUS_PER_TASK", 1)),
        partition=get("NEOX_PARTITION"),
        account=get("NEOX_ACCOUNT"),
        time=get("NEOX_TIME", "01:00:00") or "01:00:00",
        signal_lead=integer("NEOX_SIGNAL_LEAD", 300),
        max_chains=integer("NEOX_MAX_CHAINS", 10),
        runs_dir=get("NEOX_RUNS_DIR", "runs") or "runs",
        modules=words("NEOX_MODULES"),
        nccl=nccl,
        host_nccl_lib=get("NEOX_HOST_NCCL_LIB"),
        ofi_plugin=get("NEOX_OFI_PLUGIN"),
        host_libfabric=get("NEOX_HOST_LIBFABRIC"),
        host_libs=words("NEOX_HOST_LIBS"),
        binds=words("NEOX_BINDS"),
        srun_args=words("NEOX_SRUN_ARGS"),
        sbatch_args=words("NEOX_SBATCH_ARGS"),
        exports={k: values[k] for k in exported},
    )


def default_name(environ: Mapping[str, str] | None = None) -> str:
    """The profile used when none is named: ``$NEOX_SITE``, else ``local``."""
    env = os.environ if environ is None else environ
    return env.get("NEOX_SITE") or "local"
