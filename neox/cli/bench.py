"""`neox bench`: tokens/s, TFLOPS, MFU and peak memory of training steps for named model shapes.

``--nproc N`` starts N local ranks (one per GPU) as ``neox train --nproc`` does; the parallel
layout comes from ``key=value`` overrides (``model_parallel_size=2``, ``pipe_parallel_size=2``,
``zero_optimization.stage=1``...), the data-parallel size is what is left.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    # Listed here, not imported from neox.train.bench: that module imports torch, and every
    # `neox` command builds this parser.
    shapes = "pythia-160m, pythia-410m, pythia-1.4b, pythia-6.9b, llama-1b, neox-tiny"
    p = sub.add_parser(
        "bench",
        help="measure tokens/s, TFLOPS, MFU and peak memory of training steps for named model shapes",
        description="Times the training loop's own step on random tokens (bf16, SDPA, fused AdamW on a GPU). "
        f"Shapes: {shapes} (configs/<shape>.yml) or a config path. Extra key=value pairs override the shape's config.",
    )
    p.add_argument("--shape", action="append", default=None, help="model shape (repeatable; default pythia-410m)")
    p.add_argument("--seq", type=int, default=2048, help="sequence length (default 2048)")
    p.add_argument("--micro-batch", type=int, default=8, help="micro batch per GPU (default 8)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--nproc", type=int, default=1, help="local ranks to start, one per GPU (default 1)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(handler=run)


def run(args) -> int:
    from neox.errors import NeoxError
    from neox.launch import dist as launch_dist
    from neox.train.bench import bench

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise NeoxError(f"neox bench: {bad[0]!r} is not key=value; shapes go after --shape")
    if args.nproc < 1:
        raise NeoxError(f"--nproc {args.nproc} must be at least 1")
    if args.nproc > 1:
        return _launch(args)
    bench(args.shape or ["pythia-410m"], seq=args.seq, micro_batch=args.micro_batch, steps=args.steps,
          warmup=args.warmup, overrides=args.overrides, json_path=args.json)
    launch_dist.shutdown()
    return 0


def _launch(args) -> int:
    """Start ``args.nproc`` local ranks of this same benchmark."""
    import os

    from neox.launch import local

    if ("RANK" in os.environ and "WORLD_SIZE" in os.environ) or "SLURM_PROCID" in os.environ:
        from neox.errors import NeoxError

        raise NeoxError("--nproc starts local ranks, but this process already is a rank; drop --nproc under torchrun/srun")
    import torch

    from neox.train.bench import bench_config

    if torch.cuda.is_available() and torch.cuda.device_count() < args.nproc:
        from neox.errors import NeoxError

        raise NeoxError(f"--nproc {args.nproc} needs {args.nproc} GPUs but {torch.cuda.device_count()} are visible")
    for shape in args.shape or ["pythia-410m"]:  # one clear error here rather than one per rank
        bench_config(shape, seq=args.seq, micro_batch=args.micro_batch, on_gpu=torch.cuda.is_available(),
                     overrides=args.overrides, world_size=args.nproc)
    argv = ["bench", *[a for shape in (args.shape or ["pythia-410m"]) for a in ("--shape", shape)],
            "--seq", str(args.seq), "--micro-batch", str(args.micro_batch), "--steps", str(args.steps),
            "--warmup", str(args.warmup)]
    if args.json:
        argv += ["--json", args.json]
    return local.run([*argv, *args.overrides], args.nproc)
