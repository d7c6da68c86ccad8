#!/usr/bin/env python3
"""Describe a NeoX checkpoint, or compare two: layout, names, TP/PP, iteration, shapes, dtypes, size.

    python tools/ckpts/inspect_checkpoint.py runs/x/checkpoints/global_step1000
    python tools/ckpts/inspect_checkpoint.py runs/x/checkpoints --attributes iteration args/padded_vocab_size
    python tools/ckpts/inspect_checkpoint.py a/global_step10,b/global_step10 --compare [--diff]

The path is a ``global_stepN`` directory or a save directory (its ``latest``). The report lists the
layout (sequential mp_rank files or layer files), the TP and PP degree, the parameter-name
dialect (current / legacy / te), the iteration and upstream ``args``, every tensor (per-rank and
full shape, dtype), the parameter count, the bytes of weights and optimizer shards, and which
engine states are present. ``--compare`` merges both checkpoints to TP = 1 (any layouts, TP
degrees and names) and reports the largest difference of every tensor. Flags follow upstream's
``inspect_checkpoints.py``. The last line of output is a JSON summary (``--json``: only that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import flags_from_key_values, run  # noqa: E402

SWITCHES = ("compare", "diff", "interactive", "json", "tensors")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="inspect_checkpoint.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="checkpoint (global_stepN or save directory); two comma-separated with --compare")
    p.add_argument("--attributes", nargs="*", default=None,
                   help="entries of mp_rank_00_model_states.pt to print, '/' for nesting (e.g. args/padded_vocab_size)")
    p.add_argument("--compare", "-c", action="store_true", help="compare two checkpoints given as 'a,b'")
    p.add_argument("--diff", "-d", action="store_true", help="with --compare, list only tensors that differ")
    p.add_argument("--atol", type=float, default=0.0, help="with --compare, differences up to this count as equal")
    p.add_argument("--config", nargs="+", default=None, help="config file(s) of the model (default: the checkpoint's)")
    p.add_argument("--tensors", action="store_true", help="list every tensor (default: the first and last few)")
    p.add_argument("--json", action="store_true", help="print only the JSON summary")
    p.add_argument("--interactive", "-i", action="store_true", help="open a Python shell with the summary loaded")
    return p.parse_args(flags_from_key_values(argv, SWITCHES))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def report(d: dict, all_tensors: bool) -> list[str]:
    lines = [
        f"{d['path']}",
        f"  iteration {d['iteration']}; layout {d['layout']}; TP {d['tp']}; PP {d['pp'] if d['pp'] is not None else '?'}; "
        f"names {d['naming']}",
        f"  {d['tensors']} tensors per rank; parameters {d['parameters'] if d['parameters'] else '? (no config)'}; "
        f"dtypes {', '.join(f'{k} x{v}' for k, v in d['dtypes'].items())}",
        f"  size: weights {_gib(d['bytes']['model'])}, optimizer {_gib(d['bytes']['optimizer'])} "
        f"({d['optimizer_files']} files), total {_gib(d['bytes']['total'])}",
        f"  engine state: {', '.join(d['engine_state']) or 'none'}; RNG state: {'yes' if d['rng_state'] else 'no'}; "
        f"configs: {', '.join(d['configs']) or 'none'}",
    ]
    if d["args"]:
        lines.append("  args: " + ", ".join(f"{k}={v}" for k, v in d["args"].items()))
    tensors = d["tensor_list"]
    shown = tensors if all_tensors or len(tensors) <= 12 else tensors[:6] + [None] + tensors[-6:]
    for t in shown:
        if t is None:
            lines.append(f"    ... {len(tensors) - 12} more (--tensors lists all)")
            continue
        full = f" (full {t['full_shape']})" if t.get("full_shape") and t["full_shape"] != t["shape"] else ""
        lines.append(f"    {t['name']}: {t['shape']}{full} {t['dtype']}")
    return lines


def work(args: argparse.Namespace) -> dict:
    from neox.checkpoint import inspect
    from neox.errors import NeoxError

    if args.compare:
        parts = [p.strip() for p in args.dir.split(",")]
        if len(parts) != 2:
            raise NeoxError(f"--compare needs two checkpoints as 'a,b' (got {args.dir!r})")
        result = inspect.compare(parts[0], parts[1], config_files=args.config, atol=args.atol)
        if not args.json:
            verdict = "equal" if result["equal"] else f"differ (max |Δ| {result['max_abs_diff']:.3e})"
            print(f"{parts[0]} vs {parts[1]}: {verdict}")
            for key in result["only_in_a"] + result["only_in_b"]:
                print(f"  only in {'a' if key in result['only_in_a'] else 'b'}: {key}")
            for key, diff in result["differing"].items():
                print(f"  {key}: {json.dumps(diff)}")
        return result
    if args.attributes:
        values = {name: inspect.attribute(args.dir, name) for name in args.attributes}
        if not args.json:
            for name, value in values.items():
                print(f"{name}: {value!r}")
        return {name: _plain(v) for name, v in values.items()}
    cfg = None
    if args.config:
        from neox.checkpoint import layout
        from neox.checkpoint.model_config import config_for_checkpoint

        cfg = config_for_checkpoint(layout.resolve(args.dir), args.config)
    summary = inspect.describe(args.dir, cfg)
    if not args.json:
        print("\n".join(report(summary, args.tensors)))
    if args.interactive:
        import code

        code.interact(banner="the description is in 'summary'", local={"summary": summary})
    if not args.tensors:
        summary = {k: v for k, v in summary.items() if k != "tensor_list"}
    return summary


def _plain(value: object) -> object:
    import torch

    if torch.is_tensor(value):
        return value.tolist() if value.numel() <= 16 else {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, int | float | str | bool | type(None)) else repr(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run("inspect_checkpoint", lambda: work(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
