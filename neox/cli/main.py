"""Entry point of the ``neox`` command.

Each subcommand lives in its own module under ``neox.cli`` and exposes
``add_parser(subparsers)``; the module's heavy imports (torch, deepspeed) happen inside the
handler so that ``neox --help`` and ``neox config check`` stay fast. User errors
(:class:`neox.errors.NeoxError`) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from neox.errors import NeoxError

# Order is the order shown by `neox --help`.
SUBCOMMANDS = ["train", "config", "bench", "verify", "slurm", "cluster", "generate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox",
        description="Train GPT-NeoX-style models from upstream GPT-NeoX YAML configs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"neox.cli.{name}")
        module.add_parser(sub)
    return parser


def _version() -> str:
    from neox import __version__

    return f"neox {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NeoxError as err:
        print(f"neox: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `neox config show ... | head`: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
