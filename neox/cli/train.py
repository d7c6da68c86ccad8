"""`neox train CONFIG... [key=value ...]`: train a model from upstream GPT-NeoX YAML configs.

One process by default. ``--nproc N`` (or the config's ``num_gpus``) starts N local ranks
without ssh (:mod:`neox.launch.local`); under torchrun or Slurm each process is already a rank
and finds its place from the environment (:mod:`neox.launch.env`). ``--dry-run`` prints the plan
(parameters, FLOPs/token, batch arithmetic, layout, memory) without starting anything.

Exit status: 0 finished, 75 stopped early by SIGUSR1/SIGTERM after saving a checkpoint
(resume from ``latest``), 1 a user error (one line), other values a crash.
"""

from __future__ import annotations

import argparse
import os

from neox.errors import NeoxError


def _options(p) -> None:
    p.add_argument("--nproc", type=int, default=None, help="local ranks to start (default: the config's num_gpus, else 1)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit; nothing is started")
    p.add_argument("--world-size", type=int, default=None, help="world size for --dry-run (default: --nproc or 1)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from NeoX YAML configs (here, or --nproc N local ranks)",
        description=__doc__.split("\n\n")[1],
    )
    # Options may come anywhere among the configs and overrides; the handler re-parses the rest.
    p.add_argument("items", nargs=argparse.REMAINDER, metavar="CONFIG... [KEY=VALUE...]",
                   help="config files in order, then key=value overrides")
    _options(p)
    p.set_defaults(handler=run)


def parse_items(args) -> argparse.Namespace:
    """Options written after the first config (``neox train a.yml --nproc 2 k=v``) are parsed here."""
    p = argparse.ArgumentParser(prog="neox train", add_help=False)
    p.add_argument("items", nargs="*")
    _options(p)
    ns = p.parse_intermixed_args(args.items)
    for name in ("nproc", "world_size"):
        if getattr(ns, name) is None:
            setattr(ns, name, getattr(args, name))
    ns.dry_run = ns.dry_run or args.dry_run
    return ns


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Config paths and ``key=value`` overrides (an item with ``=`` is an override)."""
    configs = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if not configs:
        raise NeoxError("neox train needs at least one config file, e.g. neox train configs/neox-tiny.yml")
    return configs, overrides


def _in_launched_job() -> bool:
    return ("RANK" in os.environ and "WORLD_SIZE" in os.environ) or "SLURM_PROCID" in os.environ


def _config_num_gpus(configs: list[str], overrides: list[str]) -> int | None:
    from neox.config.loader import apply_overrides, read_files

    raw = read_files(configs)
    apply_overrides(raw, overrides)
    value = raw.values.get("num_gpus")
    return int(value) if isinstance(value, int) and value > 0 else None


def run(args) -> int:
    from neox import config as neox_config

    args = parse_items(args)
    configs, overrides = split_items(args.items)
    if args.dry_run:
        from neox.config.plan import format_plan, plan

        cfg = neox_config.load(configs, overrides, world_size=args.world_size or args.nproc or 1)
        print(format_plan(plan(cfg)))
        return 0

    if _in_launched_job():
        if args.nproc not in (None, 1):
            raise NeoxError(
                "--nproc starts local ranks, but this process already is a rank (RANK/WORLD_SIZE or SLURM_PROCID "
                "are set); drop --nproc under torchrun/srun"
            )
        return _train_here(configs, overrides)

    nproc = args.nproc if args.nproc is not None else (_config_num_gpus(configs, overrides) or 1)
    if nproc < 1:
        raise NeoxError(f"--nproc {nproc} must be at least 1")
    if nproc == 1:
        return _train_here(configs, overrides)
    _check_devices(nproc)
    neox_config.load(configs, overrides, world_size=nproc)  # one clear error here rather than one per rank
    from neox.launch import local

    print(f"neox: starting {nproc} local ranks", flush=True)
    return local.run(["train", *configs, *overrides], nproc)


def _check_devices(nproc: int) -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise NeoxError(
            f"{nproc} local ranks need {nproc} GPUs but {torch.cuda.device_count()} are visible; "
            "lower --nproc (or num_gpus) or check CUDA_VISIBLE_DEVICES"
        )


def _train_here(configs: list[str], overrides: list[str]) -> int:
    from neox import config as neox_config
    from neox.launch import dist as launch_dist
    from neox.launch.env import discover
    from neox.train import train

    env = discover()
    cfg = neox_config.load(configs, overrides, world_size=env.world_size)
    code = train(cfg, env=env)
    launch_dist.shutdown()  # after a clean end only: on an error other ranks may still hold collectives
    return code
