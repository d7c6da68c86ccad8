"""`neox verify`: check the runtime: torch/CUDA/NCCL, flash-attn, Transformer Engine, DeepSpeed ops. Not implemented yet (issue "HPC layer")."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the runtime: torch/CUDA/NCCL, flash-attn, Transformer Engine, DeepSpeed ops (not implemented yet)", add_help=True)
    p.add_argument("rest", nargs="*", help="arguments (ignored)")
    p.set_defaults(handler=run)


def run(args) -> int:
    print("neox verify: not implemented yet (issue 'HPC layer')", file=sys.stderr)
    return 2
