#!/usr/bin/env python3
"""Merge several ``.bin/.idx`` datasets into one, in the order given (same dtype required).

    merge_datasets.py --input a_text_document b_text_document --output-prefix merged_text_document
    merge_datasets.py --input shards/ --output-prefix merged_text_document   (every pair in the directory, sorted)

The result is byte-identical to preprocessing the concatenated inputs in one run: items and
document boundaries are appended and the token bytes copied (bounded memory). Fewer, larger
files make the sample index build faster at training start. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from neox.data.indexed import merge_datasets, strip_suffix  # noqa: E402
from neox.errors import DataError, NeoxError  # noqa: E402


def expand(inputs: list[str]) -> list[str]:
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f.with_suffix("")) for f in p.glob("*.idx"))
            if not found:
                raise DataError(f"directory {p} holds no .idx files")
            out += found
        else:
            out.append(strip_suffix(item))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="dataset prefixes or directories of them")
    p.add_argument("--output-prefix", required=True)
    args = p.parse_args(argv)
    try:
        prefixes = expand(args.input)
        if strip_suffix(args.output_prefix) in prefixes:
            raise DataError(f"--output-prefix {args.output_prefix} is also an input; choose a new prefix")
        start = time.perf_counter()
        merged = merge_datasets(prefixes, args.output_prefix)
    except NeoxError as err:
        print(f"merge_datasets: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"inputs": prefixes, "output": merged.prefix, "documents": len(merged),
                      "tokens": merged.num_tokens, "dtype": merged.dtype.name,
                      "seconds": round(time.perf_counter() - start, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
