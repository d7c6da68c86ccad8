"""``neox slurm run -- <command>``: any command on a compute node, in the image when the site has one.

Also the vehicle of ``just build-image`` on the cluster (the build runs on the host of a compute
node, outside the image) and of ``just nccl-test``. Each job gets a run directory like training.
"""

from __future__ import annotations

import sys
from pathlib import Path

from neox.cluster import image, launch, render, slurmcmd, submit
from neox.cluster.profile import SiteProfile
from neox.errors import NeoxError


def render_run(
    profile: SiteProfile,
    shape: render.JobShape,
    command: list[str],
    *,
    in_image: bool,
    tasks_per_node: int = 1,
    gpus_per_node: int | None = None,
    image_nccl_lib: str = "",
) -> str:
    gpus = profile.gpus_per_node if gpus_per_node is None else gpus_per_node
    prefix = launch.image_words(profile, image_nccl_lib, gpus=gpus > 0) if in_image else []
    where = "in the image" if prefix else "on the host (no container)"
    return render.render(
        "run.sbatch",
        {
            "job_name": shape.job_name,
            "nodes": str(shape.nodes),
            "tasks_per_node": str(tasks_per_node),
            "cpus_per_task": str(profile.cpus_per_task),
            "time": shape.time,
            "sbatch_extra": render.sbatch_extra(profile, shape, gpus_per_node=gpus),
            "module_load": render.module_load(profile),
            "image": launch.bash_array("IMAGE", prefix, f"The command runs {where}."),
            "srun": launch.format_command(launch.srun_words(profile, tasks_per_node=tasks_per_node)),
            "command": " ".join(launch.quote(w) for w in command),
        },
    )


def submit_command(
    profile: SiteProfile,
    command: list[str],
    *,
    name: str,
    nodes: int = 1,
    time: str | None = None,
    partition: str | None = None,
    account: str | None = None,
    in_image: bool = True,
    tasks_per_node: int = 1,
    gpus_per_node: int | None = None,
    runs_dir: str | None = None,
    dry_run: bool = False,
) -> tuple[Path, str | None]:
    """Write a run directory for ``command`` and submit it; (run dir, job id or None when dry)."""
    if not command:
        raise NeoxError("no command given; usage: just run -- <command> [args...]")
    base = Path.cwd().resolve()
    sif = image.resolve_sif(profile, base) if (in_image and profile.container == "apptainer") else ""
    shape = render.JobShape(
        nodes=nodes,
        time=time or profile.time,
        partition=profile.partition if partition is None else partition,
        account=profile.account if account is None else account,
        job_name=submit.job_name(name),
    )
    script = render_run(
        profile, shape, command, in_image=in_image, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
        image_nccl_lib=image.image_nccl_lib(sif) if sif else "",
    )
    run_dir = submit.make_run_dir((base / (runs_dir or profile.runs_dir)).resolve(), name)
    env = {"NEOX_PYTHON": sys.executable}
    if sif:
        env["NEOX_SIF"] = sif
    meta = {"kind": name, "name": name, "run_dir": str(run_dir), "profile": profile.name, "nodes": nodes,
            "command": command, "jobs": []}
    render.write_run_dir(run_dir, job_script=script, profile=profile, env=env, meta=meta)
    if dry_run:
        return run_dir, None
    job_id = slurmcmd.sbatch(run_dir / "job.sbatch")
    submit.record_job(run_dir, job_id, chain=0)
    return run_dir, job_id
