"""`neox bench`: measure tokens/s, TFLOPS and MFU of training steps. Not implemented yet (issue "Training loop")."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure tokens/s, TFLOPS and MFU of training steps (not implemented yet)", add_help=True)
    p.add_argument("rest", nargs="*", help="arguments (ignored)")
    p.set_defaults(handler=run)


def run(args) -> int:
    print("neox bench: not implemented yet (issue 'Training loop')", file=sys.stderr)
    return 2
