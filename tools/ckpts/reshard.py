#!/usr/bin/env python3
"""Change the tensor- and pipeline-parallel layout of a NeoX checkpoint, offline.

    python tools/ckpts/reshard.py --input_dir runs/x/checkpoints/global_step1000 --output_dir runs/x-tp4 --tp 4
    python tools/ckpts/reshard.py --input_dir runs/x-tp4 --output_dir runs/x-tp1-seq --tp 1 --pp 0 --verify

Reads any TP degree, layout (sequential mp_rank files or layer files) and parameter names,
merges the shards with the TP rules (parallel-residual biases summed, replicated tensors taken
once), re-pads the vocabulary to what the config gives at the new TP, and writes a new save
directory (``latest`` + ``global_stepN``) at ``--tp`` and ``--pp`` (0: sequential layout; >= 1:
layer files; default: the source's). Kept: weights, iteration, LR schedule, step counters, data
position. Dropped, and said so in the summary: the optimizer (ZeRO) and RNG states; resume with
``no_load_optim: true`` and ``no_load_rng: true``. ``--verify`` compares the model's logits
before and after. The new ``configs/`` carry the new layout in ``overrides.txt``. Ends with a
JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import flags_from_key_values, log, run  # noqa: E402

SWITCHES = ("overwrite", "verify", "no-progress")
ALIASES = {"ckpt": "input-dir", "output": "output-dir", "config": "config-file"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reshard.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input_dir", "--input-dir", "--ckpt", dest="input_dir", required=True,
                   help="the checkpoint: .../global_stepN, or a save directory (its 'latest')")
    p.add_argument("--output_dir", "--output-dir", "--output", dest="output_dir", required=True,
                   help="new save directory to create")
    p.add_argument("--tp", type=int, required=True, help="new tensor-parallel degree (model_parallel_size)")
    p.add_argument("--pp", type=int, default=None, help="new pipe_parallel_size (0: sequential layout); default: unchanged")
    p.add_argument("--naming", choices=("current", "legacy", "te"), default=None, help="parameter names (default: unchanged)")
    p.add_argument("--config_file", "--config-file", "--config", dest="config_file", nargs="+", default=None,
                   help="config file(s) of the model (default: the checkpoint's configs/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    p.add_argument("--verify", action="store_true", help="compare logits before and after; fail above --tolerance")
    p.add_argument("--tolerance", type=float, default=None, help="max |Δlogits| times max(1, max |logits|) (default 1e-5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(flags_from_key_values(argv, SWITCHES, ALIASES))


def work(args: argparse.Namespace) -> dict:
    from neox.checkpoint.reshard import reshard

    return reshard(
        args.input_dir,
        args.output_dir,
        tp_size=args.tp,
        pp=args.pp,
        naming=args.naming,
        config_files=args.config_file,
        overwrite=args.overwrite,
        verify_logits=args.verify,
        tolerance=args.tolerance,
        progress=not args.no_progress,
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run("reshard", lambda: work(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
