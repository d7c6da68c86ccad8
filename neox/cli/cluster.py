"""`neox cluster`: node-side checks and tools: preflight, all-reduce test, image build, VS Code CLI."""

from __future__ import annotations

from pathlib import Path

from neox.errors import NeoxError


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="node-side checks and tools: preflight, allreduce, build-image, install-vscode-cli")
    s = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    q = s.add_parser("preflight", help="(run by job.sbatch in the image) NCCL symbols and OFI plugin checks")
    q.add_argument("--no-probe", action="store_true", help="skip the one-GPU NCCL init that shows the network choice")
    q.set_defaults(handler=_preflight)

    q = s.add_parser("allreduce", help="(run under srun) all-reduce bus bandwidth and what it means")
    q.add_argument("--max-mib", type=int, default=None, help="largest message size in MiB")
    q.add_argument("--iters", type=int, default=10)
    q.set_defaults(handler=_allreduce)

    q = s.add_parser("build-image", help="build the Apptainer image (on a compute node through Slurm, or here)")
    q.add_argument("words", nargs="*", metavar="KEY=value",
                   help="local=true, sif=PATH, cache=DIR, time=, partition=, account=, profile=, "
                        "or a containers/versions.env KEY=value override")
    q.add_argument("--dry-run", action="store_true", help="print what would run")
    q.set_defaults(handler=_build_image)

    q = s.add_parser("install-vscode-cli", help="download the standalone VS Code CLI into a per-architecture directory")
    q.add_argument("words", nargs="*", metavar="arch=aarch64|x86_64")
    q.set_defaults(handler=_install_vscode)


def _preflight(args) -> int:
    from neox.cluster import preflight

    for line in preflight.run(probe=not args.no_probe):
        print(f"preflight: {line}")
    return 0


def _allreduce(args) -> int:
    from neox.cluster import allreduce

    return allreduce.main(args.max_mib, args.iters)


BUILD_OPTIONS = ("local", "sif", "cache", "time", "partition", "account", "profile")


def _build_image(args) -> int:
    import shlex
    import sys

    from neox.cluster import image, profile, runcmd

    options, build_args = {}, []
    for w in args.words:
        key, eq, value = w.partition("=")
        if eq and key in BUILD_OPTIONS:
            options[key] = value
        else:
            build_args.append(w)
    overrides = image.parse_build_args(build_args)
    sif = Path(options.get("sif", "neox.sif")).expanduser().resolve()
    cache = Path(options.get("cache") or (sif.parent / ".apptainer")).expanduser().resolve()
    if options.get("local", "false") == "true":
        if args.dry_run:
            print(shlex.join(image.build_command(sif, overrides)))
            return 0
        return image.build_local(sif, overrides, cache)
    prof = profile.load(options.get("profile") or profile.default_name())
    # On the cluster: this same command with local=true, on the host of a compute node (outside
    # the image), with one GPU so nvcc-built code can be smoke-tested by %test.
    command = ['"$NEOX_PYTHON"', "-m", "neox.cli.main", "cluster", "build-image", "local=true", f"sif={sif}",
               f"cache={cache}", *build_args]
    run_dir, job = runcmd.submit_command(
        prof, command, name="build-image", time=options.get("time", "04:00:00"), partition=options.get("partition"),
        account=options.get("account"), in_image=False, gpus_per_node=min(prof.gpus_per_node, 1), dry_run=args.dry_run,
    )
    if job is None:
        print(f"rendered {run_dir / 'job.sbatch'} (not submitted: --dry-run)")
        return 0
    print(f"submitted image build job {job}: {sif} (+ {sif.name}.json); log: {run_dir / f'slurm-{job}.out'}")
    print(f"follow: just logs {job}", file=sys.stdout)
    return 0


def _install_vscode(args) -> int:
    from neox.cluster import tunnel

    arch = None
    for w in args.words:
        key, eq, value = w.partition("=")
        if key != "arch" or not eq:
            raise NeoxError(f"unexpected argument {w!r}; use arch=aarch64 or arch=x86_64")
        arch = value
    tunnel.install_cli(arch)
    return 0
