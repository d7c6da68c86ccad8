"""`neox bench`: throughput of real training steps for named model shapes.

A shape is a config in ``configs/`` (``pythia-160m``, ``pythia-410m``, ``pythia-1.4b``,
``pythia-6.9b``, ``llama-1b``, ``neox-tiny``) or a path to any config. The benchmark takes the
shape, sets the sequence length and micro batch, and runs the training loop's own step
(:func:`neox.train.step.train_step` on the DeepSpeed engine of :func:`neox.train.engine.build_engine`)
on random tokens: ``warmup`` steps untimed, then ``steps`` steps timed with CUDA events (wall
clock on a CPU). Defaults are the sensible ones, not tuned: bf16 with fp32 master weights (fp32 on
a CPU), PyTorch SDPA attention, fused AdamW, ZeRO stage and clipping from the shape's config,
activation checkpointing off, no tensor or pipeline parallelism. Every ``key=value`` override is
applied last, so any of these can be changed.

Several GPUs: ``neox bench --nproc N`` (or under torchrun/srun) runs every rank of a layout given
by overrides (``model_parallel_size``, ``pipe_parallel_size``, ``sequence_parallel``,
``zero_optimization.stage``, ``gradient_accumulation_steps``); the data-parallel size is what is
left, and the micro batch is per GPU. Every TP rank of a replica sees the same random tokens. The
Pythia shapes name no tokenizer file, so their padded vocabulary is Pythia's 50,277 tokens padded
for the run's TP, as training would.

Reported per shape: step time, tokens/s (global and per GPU), model TFLOPS/GPU, causal MFU and
GPT-NeoX-formula MFU (:mod:`neox.train.metrics`), peak allocated memory, and the first and last
loss as a sanity check. A shape that does not fit in memory is reported as such, not a crash
(on one GPU; with several ranks the out-of-memory error ends the run, since the other ranks would
wait for it in their next collective).
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from neox.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPES = ("pythia-160m", "pythia-410m", "pythia-1.4b", "pythia-6.9b", "llama-1b", "neox-tiny")
PYTHIA_VOCAB = 50277  # the Pythia/GPT-NeoX-20B tokenizer; padded to 50304 at TP 1


def shape_path(shape: str) -> Path:
    p = Path(shape)
    if p.suffix in (".yml", ".yaml") and p.is_file():
        return p
    candidate = REPO_CONFIGS / f"{shape}.yml"
    if not candidate.is_file():
        raise ConfigError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)} or a path to a config file")
    return candidate


def bench_config(shape: str, *, seq: int, micro_batch: int, on_gpu: bool, overrides: list[str], world_size: int):
    """The shape's config with the benchmark's settings (see the module docstring)."""
    from neox import config
    from neox.config.derived import pad_vocab

    path = shape_path(shape)
    probe = config.load(
        [path], ["train_batch_size=null", "model_parallel_size=1", "pipe_parallel_size=1", *overrides],
        world_size=world_size,
    )
    settings = [
        f"seq_length={seq}",
        f"max_position_embeddings={seq}",
        f"train_micro_batch_size_per_gpu={micro_batch}",
        "train_batch_size=null",
        "gradient_accumulation_steps=1",
        "model_parallel_size=1",
        "pipe_parallel_size=1",
        f"attention_config=[[[global], {probe.num_layers}]]",
        "checkpoint_activations=false",
        "partition_activations=false",
        "synchronize_each_layer=false",
        "fp16.enabled=false",
        f"bf16.enabled={'true' if on_gpu else 'false'}",
        f"precision={'bfloat16' if on_gpu else 'fp32'}",
        "train_iters=1000",
        "lr_decay_iters=1000",
        "hidden_dropout=0",
        "attention_dropout=0",
    ]
    if probe.padded_vocab_size is None:  # shape configs name no tokenizer file: Pythia's padded vocab
        padded = pad_vocab(PYTHIA_VOCAB, probe.make_vocab_size_divisible_by, probe.model_parallel_size)
        settings.append(f"padded_vocab_size={padded}")
    return config.load([path], settings + list(overrides), world_size=world_size)


def run_shape(shape: str, *, seq: int, micro_batch: int, steps: int, warmup: int, overrides: list[str], device, env):
    """Benchmark one shape; returns its result record."""
    from neox.config.plan import flops_per_token, parameter_count
    from neox.parallel.topology import release_topology, topology_for
    from neox.train.engine import build_engine
    from neox.train.metrics import device_name, peak_tflops, throughput
    from neox.train.objective import LanguageModeling
    from neox.train.rng import seed_everything
    from neox.train.step import train_step

    on_gpu = device.type == "cuda"
    cfg = bench_config(shape, seq=seq, micro_batch=micro_batch, on_gpu=on_gpu, overrides=overrides,
                       world_size=env.world_size)
    gas = cfg.gradient_accumulation_steps
    record = {
        "shape": shape,
        "seq_length": seq,
        "micro_batch": micro_batch,
        "world_size": env.world_size,
        "layout": {"data": cfg.data_parallel_size, "pipe": max(cfg.pipe_parallel_size, 1),
                   "tensor": cfg.model_parallel_size, "sequence_parallel": bool(cfg.sequence_parallel),
                   "gradient_accumulation_steps": gas},
        "precision": cfg.precision,
        "zero_stage": cfg.zero_stage,
        "parameters": parameter_count(cfg)["total"],
        "flops_per_token": flops_per_token(cfg),
        "steps": steps,
        "warmup": warmup,
    }
    engine = None
    try:
        topo = topology_for(cfg)
        seed_everything(cfg.seed, tp_rank=topo.tensor_rank)
        objective = LanguageModeling(cfg, None)
        engine = build_engine(cfg, device, rank=env.rank, topo=topo, objective=objective)
        vocab = cfg.padded_vocab_size
        gen = torch.Generator(device=device).manual_seed(topo.data_rank)  # the same tokens on every TP rank
        batches = [
            {"text": torch.randint(0, vocab, (micro_batch, seq + 1), device=device, generator=gen)} for _ in range(4)
        ]

        def data():
            i = 0
            while True:
                yield batches[i % len(batches)]
                i += 1

        it = data()
        losses = [train_step(engine, it, objective, gas).metrics["lm_loss"] for _ in range(warmup)]
        if on_gpu:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(steps):
            if on_gpu:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                losses.append(train_step(engine, it, objective, gas).metrics["lm_loss"])
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                losses.append(train_step(engine, it, objective, gas).metrics["lm_loss"])
                times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        peak = peak_tflops(device_name() if on_gpu else None, cfg.peak_theoretical_tflops)
        rates = throughput(step_s, tokens_per_iter=cfg.train_batch_size * seq, world_size=env.world_size,
                           flops_per_token=record["flops_per_token"], peak=peak)
        record.update(
            step_time_s={"median": step_s, "mean": statistics.fmean(times), "min": min(times), "max": max(times)},
            tokens_per_s=rates.tokens_per_s,
            tokens_per_s_per_gpu=rates.tokens_per_s_per_gpu,
            tflops_per_gpu=rates.tflops_per_gpu,
            mfu_causal_pct=None if rates.mfu_causal is None else 100 * rates.mfu_causal,
            mfu_neox_pct=None if rates.mfu_neox is None else 100 * rates.mfu_neox,
            peak_tflops=peak,
            peak_memory_gib=_max_over_ranks(torch.cuda.max_memory_allocated(device), device) / 2**30 if on_gpu else None,
            loss_first=losses[0] if losses else None,
            loss_last=losses[-1] if losses else None,
        )
    except torch.OutOfMemoryError as err:
        if env.world_size > 1:
            # The other ranks would wait in their next collective: fail, and the launcher stops them.
            raise
        record["error"] = f"out of memory: {str(err).splitlines()[0]}"
    finally:
        del engine
        release_topology()
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
    return record


def _max_over_ranks(value: float, device) -> float:
    """The largest value on any rank (peak memory: the most loaded GPU, e.g. a pipeline's first stage)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def layout_name(record: dict) -> str:
    """``dp x pp x tp`` (+ ``sp``) of a result record."""
    lay = record.get("layout") or {"data": record.get("world_size", 1), "pipe": 1, "tensor": 1}
    return f"{lay['data']}x{lay['pipe']}x{lay['tensor']}" + ("sp" if lay.get("sequence_parallel") else "")


def environment(device) -> dict:
    import deepspeed

    from neox.train.metrics import device_name

    return {
        "device": device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "deepspeed": deepspeed.__version__,
    }


def format_table(results: list[dict]) -> str:
    head = (f"{'shape':<14}{'dp x pp x tp':>13}{'zero':>5}{'seq':>6}{'mb':>4}{'step ms':>10}{'tok/s/gpu':>12}"
            f"{'TFLOPS':>9}{'MFU':>8}{'NeoX MFU':>10}{'mem GiB':>9}")
    lines = [head]
    for r in results:
        where = f"{r['shape']:<14}{layout_name(r):>13}{r.get('zero_stage', ''):>5}"
        if "error" in r:
            lines.append(f"{where}{r['seq_length']:>6}{r['micro_batch']:>4}  {r['error'][:70]}")
            continue

        def pct(x):
            return "n/a" if x is None else f"{x:.1f}%"

        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        lines.append(
            f"{where}{r['seq_length']:>6}{r['micro_batch']:>4}{1000 * r['step_time_s']['median']:>10.1f}"
            f"{r['tokens_per_s_per_gpu']:>12,.0f}{r['tflops_per_gpu']:>9.1f}{pct(r['mfu_causal_pct']):>8}"
            f"{pct(r['mfu_neox_pct']):>10}{mem:>9}"
        )
    return "\n".join(lines)


def bench(shapes: list[str], *, seq: int, micro_batch: int, steps: int, warmup: int, overrides: list[str],
          json_path: str | None = None) -> dict:
    """Run the benchmark for ``shapes``; prints a table (rank 0) and returns/writes the JSON report."""
    from neox.launch import dist as launch_dist
    from neox.launch.env import discover

    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps {steps} must be at least 1 and --warmup {warmup} at least 0")
    env = discover()
    device = launch_dist.init(env)
    results = []
    for shape in shapes:
        results.append(run_shape(shape, seq=seq, micro_batch=micro_batch, steps=steps, warmup=warmup,
                                 overrides=overrides, device=device, env=env))
    report = {"environment": environment(device), "results": results}
    if env.rank == 0:
        print(f"neox bench on {report['environment']['device']} (torch {torch.__version__}); "
              f"{steps} timed steps after {warmup} warm-up, median step")
        print(format_table(results))
        if json_path:
            Path(json_path).write_text(json.dumps(report, indent=1) + "\n")
            print(f"neox bench: wrote {json_path}")
    return report
