#!/usr/bin/env python3
"""Hugging Face dataset -> token counts -> JSONL -> tokenized ``.bin/.idx``, resumable.

    prepare_hf_dataset.py --dataset org/name [--subset S] [--split train] --tokenizer T [--output-dir D]
    prepare_hf_dataset.py dataset=org/name subset=S split=train tokenizer=T output=D   (what `just prepare` passes)

``--dataset`` is a hub name or a local path: a dataset directory (data files inside), a
``save_to_disk`` directory, or a single parquet / JSONL(.gz) file. Offline use follows the usual
variables (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``); the datasets cache is
``$HF_DATASETS_CACHE`` or ``$HF_HOME/datasets`` when set, else ``<data root>/.hf-cache``, never
``$HOME`` by default.

Stages, each recorded in ``<output-dir>/pipeline_results.json`` when it completes:

1. ``load``: open the split; pick the text column (``--text-column``, else ``text``, else
   ``messages`` for chat data);
2. ``count`` (``--skip-count`` skips, ``--count-only`` stops after it): documents and tokens;
3. ``export``: ``<name>.jsonl`` with that one column;
4. ``tokenize`` (``--skip-tokenize`` skips): ``preprocess_data.py`` for text (EOD appended), or
   the chat-template preprocessor for ``messages`` (tokens + ``_label`` loss-mask files).

A rerun skips every stage already recorded with the same inputs whose files are still there;
a stage writes under temporary names and renames when done, so an interrupted stage never
leaves output that looks complete. Changing the dataset, split, column or tokenizer reruns
all stages. The default output directory is ``<data root>/<dataset>[-<subset>]-<split>``, the
data root being ``$NEOX_DATA_ROOT`` or ``NEOX_DATA_ROOT`` in the site profile (``$NEOX_SITE``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from neox.errors import DataError, NeoxError  # noqa: E402

RESULTS = "pipeline_results.json"
STAGES = ("load", "count", "export", "tokenize")
KEY_ALIASES = {"output": "output-dir", "text_column": "text-column", "num_proc": "num-proc"}


# ------------------------------------------------------------------------------------------ paths


def data_root() -> Path | None:
    root = os.environ.get("NEOX_DATA_ROOT")
    if not root:
        try:
            from neox.cluster.profile import default_name, parse_env_file, profile_path

            path = profile_path(default_name())
            if path.is_file():
                root = parse_env_file(path)[0].get("NEOX_DATA_ROOT")
        except (ImportError, NeoxError):
            root = None
    return Path(root).expanduser() if root else None


def default_output_dir(dataset: str, subset: str | None, split: str) -> Path:
    root = data_root()
    if root is None:
        raise DataError("no output directory: pass --output-dir (output=), or set NEOX_DATA_ROOT "
                        "(in the environment or in your site profile, slurm/sites/<site>.env)")
    name = Path(dataset).name if os.path.exists(dataset) else dataset.replace("/", "__")
    name = re.sub(r"\.(parquet|jsonl|json|jsonl\.gz|json\.gz)$", "", name)
    return root / "-".join(x for x in (name, subset, split) if x)


def hf_cache_dir() -> str | None:
    if os.environ.get("HF_DATASETS_CACHE") or os.environ.get("HF_HOME"):
        return None  # datasets reads these itself
    root = data_root()
    return str(root / ".hf-cache") if root else None


# ------------------------------------------------------------------------------------------ stages


def load_split(dataset: str, subset: str | None, split: str, num_proc: int | None):
    import datasets

    path = Path(dataset)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.is_file():
            kind = "parquet" if path.name.endswith(".parquet") else "json"
            ds = datasets.load_dataset(kind, data_files={split: str(path)}, cache_dir=hf_cache_dir())
        else:
            ds = datasets.load_dataset(dataset, subset, cache_dir=hf_cache_dir(), num_proc=num_proc)
    except FileNotFoundError as err:
        raise DataError(f"dataset {dataset}: not found ({str(err).splitlines()[0]}); give a hub name or an "
                        "existing path (offline: HF_HUB_OFFLINE=1 needs it in the cache)") from None
    except (ValueError, ConnectionError) as err:
        raise DataError(f"dataset {dataset}{' subset ' + subset if subset else ''}: {str(err).splitlines()[0]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"dataset {dataset} has no split {split!r}; it has {', '.join(ds)}")
        ds = ds[split]
    elif split != "train" and str(ds.split or "train") != split:
        raise DataError(f"dataset {dataset} holds one split ({ds.split or 'train'}), not {split!r}; leave split out")
    return ds


def pick_column(columns: list[str], wanted: str | None, dataset: str) -> str:
    if wanted:
        if wanted not in columns:
            raise DataError(f"dataset {dataset} has no column {wanted!r}; columns: {', '.join(columns)}")
        return wanted
    for c in ("text", "messages"):
        if c in columns:
            return c
    raise DataError(f"dataset {dataset} has neither a 'text' nor a 'messages' column ({', '.join(columns)}); "
                    "name the column with --text-column")


class Tok:
    """The tokenizer named by --tokenizer: a tokenizer.json file, or an HF tokenizer directory."""

    def __init__(self, spec: str, tokenizer_type: str | None, chat: bool):
        self.spec = spec
        p = Path(spec)
        if chat:
            self.kind, self.path = "chat", spec
        elif p.is_dir() and (p / "tokenizer.json").is_file():
            self.kind, self.path = (tokenizer_type or "HFTokenizer"), str(p / "tokenizer.json")
        else:
            self.kind, self.path = (tokenizer_type or "HFTokenizer"), spec

    def fingerprint(self) -> dict:
        if self.kind == "chat":
            from neox.data.chat import load_chat_tokenizer

            tok = load_chat_tokenizer(self.path)
            h = hashlib.sha256(json.dumps(tok.get_vocab(), sort_keys=True).encode())
            h.update(str(tok.chat_template).encode())
            return {"type": "chat", "path": self.path, "vocab_size": len(tok), "eod": tok.eos_token_id,
                    "fingerprint": h.hexdigest()[:16]}
        from neox.tokenizer import build_tokenizer

        tok = build_tokenizer(self.kind, self.path)
        return {"type": self.kind, "path": self.path, "vocab_size": tok.vocab_size, "eod": tok.eod,
                "fingerprint": tok.fingerprint}

    def counter(self):
        if self.kind == "chat":
            from neox.data.chat import load_chat_tokenizer

            tok = load_chat_tokenizer(self.path)
            return lambda batch: [len(tok.apply_chat_template(m, tokenize=True, return_dict=False)) for m in batch]
        from neox.tokenizer import build_tokenizer

        tok = build_tokenizer(self.kind, self.path)
        return lambda batch: [len(x) for x in tok.encode_batch([t or "" for t in batch])]


def count_tokens(ds, column: str, tok: Tok, num_proc: int | None) -> dict:
    counter = tok.counter()
    lengths = ds.map(lambda b: {"_n": counter(b[column])}, batched=True, batch_size=1000,
                     num_proc=num_proc if num_proc and num_proc > 1 else None,
                     remove_columns=ds.column_names, keep_in_memory=True, desc="counting tokens")
    n = lengths["_n"]
    return {"documents": len(n), "tokens": int(sum(n)), "empty_documents": int(sum(1 for x in n if x == 0))}


def export_jsonl(ds, column: str, out: Path, num_proc: int | None) -> dict:
    tmp = out.with_name(out.name + ".tmp")
    ds.select_columns([column]).to_json(str(tmp), lines=True, force_ascii=False,
                                        num_proc=num_proc if num_proc and num_proc > 1 else None)
    os.replace(tmp, out)
    return {"file": str(out), "bytes": out.stat().st_size, "documents": len(ds)}


def tokenize(jsonl: Path, prefix: Path, column: str, tok: Tok, workers: int, append_eod: bool) -> dict:
    if tok.kind == "chat":
        from preprocess_data_with_chat_template import preprocess_chat

        return preprocess_chat(str(jsonl), str(prefix), tokenizer_path=tok.path, keys=[column], workers=workers,
                               num_docs=None)
    from preprocess_data import preprocess

    return preprocess(str(jsonl), str(prefix), tokenizer_type=tok.kind, vocab_file=tok.path, keys=[column],
                      append_eod=append_eod, workers=workers)


# -------------------------------------------------------------------------------------------- run


def _write_results(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def _outputs_exist(stage: dict) -> bool:
    return all(os.path.exists(p) for p in stage.get("files", []))


def prepare(args) -> dict:
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.dataset, args.subset, args.split)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS
    name = out_dir.name
    t0 = time.perf_counter()
    log = (lambda m: None) if args.quiet else (lambda m: print(f"prepare: {m}", file=sys.stderr, flush=True))

    ds = load_split(args.dataset, args.subset, args.split, args.num_proc)
    column = pick_column(list(ds.column_names), args.text_column, args.dataset)
    chat = column == "messages" or (len(ds) and isinstance(ds[0][column], list))
    need_tok = not (args.skip_count and args.skip_tokenize)
    if need_tok and not args.tokenizer:
        raise DataError("--tokenizer is required to count or tokenize (a tokenizer.json, or an HF tokenizer "
                        "directory; for chat data one with a chat template)")
    tok = Tok(args.tokenizer, args.tokenizer_type, chat) if args.tokenizer else None
    inputs = {"dataset": args.dataset, "subset": args.subset, "split": args.split, "column": column,
              "num_rows": len(ds), "fingerprint": getattr(ds, "_fingerprint", None),
              "tokenizer": tok.fingerprint() if tok else None, "append_eod": (not chat) and not args.no_append_eod}
    old = json.loads(results_path.read_text()) if results_path.exists() else {}
    if old.get("inputs") != inputs:
        if old:
            log("inputs changed since the last run: every stage runs again")
        old = {}
    stages = old.get("stages", {})
    results = {"inputs": inputs, "output_dir": str(out_dir), "stages": stages}
    eod = inputs["tokenizer"]["eod"] if inputs["tokenizer"] else None
    results["eod_policy"] = (
        "chat: EOS appended to every conversation, trained when the turn before it is" if chat else
        f"EOD id {eod} appended to every document" if inputs["append_eod"] else "no EOD appended")

    def run(stage: str, fn, skip: bool = False):
        done = stages.get(stage, {})
        if skip:
            log(f"{stage}: skipped (option)")
            return None
        if done.get("done") and _outputs_exist(done):
            log(f"{stage}: already done, skipping")
            return done
        start = time.perf_counter()
        log(f"{stage} ...")
        info = fn()
        info.update(done=True, seconds=round(time.perf_counter() - start, 3))
        stages[stage] = info
        for later in STAGES[STAGES.index(stage) + 1 :]:
            stages.pop(later, None)  # anything after a re-run stage is stale
        _write_results(results_path, results)
        return info

    run("load", lambda: {"documents": len(ds), "column": column, "chat": bool(chat), "files": []})
    run("count", lambda: {**count_tokens(ds, column, tok, args.num_proc), "files": []}, skip=args.skip_count)
    if not args.count_only:
        jsonl = out_dir / f"{name}.jsonl"
        run("export", lambda: {**export_jsonl(ds, column, jsonl, args.num_proc), "files": [str(jsonl)]})
        prefix = out_dir / name

        def do_tokenize():
            s = tokenize(jsonl, prefix, column, tok, args.num_proc or 1, inputs["append_eod"])
            files = [f"{p}{e}" for p in s["outputs"].values() for e in (".bin", ".idx")]
            return {k: s[k] for k in ("documents", "tokens", "skipped", "outputs", "seconds", "tokens_per_s")} | {
                "files": files, "dtype": s["dtype"]}

        run("tokenize", do_tokenize, skip=args.skip_tokenize)
    results["total_seconds"] = round(time.perf_counter() - t0, 3)
    results["documents"] = stages.get("tokenize", stages.get("count", stages["load"])).get("documents")
    results["tokens"] = stages.get("tokenize", stages.get("count", {})).get("tokens")
    _write_results(results_path, results)
    return results


def _key_values_to_flags(argv: list[str]) -> list[str]:
    """``dataset=x split=y`` (just's style) -> ``--dataset x --split y``; empty values are dropped."""
    out = []
    for a in argv:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.*)$", a)
        if m and not a.startswith("-"):
            key, value = m.groups()
            flag = KEY_ALIASES.get(key, key.replace("_", "-"))
            if value.lower() in ("true", "yes") and flag in ("skip-count", "skip-tokenize", "count-only", "quiet"):
                out.append(f"--{flag}")
            elif value != "" and value.lower() not in ("false", "no"):
                out += [f"--{flag}", value]
        else:
            out.append(a)
    return out


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="hub name (org/name) or local path")
    p.add_argument("--subset", default=None, help="configuration name (hub 'subset')")
    p.add_argument("--split", default="train")
    p.add_argument("--output-dir", default=None, help="default: <data root>/<dataset>[-subset]-<split>")
    p.add_argument("--text-column", default=None, help="default: 'text', else 'messages' (chat)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json, or an HF tokenizer directory (chat: with template)")
    p.add_argument("--tokenizer-type", default=None, help="upstream tokenizer_type for --tokenizer (default HFTokenizer)")
    p.add_argument("--no-append-eod", action="store_true", help="do not append EOD to text documents")
    p.add_argument("--skip-count", action="store_true", help="skip the token-count stage")
    p.add_argument("--skip-tokenize", action="store_true", help="stop after the JSONL export")
    p.add_argument("--count-only", action="store_true", help="stop after counting")
    p.add_argument("--num-proc", type=int, default=None, help="processes for counting, export and tokenizing")
    p.add_argument("--quiet", action="store_true", help="no stage messages")
    return p.parse_args(_key_values_to_flags(list(sys.argv[1:] if argv is None else argv)))


def main(argv=None) -> int:
    args = get_args(argv)
    try:
        results = prepare(args)
    except NeoxError as err:
        print(f"prepare_hf_dataset: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
