"""``neox slurm submit``: check a training run on the login node, then queue it.

Everything that can fail is checked before anything is queued: the merged config validates for
the job's world size (nodes x ranks per node), every data prefix has its ``.bin`` and ``.idx``,
the tokenizer files exist, ``load`` (when given) exists and ``save`` is writable. Every path in
the config becomes absolute, because the job runs from its run directory.

Resuming: when the config sets no ``load``, it is set to ``save``, so a chained link or a
requeued job (node fault) resumes from ``save/latest``; when it sets no ``save``, checkpoints go to
``<run dir>/checkpoints``. Upstream GPT-NeoX leaves both to the user; a walltime-chained run needs them.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neox.cluster import image, launch, render, slurmcmd
from neox.cluster.profile import SiteProfile
from neox.errors import NeoxError

# Config keys that name files or directories (resolved to absolute paths).
PATH_KEYS = ("vocab_file", "merge_file", "save", "load", "log_dir", "tensorboard_dir", "sample_input_file")
WEIGHT_SUFFIX = "_weights"

SUBMIT_KEYS = ("nodes", "time", "partition", "account", "profile", "name", "chains")
_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")


@dataclass
class SubmitArgs:
    configs: list[str]
    overrides: list[str]
    nodes: int
    profile: SiteProfile
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    name: str | None = None
    max_chains: int | None = None
    runs_dir: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def split_args(words: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """``cfg.yml more.yml nodes=2 time=1:00:00 train_iters=20`` -> configs, overrides, submit options."""
    configs, overrides, options = [], [], {}
    for w in words:
        key, eq, value = w.partition("=")
        if eq and key in SUBMIT_KEYS:
            options[key] = value
        elif eq:
            overrides.append(w)
        else:
            configs.append(w)
    if not configs:
        raise NeoxError("no config file given; usage: just train cfg.yml [more.yml] nodes=N [time=HH:MM:SS] [key=value ...]")
    return configs, overrides, options


def is_path_key(key: str) -> bool:
    return key in PATH_KEYS or (key.endswith(("data_path", "data_paths")) and not key.endswith(WEIGHT_SUFFIX))


def absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value:
        return str((base / os.path.expanduser(value)).resolve()) if not value.startswith("s3://") else value
    if isinstance(value, list):
        return [absolute(v, base) for v in value]
    return value


def merged_values(configs: list[str], overrides: list[str], base: Path) -> dict[str, Any]:
    """The merged top-level keys as the user wrote them (files then overrides), paths made absolute."""
    from neox.config.loader import apply_overrides, read_files

    raw = read_files([str(base / c) if not os.path.isabs(c) else c for c in configs])
    apply_overrides(raw, overrides)
    return {k: (absolute(v, base) if is_path_key(k) else v) for k, v in raw.values.items()}


def check_data(values: dict[str, Any]) -> None:
    """Every dataset prefix has .bin and .idx; tokenizer files and ``load`` exist."""
    for key, value in values.items():
        if not key.endswith(("data_path", "data_paths")) or value is None:
            continue
        for prefix in value if isinstance(value, list) else [value]:
            for ext in (".bin", ".idx"):
                if not os.path.isfile(prefix + ext):
                    raise NeoxError(
                        f"{key}: {prefix}{ext} does not exist; give the dataset prefix without .bin/.idx "
                        "(build it with `just prepare`)"
                    )
    for key in ("vocab_file", "merge_file"):
        if values.get(key) and not os.path.isfile(values[key]):
            raise NeoxError(f"{key}: {values[key]} does not exist; fix the path in the config or on the command line")
    load = values.get("load")
    if load and load != values.get("save") and not os.path.isdir(load):
        raise NeoxError(f"load: {load} does not exist; point load at a checkpoint directory or drop it")


def check_writable(directory: str) -> None:
    """Create ``directory`` if needed and prove a file can be written there."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".neox-write-test-"):
            pass
    except OSError as err:
        raise NeoxError(f"save: cannot write to {directory} ({err.strerror}); choose a directory you can write") from None


def make_run_dir(runs_dir: Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / f"{name}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = runs_dir / f"{name}-{stamp}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def job_name(name: str) -> str:
    return (name if name.startswith("neox") else f"neox-{name}")[:40]


def run_name(configs: list[str], name: str | None) -> str:
    text = name or Path(configs[-1]).stem
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
    if not clean:
        raise NeoxError(f"name={text!r} has no usable characters; use letters, digits, '-', '_' or '.'")
    return clean[:40]


def prepare(args: SubmitArgs) -> tuple[Path, dict]:
    """Validate and write the run directory; returns it and its run.json (nothing is queued)."""
    import neox.config

    base = Path.cwd().resolve()
    profile = args.profile
    if args.nodes < 1:
        raise NeoxError(f"nodes={args.nodes}: a job needs at least one node")
    time = args.time or profile.time
    if not _TIME.match(time):
        raise NeoxError(f"time={time!r} is not a Slurm time; use minutes, HH:MM:SS or D-HH:MM:SS")
    world = args.nodes * profile.tasks_per_node
    values = merged_values(args.configs, args.overrides, base)
    sif = image.resolve_sif(profile, base) if profile.container == "apptainer" else ""

    runs_dir = (base / (args.runs_dir or profile.runs_dir)).resolve()
    name = run_name(args.configs, args.name)
    # Validate before creating anything: the config as the user wrote it (errors name file:line),
    # for the job's world size, then the files it names.
    neox.config.load([str(base / c) for c in args.configs], args.overrides, world_size=world)
    check_data(values)
    if values.get("save"):
        check_writable(values["save"])

    run_dir = make_run_dir(runs_dir, name)
    if values.get("save") is None:
        values["save"] = str(run_dir / "checkpoints")
    values.setdefault("load", values["save"])
    check_writable(values["save"])
    (run_dir / "config.yml").write_text(
        "# Merged by neox slurm submit from: " + " ".join(args.configs)
        + (" with " + " ".join(args.overrides) if args.overrides else "")
        + "\n" + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
    )

    shape = render.JobShape(
        nodes=args.nodes,
        time=time,
        partition=profile.partition if args.partition is None else args.partition,
        account=profile.account if args.account is None else args.account,
        job_name=job_name(name),
    )
    nccl_lib = image.image_nccl_lib(sif) if sif else ""
    script = render_train(profile, shape, nccl_lib)
    max_chains = profile.max_chains if args.max_chains is None else args.max_chains
    meta = {
        "kind": "train",
        "name": name,
        "run_dir": str(run_dir),
        "profile": profile.name,
        "nodes": args.nodes,
        "world_size": world,
        "configs": [str((base / c).resolve()) for c in args.configs],
        "overrides": args.overrides,
        "save": values["save"],
        "train_iters": values.get("train_iters"),
        "max_chains": max_chains,
        "jobs": [],
    }
    env = {"NEOX_PYTHON": sys.executable}
    if sif:
        env["NEOX_SIF"] = sif
    render.write_run_dir(run_dir, job_script=script, profile=profile, env=env, meta=meta)
    return run_dir, meta


def render_train(profile: SiteProfile, shape: render.JobShape, image_nccl_lib: str) -> str:
    how = "in the image" if profile.container == "apptainer" else "with the Python that submitted the job (no container)"
    return render.render(
        "train.sbatch",
        {
            "job_name": shape.job_name,
            "nodes": str(shape.nodes),
            "tasks_per_node": str(profile.tasks_per_node),
            "cpus_per_task": str(profile.cpus_per_task),
            "time": shape.time,
            "signal_lead": str(profile.signal_lead),
            "sbatch_extra": render.sbatch_extra(profile, shape, train=True),
            "module_load": render.module_load(profile),
            "neox": launch.bash_array("NEOX", launch.neox_words(profile, image_nccl_lib), f"How every rank starts neox: {how}."),
            "preflight": render.preflight_block(profile),
            "srun": launch.format_command(launch.srun_words(profile)),
        },
    )


def submit(args: SubmitArgs, *, dry_run: bool = False) -> int:
    run_dir, meta = prepare(args)
    print(f"run directory: {run_dir}")
    if dry_run:
        print(f"rendered {run_dir / 'job.sbatch'} (not submitted: --dry-run)")
        return 0
    job_id = slurmcmd.sbatch(run_dir / "job.sbatch", extra=["--export=ALL,NEOX_CHAIN=0"])
    record_job(run_dir, job_id, chain=0)
    print(f"submitted job {job_id}: {meta['nodes']} node(s), {meta['world_size']} rank(s), profile {meta['profile']}")
    print(f"log:    {run_dir / f'slurm-{job_id}.out'}")
    print(f"follow: just logs {job_id}    (state: just status, stop: just cancel {job_id})")
    return 0


def record_job(run_dir: Path, job_id: str, *, chain: int) -> None:
    meta = render.read_meta(run_dir)
    meta["jobs"].append({"id": job_id, "chain": chain, "submitted": _dt.datetime.now().isoformat(timespec="seconds")})
    render.write_meta(run_dir, meta)
    # An index of runs by job id, so `just logs <job>` finds the run directory of any link.
    index = Path(meta["run_dir"]).parent / ".jobs"
    index.mkdir(exist_ok=True)
    (index / job_id).write_text(str(run_dir) + "\n")
