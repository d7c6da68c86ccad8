#!/usr/bin/env python3
"""Benchmark JSONL tokenization: preprocess_data.py against upstream GPT-NeoX's approach.

Three steps, all offline:

    bench_preprocess.py corpus --output /tmp/bench.jsonl --size-mb 210
        English documents from the docstrings of every Python module installed here
        (stdlib and site-packages), shuffled and cut into documents of varied length.
    bench_preprocess.py tokenizer --input /tmp/bench.jsonl --output /tmp/bpe50k.json
        a 50k byte-level BPE (GPT-NeoX-style) trained on that text with ``tokenizers``.
    bench_preprocess.py run --input /tmp/bench.jsonl --tokenizer /tmp/bpe50k.json --workers 2
        tokenizes the file with both methods into .bin/.idx and prints a JSON report.

The baseline reproduces upstream's ``preprocess_data.py`` data path: the main process parses
each line and sends the text to a ``multiprocessing.Pool`` (``imap``, chunksize 25) whose
workers call ``tokenizer.encode(text).ids`` once per document; the main process turns each
list into a numpy array and appends it to the builder. Both write the same files (checked).
"Per core" divides by the CPU seconds of all processes (user + system), so thread or process
counts cannot inflate it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ corpus


def _docstrings(path: str) -> list[str]:
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="ignore"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                out.append(doc)
    return out


def make_corpus(output: str, size_mb: float, seed: int) -> dict:
    import multiprocessing
    import sysconfig

    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}
    files = sorted(str(p) for r in roots for p in Path(r).rglob("*.py"))
    with multiprocessing.Pool() as pool:
        paragraphs = [d for docs in pool.imap(_docstrings, files, chunksize=64) for d in docs]
    rng = random.Random(seed)
    target = int(size_mb * 1e6)
    written = docs = 0
    with open(output, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(paragraphs)
            i = 0
            while i < len(paragraphs) and written < target:
                n = rng.choice([1, 1, 2, 3, 5, 8, 13, 30])
                text = "\n\n".join(paragraphs[i : i + n])
                i += n
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode())
                docs += 1
    return {"output": output, "bytes": written, "documents": docs, "source_paragraphs": len(paragraphs)}


def train_tokenizer(inputs: str, output: str, vocab_size: int, sample_mb: float) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts():
        seen = 0
        with open(inputs, encoding="utf-8") as f:
            for line in f:
                seen += len(line)
                if seen > sample_mb * 1e6:
                    return
                yield json.loads(line)["text"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    tok.save(output)
    return {"output": output, "vocab_size": tok.get_vocab_size()}


# -------------------------------------------------------------------------------- upstream baseline

_TOK = None


def _baseline_init(path: str) -> None:
    global _TOK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _TOK = Tokenizer.from_file(path)


def _baseline_encode(text: str):
    return _TOK.encode(text).ids, len(text)


def baseline(input_path: str, tokenizer: str, output_prefix: str, workers: int, eod: int) -> dict:
    """Upstream's data path: parse in the main process, one ``encode`` per document in a Pool."""
    import multiprocessing

    import numpy as np

    sys.path.insert(0, str(HERE.parents[1]))
    from neox.data.indexed import IndexedDatasetBuilder, best_dtype

    def docs():
        with open(input_path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                if text:
                    yield text

    start = time.perf_counter()
    with multiprocessing.Pool(workers, initializer=_baseline_init, initargs=(tokenizer,)) as pool:
        with IndexedDatasetBuilder(output_prefix, dtype=best_dtype(50000)) as builder:
            n_docs = n_tokens = 0
            for ids, _ in pool.imap(_baseline_encode, docs(), chunksize=25):
                ids.append(eod)
                builder.add_item(np.array(ids, dtype=builder.dtype))
                builder.end_document()
                n_docs += 1
                n_tokens += len(ids)
    return {"seconds": time.perf_counter() - start, "documents": n_docs, "tokens": n_tokens}


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn) -> dict:
    cpu0 = _cpu_seconds()
    result = fn()
    result["cpu_seconds"] = _cpu_seconds() - cpu0
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["tokens_per_cpu_s"] = result["tokens"] / result["cpu_seconds"]
    return result


def run(args) -> dict:
    from tokenizers import Tokenizer

    eod = Tokenizer.from_file(args.tokenizer).token_to_id("<|endoftext|>")
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"input": args.input, "input_bytes": os.path.getsize(args.input), "tokenizer": args.tokenizer,
              "workers": args.workers, "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "runs": []}
    for rep in range(args.repeat):
        base = _measure(lambda: baseline(args.input, args.tokenizer, str(out / "base"), args.workers, eod))

        def ours():
            cmd = [sys.executable, str(HERE / "preprocess_data.py"), "--input", args.input,
                   "--output-prefix", str(out / "ours"), "--tokenizer-type", "HFTokenizer",
                   "--vocab-file", args.tokenizer, "--append-eod", "--workers", str(args.workers)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env={**os.environ, "TQDM_DISABLE": "1"})
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            return {"seconds": time.perf_counter() - start, "documents": summary["documents"],
                    "tokens": summary["tokens"]}

        mine = _measure(ours)
        same = all((out / f"base{e}").read_bytes() == (out / f"ours_text_document{e}").read_bytes()
                   for e in (".bin", ".idx"))
        report["runs"].append({"repeat": rep, "upstream_style": base, "ours": mine, "identical_output": same,
                               "speedup_per_core": mine["tokens_per_cpu_s"] / base["tokens_per_cpu_s"],
                               "speedup_wall": mine["tokens_per_s"] / base["tokens_per_s"]})
    report["load_after"] = os.getloadavg()[0]
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="write a JSONL corpus of English docstrings")
    c.add_argument("--output", required=True)
    c.add_argument("--size-mb", type=float, default=210)
    c.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("tokenizer", help="train a byte-level BPE on the corpus")
    t.add_argument("--input", required=True)
    t.add_argument("--output", required=True)
    t.add_argument("--vocab-size", type=int, default=50000)
    t.add_argument("--sample-mb", type=float, default=60, help="train on the first N MB")
    r = sub.add_parser("run", help="tokenize with both methods and report")
    r.add_argument("--input", required=True)
    r.add_argument("--tokenizer", required=True, help="tokenizers JSON")
    r.add_argument("--workers", type=int, default=os.cpu_count())
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--workdir", default="/tmp/neox-bench-preprocess")
    args = p.parse_args()
    if args.cmd == "corpus":
        result = make_corpus(args.output, args.size_mb, args.seed)
    elif args.cmd == "tokenizer":
        result = train_tokenizer(args.input, args.output, args.vocab_size, args.sample_mb)
    else:
        result = run(args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
