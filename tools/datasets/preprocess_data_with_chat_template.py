#!/usr/bin/env python3
"""Tokenize chat conversations with the tokenizer's chat template into tokens + SFT label files.

Upstream GPT-NeoX's ``tools/datasets/preprocess_data_with_chat_template.py`` flags and outputs:
for each ``--jsonl-keys`` key (a list of ``{"role", "content"}`` messages per record) it writes
``<prefix>_<key>_document.{bin,idx}`` (tokens) and ``<prefix>_<key>_label_document.{bin,idx}``
(the token id where the model is trained, -100 elsewhere; aligned, not shifted), both int32.
Train with ``train_data_paths: [<prefix>_<key>_document]`` and
``train_label_data_paths: [<prefix>_<key>_label_document]``: the labels are the loss mask.

Only the ``--generation-role`` turns are trained (``--only-last``: only the final turn). A
conversation whose mask comes out empty or all ones stops the run with its file and line
(``--skip-invalid`` skips and counts it instead). ``--print-sample N`` prints the first N
conversations with masked text in red and trained text in green. ``--no-mask`` writes no
label file (everything is trained; upstream crashed here). Input may be JSONL, JSONL.gz or
parquet; JSONL records are read by the workers from byte ranges, so ``--workers`` scales and
never changes the output. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from preprocess_data import _where, input_files, output_prefix, plan, read_records, total_bytes  # noqa: E402

from neox.data.chat import build_chat, colour_sample, load_chat_tokenizer  # noqa: E402
from neox.data.indexed import IndexedDatasetBuilder  # noqa: E402
from neox.errors import DataError, NeoxError  # noqa: E402

_STATE: dict = {}


def init_worker(opts: dict) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _STATE.update(opts, tok=load_chat_tokenizer(opts["tokenizer_path"]))


def encode_shard(shard) -> dict:
    tok = _STATE["tok"]
    out = {"docs_in": 0, "keys": {}, "samples": []}
    records = list(read_records(shard))
    out["docs_in"] = len(records)
    for key in _STATE["keys"]:
        flats, labs, sizes, invalid = [], [], [], 0
        for loc, rec in records:
            if key not in rec:
                raise DataError(f"{_where(shard, loc)}: no key {key!r} (keys: {', '.join(sorted(rec))}); "
                                "set --jsonl-keys to the field holding the messages")
            try:
                ids, labels = build_chat(tok, rec[key], generation_role=_STATE["generation_role"],
                                         only_last=_STATE["only_last"], mask=not _STATE["no_mask"],
                                         for_rm=_STATE["for_rm"])
            except DataError as err:
                if _STATE["skip_invalid"]:
                    invalid += 1
                    continue
                raise DataError(f"{_where(shard, loc)}: {err}") from None
            flats.append(np.asarray(ids, dtype=np.int32))
            labs.append(np.asarray(labels, dtype=np.int32))
            sizes.append(len(ids))
        flat = np.concatenate(flats) if flats else np.zeros(0, np.int32)
        lab = np.concatenate(labs) if labs else np.zeros(0, np.int32)
        out["keys"][key] = {"flat": flat, "labels": lab, "sizes": np.asarray(sizes, dtype=np.int32),
                            "invalid": invalid, "trained": int((lab != -100).sum())}
    return out


def _shards(files, workers, opts):
    shards = plan(files, workers)
    if workers <= 1:
        init_worker(opts)
        yield from (encode_shard(s) for s in shards)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers, initializer=init_worker, initargs=(opts,)) as pool:
        pending: deque = deque()
        for s in shards:
            pending.append(pool.apply_async(encode_shard, (s,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def preprocess_chat(inputs, prefix: str, *, tokenizer_path: str, keys=("messages",), generation_role="assistant",
                    only_last=False, no_mask=False, for_rm=False, skip_invalid=False, workers=1,
                    print_sample=0, num_docs=None, progress=True) -> dict:
    files = input_files(inputs)
    keys = list(keys)
    tok = load_chat_tokenizer(tokenizer_path)
    opts = dict(tokenizer_path=tokenizer_path, keys=keys, generation_role=generation_role, only_last=only_last,
                no_mask=no_mask, for_rm=for_rm, skip_invalid=skip_invalid)
    names = [n for k in keys for n in ([k] if no_mask else [k, k + "_label"])]
    counts = {k: {"documents": 0, "tokens": 0, "trained_tokens": 0, "skipped_invalid": 0} for k in keys}
    from tqdm import tqdm

    start, docs_in, shown = time.perf_counter(), 0, 0
    # Builders finalize on success and drop their files on any error (their context managers).
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=num_docs, unit=" conv", file=sys.stderr, dynamic_ncols=True,
                                       disable=not progress or bool(os.environ.get("TQDM_DISABLE"))))
        builders = {n: stack.enter_context(IndexedDatasetBuilder(output_prefix(prefix, n), dtype=np.int32))
                    for n in names}
        for res in _shards(files, workers, opts):
            docs_in += res["docs_in"]
            for k, r in res["keys"].items():
                builders[k].add_documents(r["flat"], r["sizes"])
                if not no_mask:
                    builders[k + "_label"].add_documents(r["labels"], r["sizes"])
                c = counts[k]
                c["documents"] += len(r["sizes"])
                c["tokens"] += len(r["flat"])
                c["trained_tokens"] += r["trained"]
                c["skipped_invalid"] += r["invalid"]
                ends = np.cumsum(r["sizes"])
                while shown < print_sample and shown < len(ends):
                    lo = int(ends[shown - 1]) if shown else 0
                    hi = int(ends[shown])
                    print(f"--- sample {shown} ({k}): red = masked, green = trained", file=sys.stderr)
                    print(colour_sample(tok, r["flat"][lo:hi].tolist(), r["labels"][lo:hi].tolist()), file=sys.stderr)
                    shown += 1
            secs = max(time.perf_counter() - start, 1e-9)
            bar.update(res["docs_in"])
            bar.set_postfix_str(f"{docs_in / secs:,.0f} conv/s, {counts[keys[0]]['tokens'] / secs:,.0f} tok/s")
        if counts[keys[0]]["documents"] == 0:  # raised inside: the builders drop their files
            raise DataError(f"no conversation was written from {', '.join(files)} (all {docs_in} invalid or empty)")
    secs = time.perf_counter() - start
    first = counts[keys[0]]
    return {
        "inputs": files, "input_bytes": total_bytes(files),
        "outputs": {k: output_prefix(prefix, k) for k in builders},
        "per_key": counts, "documents_in": docs_in, "documents": first["documents"], "tokens": first["tokens"],
        "trained_tokens": first["trained_tokens"], "skipped": first["skipped_invalid"], "dtype": "int32",
        "tokenizer": {"path": tokenizer_path, "vocab_size": len(tok), "eos": tok.eos_token_id},
        "generation_role": generation_role, "only_last": only_last, "mask": not no_mask, "workers": workers,
        "seconds": round(secs, 3), "docs_per_s": round(docs_in / secs, 1), "tokens_per_s": round(first["tokens"] / secs, 1),
    }


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_argument_group("input data")
    g.add_argument("--input", required=True, help="comma-separated .jsonl, .jsonl.gz or .parquet files")
    g.add_argument("--jsonl-keys", nargs="+", default=["conversation"], help="fields holding the message lists")
    g.add_argument("--no-mask", action="store_true", help="train on every token (no label file is written)")
    g.add_argument("--for-rm", action="store_true", help="reward model: train only the appended EOS")
    g.add_argument("--generation-role", default="assistant", help="the role whose turns are trained")
    g.add_argument("--only-last", action="store_true", help="train only the last turn")
    g.add_argument("--skip-invalid", action="store_true",
                   help="skip (and count) conversations whose mask is empty or all ones instead of stopping")
    g.add_argument("--num-docs", type=int, default=None, help="number of conversations, for the progress bar")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-path", required=True, help="HF tokenizer directory (with a chat template)")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True)
    g.add_argument("--dataset-impl", default="mmap", choices=["mmap", "lazy", "cached"], help="only mmap is written")
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--log-interval", type=int, default=100, help="accepted for compatibility")
    g.add_argument("--print-sample", type=int, default=0, metavar="N", help="show N conversations with the mask in colour")
    g.add_argument("--summary-file", default=None, help="also write the JSON summary here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = get_args(argv)
    try:
        if args.dataset_impl != "mmap":
            raise DataError(f"--dataset-impl {args.dataset_impl}: only mmap is written")
        summary = preprocess_chat(args.input, args.output_prefix, tokenizer_path=args.tokenizer_path,
                                  keys=args.jsonl_keys, generation_role=args.generation_role,
                                  only_last=args.only_last, no_mask=args.no_mask, for_rm=args.for_rm,
                                  skip_invalid=args.skip_invalid, workers=max(1, args.workers),
                                  print_sample=args.print_sample, num_docs=args.num_docs)
    except NeoxError as err:
        print(f"preprocess_data_with_chat_template: error: {err}", file=sys.stderr)
        return 1
    if args.summary_file:
        Path(args.summary_file).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
