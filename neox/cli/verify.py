"""`neox verify`: the runtime self-check (versions, GPUs, flash-attn/TE vs SDPA, DeepSpeed ops, kernels, NCCL plugin)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check the runtime: torch/CUDA/cuDNN/NCCL, GPUs, flash-attn and TE vs SDPA, DeepSpeed ops, kernels, NCCL plugin",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    from neox.cluster import verify

    return verify.report(verify.run_all())
