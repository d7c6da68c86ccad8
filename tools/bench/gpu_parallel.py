#!/usr/bin/env python3
"""Tensor, sequence and pipeline parallelism on one multi-GPU machine: parity, then throughput.

    python tools/bench/gpu_parallel.py OUT_DIR [--gpus N] [--budget SECONDS] [--skip-parity] [--skip-bench]
    python tools/bench/gpu_parallel.py OUT_DIR --cpu-smoke        # the same logic on the CPU, tiny and quick

**Parity.** A tiny GPT-NeoX (``configs/neox-tiny.yml`` shrunk to 2 layers, h 64, s 64; fp32,
dropout 0, ZeRO-1, tied embeddings) trains 20 steps with ``neox train`` on 1 GPU and in each
parallel layout (TP 2, PP 2, TP 2 with sequence parallelism, TP 2 x DP 2, PP 2 x DP 2,
TP 2 x PP 2 with SP) at the same global batch; every layout's loss curve, and its validation loss
at steps 10 and 20, must stay within ``--tolerance`` (absolute, default 1e-4) of the 1-GPU run. fp32 with TF32 off: layouts differ only
in summation order (split GEMMs, vocab-parallel cross-entropy, reduce-scatter), a few ulps per step,
while a wrong shard or bias rule moves the loss by 1e-2 within two steps. Layouts needing more GPUs
than there are are skipped and say so; runs are packed onto disjoint GPUs
(``CUDA_VISIBLE_DEVICES``) and run concurrently.

**Throughput.** ``neox bench --nproc N`` (bf16, SDPA, fused AdamW, ZeRO-1, seq 2048) for Pythia-1.4B
at TP 1, 2 and 4 with DP = GPUs / TP (micro batch 8 per GPU) and Pythia-6.9B with ZeRO-1 at DP 4
(micro batch 1) and TP 2 x DP 2 (micro batch 2): the same global batch of 4 x 2048 tokens. Last,
Pythia-1.4B at TP 2 with sequence parallelism, whose peak memory against TP 2 without it shows the
activation memory SP saves.

Every run has its own time limit; a failure or a timeout is recorded and the script goes on.
Results: ``OUT/parity.json``, ``OUT/bench.json``, ``OUT/results.md`` (markdown tables, the device named),
and each run's log under ``OUT/logs/``. Exit status 0 if every parity run that ran matched and every
bench run produced numbers, else 1.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "neox-tiny.yml"
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

# The parity model: neox-tiny with 2 layers, h 64, s 64, tied embeddings; 20 steps, global batch 8.
PARITY_BASE = [
    "num_layers=2", "hidden_size=64", "num_attention_heads=4", "seq_length=64", "max_position_embeddings=64",
    "no_weight_tying=false", "hidden_dropout=0", "attention_dropout=0", "precision=fp32",
    "zero_optimization.stage=1", "train_iters=20", "lr_decay_iters=20", "warmup=0.1", "log_interval=1",
    "eval_interval=10", "eval_iters=1", "num_workers=0", "split=90,10,0",
]


# NVLink multicast stays off (shared GPU hosts can be put out of service by it); kept if already set.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass
class Layout:
    """One run: ``nproc`` ranks with these overrides (the batch keeps the global batch at 8)."""

    name: str
    nproc: int
    overrides: list[str] = field(default_factory=list)


PARITY = [
    Layout("1 rank", 1, ["train_micro_batch_size_per_gpu=8"]),
    Layout("TP 2", 2, ["train_micro_batch_size_per_gpu=8", "model_parallel_size=2"]),
    Layout("PP 2", 2, ["train_micro_batch_size_per_gpu=4", "gradient_accumulation_steps=2", "pipe_parallel_size=2"]),
    Layout("TP 2 + SP", 2, ["train_micro_batch_size_per_gpu=8", "model_parallel_size=2", "sequence_parallel=true"]),
    Layout("TP 2 x DP 2", 4, ["train_micro_batch_size_per_gpu=4", "model_parallel_size=2"]),
    Layout("PP 2 x DP 2", 4, ["train_micro_batch_size_per_gpu=2", "gradient_accumulation_steps=2",
                              "pipe_parallel_size=2"]),
    Layout("TP 2 x PP 2 + SP", 4, ["train_micro_batch_size_per_gpu=4", "gradient_accumulation_steps=2",
                                   "pipe_parallel_size=2", "model_parallel_size=2", "sequence_parallel=true"]),
]


@dataclass
class BenchRun:
    name: str
    shape: str
    nproc: int
    micro_batch: int
    overrides: list[str] = field(default_factory=list)


def bench_runs(gpus: int) -> list[BenchRun]:
    runs = [BenchRun(f"1.4B TP {tp} x DP {gpus // tp}", "pythia-1.4b", gpus, 8,
                     [f"model_parallel_size={tp}", "zero_optimization.stage=1"])
            for tp in (1, 2, 4) if gpus % tp == 0]
    if gpus >= 4:
        runs += [
            BenchRun("6.9B ZeRO-1 DP 4", "pythia-6.9b", 4, 1, ["model_parallel_size=1", "zero_optimization.stage=1"]),
            BenchRun("6.9B TP 2 x DP 2", "pythia-6.9b", 4, 2, ["model_parallel_size=2", "zero_optimization.stage=1"]),
        ]
    # Last, so the time budget drops it first: sequence parallelism's activation memory against TP 2 above.
    runs.append(BenchRun(f"1.4B TP 2 + SP x DP {gpus // 2}", "pythia-1.4b", gpus, 8,
                         ["model_parallel_size=2", "sequence_parallel=true", "zero_optimization.stage=1"]))
    return runs


# ------------------------------------------------------------------ running commands


@dataclass
class Job:
    name: str
    argv: list[str]
    nproc: int
    log: Path
    timeout: float
    proc: subprocess.Popen | None = None
    devices: list[int] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0
    rc: int | None = None
    timed_out: bool = False


def _start(job: Job, env_extra: dict[str, str]) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_extra)
    for var, value in NO_MULTICAST.items():
        env.setdefault(var, value)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID"):
        env.pop(var, None)  # each job launches its own ranks
    if job.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, job.devices))
    job.log.parent.mkdir(parents=True, exist_ok=True)
    out = open(job.log, "w")  # noqa: SIM115 - closed with the process in _finish
    out.write(f"$ {' '.join(job.argv)}\n")
    out.flush()
    job.started = time.monotonic()
    # A session of its own, so a timeout kills the launcher and every rank it started.
    job.proc = subprocess.Popen(job.argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    job.proc._log_file = out  # type: ignore[attr-defined]


def _finish(job: Job, kill: bool = False) -> None:
    assert job.proc is not None
    if kill:
        job.timed_out = True
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.proc.wait()
    job.rc = job.proc.returncode
    job.seconds = time.monotonic() - job.started
    job.proc._log_file.close()  # type: ignore[attr-defined]


def run_jobs(jobs: list[Job], gpus: int, *, concurrent: bool, deadline: float, say=print) -> None:
    """Run ``jobs`` (in order), packing them onto free GPUs when ``concurrent``; one at a time otherwise.

    A job is killed after its ``timeout`` or at ``deadline``, whichever comes first; one that would
    start with less than 30 s left is left with ``rc`` None (skipped).
    """
    pending, running = list(jobs), []
    free = list(range(gpus))
    while pending or running:
        for job in list(running):
            over = time.monotonic() - job.started > job.timeout
            if job.proc.poll() is not None or over:
                _finish(job, kill=over and job.proc.poll() is None)
                running.remove(job)
                free += job.devices
                state = "timed out" if job.timed_out else f"exit {job.rc}"
                say(f"  done  {job.name}: {state} after {job.seconds:.0f} s")
        while pending and (not running or concurrent):
            job = pending[0]
            left = deadline - time.monotonic()
            if left < 30:
                say(f"  skip  {job.name}: out of time budget")
                pending.pop(0)
                continue
            job.timeout = min(job.timeout, left)  # the budget bounds the whole script, not just its starts
            if gpus and len(free) < job.nproc:
                break
            pending.pop(0)
            job.devices = sorted(free)[: job.nproc] if gpus else []
            free = [d for d in free if d not in job.devices]
            _start(job, {})
            running.append(job)
            where = f"GPUs {job.devices}" if job.devices else "CPU"
            say(f"  start {job.name} on {where}")
        time.sleep(0.5)


# ------------------------------------------------------------------ parity


def build_corpus(out: Path) -> str:
    """~25k tokens of CPython's pydoc text as .bin/.idx, tokenized with the tiny tokenizer."""
    import pydoc_data.topics

    import numpy as np

    from neox.data import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs/tokenizers/neox-tiny.json"))
    prefix = out / "data" / "pydoc_text_document"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for text in list(pydoc_data.topics.topics.values())[:20]:
        builder.add_item(tok.encode(text) + [tok.eod])
        builder.end_document()
    builder.finalize()
    return str(prefix)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def train_job(layout: Layout, out: Path, corpus: str, extra: list[str], timeout: float) -> Job:
    run_dir = out / "runs" / slug(layout.name)
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "neox.cli.main", "train", str(TINY), *PARITY_BASE, f"data_path={corpus}",
            f"log_dir={run_dir}", *layout.overrides, *extra]
    if layout.nproc > 1:
        argv += ["--nproc", str(layout.nproc)]
    return Job(layout.name, argv, layout.nproc, out / "logs" / f"train_{slug(layout.name)}.log", timeout)


def losses(run_dir: Path, event: str = "train") -> dict[int, float]:
    """``{iteration: lm_loss}`` of a run's metrics.jsonl: training steps, or ``"eval"`` validations."""
    key = "train/lm_loss" if event == "train" else "validation/lm_loss"
    found = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == event and key in rec:
                found[rec["iteration"]] = rec[key]
    return found


def parity(layouts: list[Layout], out: Path, *, gpus: int, tolerance: float, timeout: float, deadline: float,
           extra: list[str] = (), say=print) -> dict:
    """Train every layout that fits on ``gpus`` GPUs (0: the CPU) and compare it with the first."""
    corpus = build_corpus(out)
    fits = [lay for lay in layouts if not gpus or lay.nproc <= gpus]
    jobs = [train_job(lay, out, corpus, list(extra), timeout) for lay in fits]
    run_jobs(jobs, gpus, concurrent=gpus > 0, deadline=deadline, say=say)
    ref = losses(out / "runs" / slug(layouts[0].name))
    ref_valid = losses(out / "runs" / slug(layouts[0].name), "eval")
    rows = []
    for lay in layouts:
        job = next((j for j in jobs if j.name == lay.name), None)
        row = {"layout": lay.name, "nproc": lay.nproc, "overrides": lay.overrides}
        if job is None:
            row["status"] = f"skipped: needs {lay.nproc} GPUs"
        elif job.rc is None:
            row["status"] = "skipped: out of time budget"
        elif job.timed_out or job.rc != 0:
            row["status"] = "timed out" if job.timed_out else f"failed (exit {job.rc}); see {job.log}"
        else:
            got = losses(out / "runs" / slug(lay.name))
            valid = losses(out / "runs" / slug(lay.name), "eval")
            steps = sorted(set(ref) & set(got))
            diff = max((abs(got[i] - ref[i]) for i in steps), default=float("nan"))
            valid_diff = max((abs(valid[i] - ref_valid[i]) for i in ref_valid if i in valid), default=float("nan"))
            complete = len(steps) == 20 and len(ref) == 20 and set(valid) == set(ref_valid) == {10, 20}
            diff = max(diff, valid_diff)
            row.update(steps=len(steps), max_abs_diff=diff, valid_max_abs_diff=valid_diff, first_loss=got.get(1),
                       last_loss=got.get(20), seconds=round(job.seconds, 1))
            row["status"] = "ok" if complete and diff <= tolerance else (
                "mismatch" if complete else "incomplete loss curve")
        rows.append(row)
    return {"tolerance": tolerance, "steps": 20, "model": PARITY_BASE, "runs": rows}


# ------------------------------------------------------------------ throughput


def bench(runs: list[BenchRun], out: Path, *, seq: int, steps: int, warmup: int, timeout: float, deadline: float,
          gpus: int, say=print) -> list[dict]:
    jobs, paths = [], {}
    for run in runs:
        path = out / "bench" / f"{slug(run.name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        paths[run.name] = path
        argv = [sys.executable, "-m", "neox.cli.main", "bench", "--nproc", str(run.nproc), "--shape", run.shape,
                "--seq", str(seq), "--micro-batch", str(run.micro_batch), "--steps", str(steps),
                "--warmup", str(warmup), "--json", str(path), *run.overrides]
        jobs.append(Job(run.name, argv, run.nproc, out / "logs" / f"bench_{slug(run.name)}.log", timeout))
    run_jobs(jobs, gpus, concurrent=False, deadline=deadline, say=say)
    results = []
    for run, job in zip(runs, jobs):
        row = {"name": run.name, **asdict(run)}
        path = paths[run.name]
        if job.rc is None:
            row["status"] = "skipped: out of time budget"
        elif path.is_file():
            report = json.loads(path.read_text())
            record = report["results"][0]
            row.update(result=record, environment=report["environment"])
            row["status"] = "ok" if "error" not in record else record["error"]
        else:
            row["status"] = "timed out" if job.timed_out else f"failed (exit {job.rc}); see {job.log}"
        results.append(row)
    return results


# ------------------------------------------------------------------ report


def device_description() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "count": 0, "torch": torch.__version__}
    return {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "torch": torch.__version__,
            "cuda": torch.version.cuda}


def markdown(device: dict, parity_report: dict | None, bench_rows: list[dict] | None) -> str:
    lines = [f"Device: {device['count']} x {device['device']} (torch {device['torch']}, CUDA {device.get('cuda')})", ""]
    if parity_report:
        lines += [
            f"Parity: {parity_report['steps']} steps, fp32, training and validation losses vs 1 rank, tolerance "
            f"{parity_report['tolerance']:g} (absolute)", "",
            "| layout | ranks | max abs diff of loss | loss at 1 / 20 | status |", "|---|---|---|---|---|",
        ]
        for r in parity_report["runs"]:
            diff = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-"
            ends = f"{r['first_loss']:.4f} / {r['last_loss']:.4f}" if r.get("last_loss") is not None else "-"
            lines.append(f"| {r['layout']} | {r['nproc']} | {diff} | {ends} | {r['status']} |")
        lines.append("")
    if bench_rows:
        done = [r["result"] for r in bench_rows if "tokens_per_s_per_gpu" in (r.get("result") or {})]
        how = f"{done[0]['precision']}, seq {done[0]['seq_length']}, median of {done[0]['steps']} steps" if done else ""
        lines += [
            f"Throughput: neox bench, {how}",
            "",
            "| run | dp x pp x tp | micro batch | step ms | tokens/s/GPU | TFLOPS/GPU | causal MFU | peak GiB | status |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in bench_rows:
            res = r.get("result") or {}
            if "tokens_per_s_per_gpu" in res:
                lay = res["layout"]
                mfu = "n/a" if res["mfu_causal_pct"] is None else f"{res['mfu_causal_pct']:.1f}%"
                mem = "n/a" if res["peak_memory_gib"] is None else f"{res['peak_memory_gib']:.1f}"
                lines.append(
                    f"| {r['name']} | {lay['data']}x{lay['pipe']}x{lay['tensor']} | {r['micro_batch']} | "
                    f"{1000 * res['step_time_s']['median']:.1f} | {res['tokens_per_s_per_gpu']:,.0f} | "
                    f"{res['tflops_per_gpu']:.1f} | {mfu} | {mem} | {r['status']} |")
            else:
                lines.append(f"| {r['name']} | - | {r['micro_batch']} | - | - | - | - | - | {r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="directory for JSON, markdown and logs")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all visible)")
    p.add_argument("--budget", type=float, default=480, help="seconds for the whole script (default 480)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |loss difference| per step (default 1e-4)")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="the same logic on the CPU (gloo): 2-rank layouts and one neox-tiny bench run, about a minute")
    args = p.parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    device = device_description()
    gpus = 0 if args.cpu_smoke else (args.gpus if args.gpus is not None else device["count"])
    if not args.cpu_smoke and gpus < 2:
        print(f"gpu_parallel: needs at least 2 GPUs (found {gpus}); use --cpu-smoke on a CPU", file=sys.stderr)
        return 1
    say = print
    say(f"gpu_parallel: {gpus or 'no'} GPU(s) ({device['device']}), budget {args.budget:.0f} s, results in {args.out}")

    parity_report = None
    if not args.skip_parity:
        layouts = [lay for lay in PARITY if lay.nproc <= 2] if args.cpu_smoke else PARITY
        say("parity:")
        parity_report = parity(layouts, args.out, gpus=gpus, tolerance=args.tolerance, deadline=deadline,
                               timeout=300 if args.cpu_smoke else 180, say=say)
        parity_report["device"] = device
        (args.out / "parity.json").write_text(json.dumps(parity_report, indent=1) + "\n")

    bench_rows = None
    if not args.skip_bench:
        say("throughput:")
        if args.cpu_smoke:
            runs = [BenchRun("tiny PP 2", "neox-tiny", 2, 2, ["pipe_parallel_size=2", "gradient_accumulation_steps=2"])]
            bench_rows = bench(runs, args.out, seq=64, steps=2, warmup=1, timeout=300, deadline=deadline, gpus=0,
                               say=say)
        else:
            bench_rows = bench(bench_runs(gpus), args.out, seq=2048, steps=5, warmup=2, timeout=240,
                               deadline=deadline, gpus=gpus, say=say)
        (args.out / "bench.json").write_text(json.dumps({"device": device, "runs": bench_rows}, indent=1) + "\n")

    text = markdown(device, parity_report, bench_rows)
    (args.out / "results.md").write_text(text)
    say("")
    say(text)
    say(f"gpu_parallel: {time.monotonic() - start:.0f} s; wrote {args.out / 'results.md'}")
    parity_ok = parity_report is None or all(r["status"] == "ok" or r["status"].startswith("skipped: needs")
                                             for r in parity_report["runs"])
    bench_ok = bench_rows is None or all(r["status"] == "ok" for r in bench_rows)
    return 0 if parity_ok and bench_ok else 1


if __name__ == "__main__":
    sys.exit(main())
