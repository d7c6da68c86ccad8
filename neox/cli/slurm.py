"""`neox slurm`: render and submit Slurm jobs. Not implemented yet (issue "HPC layer")."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("slurm", help="render and submit Slurm jobs (not implemented yet)", add_help=True)
    p.add_argument("rest", nargs="*", help="arguments (ignored)")
    p.set_defaults(handler=run)


def run(args) -> int:
    print("neox slurm: not implemented yet (issue 'HPC layer')", file=sys.stderr)
    return 2
