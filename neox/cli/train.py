"""`neox train`: train a model from NeoX YAML configs. Not implemented yet (issue "Training loop")."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from NeoX YAML configs (not implemented yet)", add_help=True)
    p.add_argument("rest", nargs="*", help="arguments (ignored)")
    p.set_defaults(handler=run)


def run(args) -> int:
    print("neox train: not implemented yet (issue 'Training loop')", file=sys.stderr)
    return 2
