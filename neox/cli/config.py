"""`neox config`: check and show NeoX YAML configs. Not implemented yet (issue "Engine foundation")."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="check and show NeoX YAML configs (not implemented yet)", add_help=True)
    p.add_argument("rest", nargs="*", help="arguments (ignored)")
    p.set_defaults(handler=run)


def run(args) -> int:
    print("neox config: not implemented yet (issue 'Engine foundation')", file=sys.stderr)
    return 2
