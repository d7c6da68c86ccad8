#!/usr/bin/env python3
"""Check ``.bin/.idx`` datasets before training: files, sizes, dtype, token range, empty documents.

    check_data.py data/pile_text_document --vocab-size 50304
    check_data.py data/sft_text_document --labels data/sft_label_document --tokenizer-type HFTokenizer --vocab-file tok.json

Every problem is one line naming the file and the fix, exit status 1. On success prints a JSON
summary per dataset (documents, tokens, dtype, largest token id, shortest/longest document).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from neox.data.indexed import IndexedDataset, check_tokens  # noqa: E402
from neox.errors import DataError, NeoxError  # noqa: E402


def check(prefix: str, vocab_size: int | None, labels: str | None) -> dict:
    ds = IndexedDataset(prefix)
    if len(ds) == 0:
        raise DataError(f"{ds.prefix}: no documents")
    empty = np.flatnonzero(ds.sizes == 0)
    if len(empty):
        raise DataError(f"{ds.prefix}: {len(empty)} empty documents (first: item {int(empty[0])}); "
                        "re-run preprocess_data.py, which drops them")
    if ds.dtype.kind == "f":
        raise DataError(f"{ds.prefix}: holds {ds.dtype} values, not token ids")
    if vocab_size is not None:
        check_tokens(ds, vocab_size)
    info = {"prefix": ds.prefix, "documents": len(ds), "tokens": ds.num_tokens, "dtype": ds.dtype.name,
            "max_token": ds.max_token(), "min_doc": int(ds.sizes.min()), "max_doc": int(ds.sizes.max())}
    if labels:
        from neox.data.gpt_dataset import _check_aligned

        lab = IndexedDataset(labels)
        _check_aligned(ds, lab)
        info["trained_tokens"] = int((lab.tokens() != -100).sum())
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prefixes", nargs="+", help="dataset prefixes (without .bin/.idx)")
    p.add_argument("--labels", nargs="*", default=None, help="label prefixes, one per dataset")
    p.add_argument("--vocab-size", type=int, default=None, help="token ids must be below this")
    p.add_argument("--tokenizer-type", default=None, help="take the vocabulary size from this tokenizer")
    p.add_argument("--vocab-file", default=None)
    args = p.parse_args(argv)
    try:
        vocab = args.vocab_size
        if vocab is None and args.tokenizer_type:
            from neox.tokenizer import build_tokenizer

            vocab = build_tokenizer(args.tokenizer_type, args.vocab_file).vocab_size
        if args.labels and len(args.labels) != len(args.prefixes):
            raise DataError(f"{len(args.labels)} --labels for {len(args.prefixes)} datasets; give one per dataset")
        labels = args.labels or [None] * len(args.prefixes)
        results = [check(p_, vocab, lab) for p_, lab in zip(args.prefixes, labels)]
    except NeoxError as err:
        print(f"check_data: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
