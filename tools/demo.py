#!/usr/bin/env python3
"""`just demo`: the whole path on one CPU, offline, in a few minutes.

1. corpus: the English help texts that ship with CPython (``pydoc_data.topics``, ~465 KB) as JSONL;
2. tokenize: ``tools/datasets/preprocess_data.py`` with the repo's 2048-token BPE
   (``configs/tokenizers/neox-tiny.json``) into ``.bin/.idx``;
3. train ``configs/neox-tiny.yml`` (4.2M parameters, 300 steps of 4 x 128 tokens) with ``neox train``, and stop it part-way with
   SIGUSR1 the way Slurm warns a job before its time limit: it saves a checkpoint and exits 75;
4. resume from that checkpoint to the end (``load`` = ``save``, as a requeued job does);
5. sample a continuation of a prompt from the final checkpoint with ``neox generate``.

Everything goes under ``--dir`` (default ``.demo/``). Each step says what it runs. On a tool error
it prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXIT_STOPPED = 75
STEPS = 5


class DemoError(Exception):
    pass


def step(n: int, text: str) -> None:
    print(f"\n[{n}/{STEPS}] {text}", flush=True)


def show(cmd: list[str]) -> None:
    print("  $ " + " ".join(str(c) if " " not in str(c) else repr(str(c)) for c in cmd), flush=True)


def run(cmd: list[str], *, stop_at: str | None = None, expect: int = 0) -> str:
    """Run ``cmd`` from the repo root, streaming its output; send SIGUSR1 once a line starts with ``stop_at``."""
    show(cmd)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    signalled = False
    for line in proc.stdout:
        out.append(line)
        if "[WARNING]" in line and "real_accelerator" in line:
            continue  # DeepSpeed's notice that there is no GPU: expected here
        print("  " + line, end="", flush=True)
        if stop_at and not signalled and line.startswith(stop_at):
            print(f"  >> sending SIGUSR1 to neox train (pid {proc.pid}), as Slurm does before a time limit", flush=True)
            proc.send_signal(signal.SIGUSR1)
            signalled = True
    proc.wait()
    if proc.returncode != expect:
        raise DemoError(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode} (expected {expect}); see its output above")
    return "".join(out)


def write_corpus(path: Path) -> int:
    import pydoc_data.topics

    path.parent.mkdir(parents=True, exist_ok=True)
    topics = pydoc_data.topics.topics
    with open(path, "w") as f:
        for name in sorted(topics):
            f.write(json.dumps({"text": topics[name]}) + "\n")
    return len(topics)


def losses(metrics: Path) -> dict[int, float]:
    out = {}
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "train" and rec.get("train/lm_loss") is not None:
            out[rec["iteration"]] = rec["train/lm_loss"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=".demo", help="run directory (default .demo/, git-ignored); it is recreated")
    p.add_argument("--iters", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--stop-at", type=int, default=200, help="iteration at which to interrupt and resume (default 200)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences of 128 tokens per step (default 4)")
    p.add_argument("--prompt", default="A function definition", help="prompt for the sampled continuation")
    args = p.parse_args(argv)
    try:
        return demo(args)
    except DemoError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1


def demo(args) -> int:
    t0 = time.monotonic()
    root = (REPO / args.dir).resolve() if not Path(args.dir).is_absolute() else Path(args.dir)
    if root.exists():
        shutil.rmtree(root)
    data, ckpt = root / "data", root / "checkpoints"
    py = sys.executable
    neox = [py, "-m", "neox.cli.main"]

    step(1, "corpus: CPython's pydoc help topics -> JSONL (English text that ships with Python; no network)")
    n = write_corpus(data / "pydoc.jsonl")
    print(f"  wrote {n} documents, {(data / 'pydoc.jsonl').stat().st_size / 1e3:.0f} kB -> {data / 'pydoc.jsonl'}")

    step(2, "tokenize: upstream-compatible preprocess_data.py with the bundled 2048-token BPE -> .bin/.idx")
    run([py, "tools/datasets/preprocess_data.py", "--input", str(data / "pydoc.jsonl"), "--output-prefix",
         str(data / "pydoc"), "--tokenizer-type", "HFTokenizer", "--vocab-file", "configs/tokenizers/neox-tiny.json",
         "--append-eod", "--workers", "1"])

    train = [*neox, "train", "configs/neox-tiny.yml", f"data_path={data / 'pydoc_text_document'}",
             f"train_iters={args.iters}", f"lr_decay_iters={args.iters}", f"save={ckpt}", f"load={ckpt}",
             f"checkpoint_factor={args.iters}", f"log_dir={root / 'logs'}", "num_workers=0",
             f"train_micro_batch_size_per_gpu={args.micro_batch}"]
    step(3, f"train neox-tiny on the CPU; at iteration {args.stop_at} send SIGUSR1: the run saves and exits 75")
    run(train, stop_at=f"iter {args.stop_at:>{len(str(args.iters))}d}/", expect=EXIT_STOPPED)
    latest = (ckpt / "latest").read_text()
    print(f"  exit status 75; {ckpt / 'latest'} -> {latest}")

    step(4, f"resume: the same command again continues from {latest} (load = save, like a requeued job)")
    run(train)

    step(5, f"sample: continue the prompt {args.prompt!r} from the final checkpoint (top-k 20, seed 1234)")
    run([*neox, "generate", str(ckpt), "--prompt", args.prompt, "--max-new-tokens", "60"])

    curve = losses(root / "logs" / "metrics.jsonl")
    first, last = curve[min(curve)], curve[max(curve)]
    print(f"\ndemo: lm_loss {first:.2f} at iteration {min(curve)} -> {last:.2f} at iteration {max(curve)}; "
          f"checkpoints in {ckpt}, metrics in {root / 'logs' / 'metrics.jsonl'}; {time.monotonic() - t0:.0f} s in all")
    if not last < first - 1.0:
        raise DemoError(f"the loss did not fall clearly ({first:.2f} -> {last:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
