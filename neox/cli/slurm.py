"""`neox slurm`: submit training runs and other jobs, follow them, chain them (logic in neox.cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path

from neox.errors import NeoxError


def add_parser(sub) -> None:
    p = sub.add_parser("slurm", help="submit and follow Slurm jobs: train, run, tunnel, nccl-test, status, logs, cancel")
    s = p.add_subparsers(dest="slurm_command", metavar="ACTION", required=True)

    def site(q):
        q.add_argument("--profile", help="site profile (slurm/sites/<name>.env or a path; default $NEOX_SITE or 'local')")

    q = s.add_parser("submit", help="validate a config and submit a training job (just train ... nodes=N)")
    q.add_argument("words", nargs="+", metavar="ARG",
                   help="config files, key=value overrides, and nodes= time= partition= account= name= chains= profile=")
    q.add_argument("--dry-run", action="store_true", help="write the run directory but do not submit")
    site(q)
    q.set_defaults(handler=_submit)

    q = s.add_parser("run", help="run a command on a compute node (in the image when the site has one)")
    q.add_argument("words", nargs=argparse.REMAINDER, metavar="[nodes=N time=.. gpus=..] -- COMMAND")
    q.add_argument("--dry-run", action="store_true", help="write the run directory but do not submit")
    site(q)
    q.set_defaults(handler=_run)

    q = s.add_parser("tunnel", help="a VS Code tunnel on a compute node; prints the login code and URL")
    q.add_argument("words", nargs="*", metavar="name=.. time=.. partition=.. account=..")
    q.add_argument("--dry-run", action="store_true", help="write the run directory but do not submit")
    site(q)
    q.set_defaults(handler=_tunnel)

    q = s.add_parser("nccl-test", help="all-reduce bandwidth over N nodes: Slingshot or sockets?")
    q.add_argument("words", nargs="*", metavar="nodes=N time=.. partition=..")
    q.add_argument("--dry-run", action="store_true", help="write the run directory but do not submit")
    q.add_argument("--no-wait", action="store_true", help="submit and return")
    site(q)
    q.set_defaults(handler=_nccl_test)

    q = s.add_parser("status", help="your jobs: state, elapsed, iteration, loss, tokens/s, ETA")
    site(q)
    q.set_defaults(handler=_status)

    q = s.add_parser("logs", help="print a job's log and follow it (default: the latest job)")
    q.add_argument("job", nargs="?", help="job id")
    q.add_argument("--no-follow", action="store_true", help="print what is there and return")
    site(q)
    q.set_defaults(handler=_logs)

    q = s.add_parser("cancel", help="cancel a job and its queued chain links")
    q.add_argument("job", help="job id")
    site(q)
    q.set_defaults(handler=_cancel)

    q = s.add_parser("next", help="(run by job.sbatch) finish, chain the next link, or fail after the training step")
    q.add_argument("--run-dir", required=True, type=Path)
    q.add_argument("--status", required=True, type=int)
    q.add_argument("--stage", default="train", choices=["train", "preflight"])
    q.set_defaults(handler=_next)


def _profile(args, options: dict[str, str] | None = None):
    from neox.cluster import profile

    name = (options or {}).pop("profile", None) or args.profile or profile.default_name()
    return profile.load(name)


def _options(words: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or key not in allowed:
            raise NeoxError(f"unexpected argument {w!r}; use {', '.join(k + '=' for k in allowed)}")
        out[key] = value
    return out


def _int(options: dict[str, str], key: str, default: int | None) -> int | None:
    if key not in options:
        return default
    try:
        return int(options[key])
    except ValueError:
        raise NeoxError(f"{key}={options[key]!r} is not an integer") from None


def _runs_dir(prof) -> Path:
    return (Path.cwd() / prof.runs_dir).resolve()


def _submit(args) -> int:
    from neox.cluster import submit

    configs, overrides, options = submit.split_args(args.words)
    prof = _profile(args, options)
    nodes = _int(options, "nodes", None)
    if nodes is None:
        raise NeoxError("nodes=N is required to submit (without it, `just train` runs on this machine)")
    sargs = submit.SubmitArgs(
        configs=configs, overrides=overrides, nodes=nodes, profile=prof, time=options.get("time"),
        partition=options.get("partition"), account=options.get("account"), name=options.get("name"),
        max_chains=_int(options, "chains", None),
    )
    return submit.submit(sargs, dry_run=args.dry_run)


def _run(args) -> int:
    from neox.cluster import runcmd

    words = list(args.words)
    if "--" in words:
        cut = words.index("--")
        opts, command = words[:cut], words[cut + 1:]
    else:
        opts, command = [], words
    options = _options(opts, ("nodes", "time", "partition", "account", "gpus", "profile", "host"))
    prof = _profile(args, options)
    run_dir, job = runcmd.submit_command(
        prof, command, name="run", nodes=_int(options, "nodes", 1), time=options.get("time"),
        partition=options.get("partition"), account=options.get("account"), gpus_per_node=_int(options, "gpus", None),
        in_image=options.get("host", "false") != "true", dry_run=args.dry_run,
    )
    if job is None:
        print(f"rendered {run_dir / 'job.sbatch'} (not submitted: --dry-run)")
    else:
        print(f"submitted job {job}; log: {run_dir / f'slurm-{job}.out'}; follow: just logs {job}")
    return 0


def _tunnel(args) -> int:
    from neox.cluster import tunnel

    options = _options(args.words, ("name", "time", "partition", "account", "profile"))
    prof = _profile(args, options)
    return tunnel.start(prof, name=options.get("name"), time_limit=options.get("time"), partition=options.get("partition"),
                        account=options.get("account"), dry_run=args.dry_run)


def _nccl_test(args) -> int:
    from neox.cluster import jobs, runcmd

    options = _options(args.words, ("nodes", "time", "partition", "account", "profile"))
    prof = _profile(args, options)
    nodes = _int(options, "nodes", 2)
    run_dir, job = runcmd.submit_command(
        prof, [*_neox_words(prof), "cluster", "allreduce"],
        name="nccl-test", nodes=nodes, time=options.get("time", "00:10:00"), partition=options.get("partition"),
        account=options.get("account"), tasks_per_node=prof.tasks_per_node, dry_run=args.dry_run,
    )
    if job is None:
        print(f"rendered {run_dir / 'job.sbatch'} (not submitted: --dry-run)")
        return 0
    print(f"submitted all-reduce test job {job} on {nodes} node(s); log: {run_dir / f'slurm-{job}.out'}", flush=True)
    if args.no_wait:
        return 0
    return jobs.follow(job, _runs_dir(prof))


def _neox_words(prof) -> list[str]:
    """``neox`` inside the image, else the submitting Python's."""
    return ["neox"] if prof.container == "apptainer" else ['"$NEOX_PYTHON"', "-m", "neox.cli.main"]


def _status(args) -> int:
    from neox.cluster import jobs

    return jobs.print_status(_runs_dir(_profile(args)))


def _logs(args) -> int:
    from neox.cluster import jobs

    runs = _runs_dir(_profile(args))
    return jobs.follow(args.job or jobs.latest_job(runs), runs, follow=not args.no_follow)


def _cancel(args) -> int:
    from neox.cluster import jobs

    return jobs.cancel(args.job, _runs_dir(_profile(args)))


def _next(args) -> int:
    from neox.cluster import chain

    return chain.after_step(args.run_dir.resolve(), args.status, stage=args.stage)
