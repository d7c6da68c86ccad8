"""Fill the ``slurm/*.sbatch`` templates and write a run directory.

A run directory holds everything a job needs and everything that records it:
``job.sbatch`` (the rendered template; readable, with no user paths: it finds its files through
``$SLURM_SUBMIT_DIR``), ``site.env`` (a copy of the site profile), ``run.env`` (this run's
absolute paths: the Python that submitted it, the image), ``run.json`` (what was asked and the
job ids of every chain link) and, for training, ``config.yml`` (the merged config).

Templates use ``{{name}}`` placeholders; a missing or unknown name is an error, so a template
and its renderer cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from neox.cluster.profile import REPO, SiteProfile
from neox.errors import NeoxError

TEMPLATES = REPO / "slurm"
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill(template: str, values: dict[str, str], *, name: str = "template") -> str:
    """Replace every ``{{key}}``; unknown placeholders and unused values are errors."""
    used: set[str] = set()

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise NeoxError(f"{name}: placeholder {{{{{key}}}}} has no value; the renderer and template disagree")
        used.add(key)
        return values[key]

    text = _PLACEHOLDER.sub(sub, template)
    unused = set(values) - used
    if unused:
        raise NeoxError(f"{name}: values {sorted(unused)} are not used by the template; the renderer and template disagree")
    # Empty optional blocks leave blank lines; keep the script tidy.
    return re.sub(r"\n{3,}", "\n\n", text)


def render(template: str, values: dict[str, str]) -> str:
    path = TEMPLATES / template
    return fill(path.read_text(), values, name=str(path.relative_to(REPO)))


@dataclass(frozen=True)
class JobShape:
    """What one job asks Slurm for."""

    nodes: int
    time: str
    partition: str
    account: str
    job_name: str


def sbatch_extra(profile: SiteProfile, shape: JobShape, *, gpus_per_node: int | None = None, train: bool = False) -> str:
    """``#SBATCH`` lines that depend on the site: GPUs, partition, account, and (training jobs) site extras."""
    lines = []
    gpus = profile.gpus_per_node if gpus_per_node is None else gpus_per_node
    if gpus:
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    if shape.partition:
        lines.append(f"#SBATCH --partition={shape.partition}")
    if shape.account:
        lines.append(f"#SBATCH --account={shape.account}")
    for arg in profile.sbatch_args if train else ():
        lines.append(f"#SBATCH {arg}")
    return "\n".join(lines)


def module_load(profile: SiteProfile) -> str:
    if not profile.modules:
        return "# (this site profile loads no modules)"
    return f"module load {' '.join(shlex.quote(m) for m in profile.modules)}"


def preflight_block(profile: SiteProfile) -> str:
    """Checks run once on the first node before the ranks start (container profiles only)."""
    if profile.container != "apptainer":
        return "# No container and no network plugin in this profile: nothing to check before launch."
    return (
        "# Refuse to start when the bound NCCL lacks a symbol torch needs, or when NCCL would not load\n"
        "# the OFI plugin (never a silent fallback to TCP sockets).\n"
        '"${NEOX[@]}" cluster preflight \\\n'
        '    || exec "$NEOX_PYTHON" -m neox.cli.main slurm next --run-dir "$RUN_DIR" --stage preflight --status $?'
    )


def run_env(values: dict[str, str]) -> str:
    lines = ["# This run's absolute paths, written by neox slurm; sourced by job.sbatch."]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_run_dir(run_dir: Path, *, job_script: str, profile: SiteProfile, env: dict[str, str], meta: dict) -> None:
    """Write the job files (the directory must exist and be empty of them)."""
    (run_dir / "job.sbatch").write_text(job_script)
    (run_dir / "site.env").write_text(profile.path.read_text())
    (run_dir / "run.env").write_text(run_env(env))
    write_meta(run_dir, meta)


def read_meta(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise NeoxError(f"{run_dir} is not a neox run directory (no run.json)")
    return json.loads(path.read_text())


def write_meta(run_dir: Path, meta: dict) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(run_dir / "run.json")
