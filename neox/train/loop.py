"""The training loop: pretraining now, SFT/DPO later through a different objective.

:func:`train` runs one rank of a job (``neox train`` calls it once per process):

1. join the job (:mod:`neox.launch`: rank, world size and master from torchrun/Slurm/--nproc
   variables; NCCL on GPUs, gloo on CPU), build the pipe × data × tensor groups
   (:mod:`neox.parallel.topology`), seed every RNG with ``seed`` (the model-parallel dropout
   stream with ``seed`` + 2718 + TP rank, :mod:`neox.parallel.random`);
2. build the datasets (``data_path`` + ``split`` or ``train/valid/test_data_paths``) and the
   DeepSpeed engine; resume from ``load`` (:mod:`neox.train.checkpointing`);
3. until ``train_iters``: one step (:func:`neox.train.step.train_step`); every ``log_interval``
   one console line and a metrics record (:mod:`neox.train.loggers`); save at the
   ``checkpoint_factor`` / ``extra_save_iters`` steps; evaluate every ``eval_interval`` for
   ``eval_iters`` batches; stop after a step divisible by ``exit_interval`` (no save, as upstream);
4. at the end: evaluate on valid, save (if ``save``), evaluate on test.

Preemption (:mod:`neox.train.preempt`): SIGUSR1 or SIGTERM on any rank makes all ranks stop at
the next step boundary, save, and return :data:`~neox.train.preempt.EXIT_STOPPED` (75). A
finished run returns 0. Resuming always reads ``load``; for chained jobs set ``load`` to the
``save`` directory (a first job with nothing there yet starts at iteration 0).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from neox.errors import ConfigError
from neox.launch import dist as launch_dist
from neox.launch.env import DistEnv, discover
from neox.parallel.topology import Topology, release_topology, topology_for
from neox.train import checkpointing, rng
from neox.train.engine import build_engine, check_runnable
from neox.train.loggers import MetricSinks, format_eval_line, format_train_line, run_dir
from neox.train.metrics import IterationClock, device_name, peak_tflops, throughput
from neox.train.objective import LanguageModeling
from neox.train.preempt import EXIT_STOPPED, StopFlag
from neox.train.step import evaluate, train_step


@dataclass
class Window:
    """Sums over the iterations since the last log line."""

    iters: int = 0
    time_s: float = 0.0
    skipped: int = 0
    nan: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counted: int = 0

    def add(self, metrics: dict[str, float], dt: float, skipped: bool) -> None:
        self.iters += 1
        self.time_s += dt
        if skipped:
            self.skipped += 1
            return
        if any(not math.isfinite(v) for v in metrics.values()):
            self.nan += 1
            return
        self.counted += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def metrics(self, last) -> dict[str, float]:
        """``train/*`` values of the window: objective means over counted steps; lr, grad norm of the last step."""
        out = {f"train/{k}": v / self.counted for k, v in self.sums.items()} if self.counted else {}
        out["train/lr"] = last.lr
        out["train/grad_norm"] = last.grad_norm if last.grad_norm is not None else float("nan")
        out["train/skipped_iters"] = self.skipped
        out["train/nan_iters"] = self.nan
        if last.loss_scale is not None:
            out["train/loss_scale"] = last.loss_scale
        return out


class Printer:
    """Rank 0's console output."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, flush=True)


def _shared_run_id() -> str:
    obj = [uuid.uuid4().hex[:8]]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(obj, src=0)
    return obj[0]


def _loaders(cfg, datasets, dp_rank: int, dp_size: int, consumed_train: int, consumed_valid: int):
    from neox.data import build_loader

    # Loader iterators draw worker seeds from torch's global RNG; keep that RNG exactly where the
    # checkpoint put it, so a resumed run continues bit for bit.
    with torch.random.fork_rng(devices=[]):
        train_ds, valid_ds, test_ds = datasets
        return (
            build_loader(train_ds, cfg, dp_rank=dp_rank, dp_size=dp_size, consumed_samples=consumed_train),
            build_loader(valid_ds, cfg, dp_rank=dp_rank, dp_size=dp_size, consumed_samples=consumed_valid),
            build_loader(test_ds, cfg, dp_rank=dp_rank, dp_size=dp_size, consumed_samples=0),
        )


def _iterations_from_epochs(cfg, train_samples: int) -> None:
    """``train_epochs`` mode: the dataset holds one epoch; train that many passes over it."""
    from neox.config.derived import _schedule

    per_epoch = train_samples // cfg.train_batch_size
    if per_epoch < 1:
        raise ConfigError(
            f"one epoch of the training data is {train_samples} samples, less than one batch of "
            f"{cfg.train_batch_size}; use more data or a smaller batch"
        )
    cfg.train_iters = cfg.train_epochs * per_epoch
    _schedule(cfg)  # lr_decay_iters and warmup follow train_iters, as when it is given


def train(cfg, *, objective=None, env: DistEnv | None = None) -> int:
    """Train ``cfg`` as this process's rank; returns 0 (done) or 75 (stopped early after saving)."""
    env = env or discover()
    if cfg.world_size != env.world_size:
        raise ConfigError(
            f"the config was resolved for world size {cfg.world_size} but {env.world_size} processes are running "
            f"({env.source}); load it with world_size={env.world_size}"
        )
    # Config and checkpoint-path errors come before any process group or dataset exists.
    check_runnable(cfg, launch_dist.device_for(env))
    ckpt = checkpointing.resolve_load(cfg)
    device = launch_dist.init(env)
    say = Printer(env.rank)
    stop = StopFlag().install()
    ctx: dict = {}
    code = 1
    try:
        topo = topology_for(cfg)
        code = _run(cfg, env, device, say, stop, objective, ckpt, ctx, topo)
        return code
    except BaseException as err:
        if "sinks" in ctx:
            ctx["sinks"].log("end", ctx.get("iteration", 0), {"reason": "error", "error": f"{type(err).__name__}: {err}"})
        raise
    finally:
        if "sinks" in ctx:
            ctx["sinks"].close(exit_code=0 if code in (0, EXIT_STOPPED) else code)
        stop.uninstall()
        release_topology()


def _run(cfg, env: DistEnv, device: torch.device, say: Printer, stop: StopFlag, objective, ckpt: Path | None,
         ctx: dict, topo: Topology) -> int:
    from neox import data
    from neox.config.plan import flops_per_token, parameter_count
    from neox.tokenizer import from_config

    rng.seed_everything(cfg.seed, tp_rank=topo.tensor_rank)
    say(f"neox: {cfg.summary()}")
    say(f"neox: rank discovery {env.source}: {env.world_size} process(es), device {device_name()}, backend "
        f"{dist.get_backend() if dist.is_initialized() else 'none'}")
    eod = from_config(cfg).eod
    datasets = data.build_datasets(cfg)
    if datasets[0] is None:
        raise ConfigError("no training data: set data_path (with split) or train_data_paths")
    if cfg.train_iters is None:
        _iterations_from_epochs(cfg, len(datasets[0]))
        say(f"neox: train_epochs {cfg.train_epochs} = {cfg.train_iters} iterations")
    objective = objective or LanguageModeling(cfg, eod)
    engine = build_engine(cfg, device, rank=env.rank, topo=topo, objective=objective)
    say(f"neox: model {parameter_count(cfg)['total'] / 1e6:.2f}M parameters, ZeRO stage {engine.zero_stage}, "
        f"precision {cfg.precision}, gradient clipping {cfg.gradient_clipping}")
    if topo.world_size > 1:
        say(f"neox: layout data {topo.data} x pipe {topo.pipe} x tensor {topo.tensor}"
            + (" (sequence parallel)" if cfg.sequence_parallel and topo.tensor > 1 else "")
            + (f"; {engine.module.partition_summary()}" if engine.pipeline else ""))

    resumed = checkpointing.Resumed()
    if ckpt is not None:
        say(f"neox: loading checkpoint {ckpt}")
        resumed = checkpointing.load(engine, cfg, ckpt)
        say(f"neox: resuming at iteration {resumed.iteration}" + (" (finetune: weights only)" if cfg.finetune else ""))
    elif cfg.load:
        say(f"neox: {cfg.load} has no checkpoint yet; starting at iteration 0")
    elif cfg.save and checkpointing.layout.read_latest(Path(cfg.save)):
        say(f"neox: warning: {cfg.save} already holds checkpoints but load is not set; starting from scratch "
            f"(set load: {cfg.save} to resume)")
    iteration = ctx["iteration"] = resumed.iteration
    consumed_train = (
        resumed.consumed_train_samples
        if resumed.consumed_train_samples is not None
        else data.consumed_samples(cfg, iteration, "train")
    )
    consumed_valid = (
        resumed.consumed_valid_samples
        if resumed.consumed_valid_samples is not None
        else data.consumed_samples(cfg, iteration, "valid")
    )
    dp_rank, dp_size = topo.data_rank, topo.data
    train_iter, valid_iter, test_iter = _loaders(cfg, datasets, dp_rank, dp_size, consumed_train, consumed_valid)

    if cfg.save and env.rank == 0:
        checkpointing.commit.remove_stale_staging(Path(cfg.save))
    run_id = _shared_run_id()
    config_name = Path(cfg.files[0]).stem if cfg.files else "run"
    directory = run_dir(cfg, config_name)
    sinks = ctx["sinks"] = MetricSinks(
        cfg, directory=directory, enabled=env.rank == 0, config_dict=cfg.to_dict(), print_fn=say
    )
    say(f"neox: metrics -> {directory / 'metrics.jsonl'}")
    sinks.log("start", iteration, {"world_size": env.world_size, "device": device_name()})

    flops = flops_per_token(cfg)
    peak = peak_tflops(device_name() if device.type == "cuda" else None, cfg.peak_theoretical_tflops)
    tokens_per_iter = cfg.train_batch_size * cfg.seq_length
    save_at = checkpointing.save_iterations(cfg)
    gas = cfg.gradient_accumulation_steps
    last_saved = -1

    def do_save() -> None:
        nonlocal last_saved
        path = checkpointing.save(
            engine, cfg, iteration, run_id=run_id, consumed_train=consumed_train, consumed_valid=consumed_valid
        )
        last_saved = iteration
        say(f"neox: saved checkpoint {path}")
        sinks.log("checkpoint", iteration, {"path": str(path)})
        clock.pause()

    def do_eval(split: str, data_iter) -> None:
        nonlocal consumed_valid
        metrics = evaluate(engine, data_iter, objective, cfg.eval_iters, gas)
        prefix = "validation" if split == "valid" else "test"
        out = {f"{prefix}/{k}": v for k, v in metrics.items()}
        if "lm_loss" in metrics:
            out[f"{prefix}/lm_loss_ppl"] = math.exp(min(metrics["lm_loss"], 50.0))
            say(format_eval_line(prefix, iteration, out))
        if split == "valid":
            consumed_valid += cfg.eval_iters * gas * cfg.train_micro_batch_size_per_gpu * dp_size
        sinks.log("eval", iteration, out)
        clock.pause()

    clock = IterationClock()
    if cfg.save and iteration == 0 and 0 in save_at:
        do_save()
    window = Window()
    consecutive_skips = 0
    total = cfg.train_iters
    say(f"neox: training iterations {iteration} -> {total}")
    while iteration < total:
        result = train_step(engine, train_iter, objective, gas)
        iteration += 1
        ctx["iteration"] = iteration
        consumed_train += cfg.train_batch_size
        window.add(result.metrics, clock.tick(), result.skipped)
        consecutive_skips = consecutive_skips + 1 if result.skipped else 0
        if consecutive_skips >= 50 and cfg.precision == "fp16":
            raise ConfigError(
                "fp16: 50 consecutive steps overflowed and were skipped (loss scale collapsed); lower the LR, "
                "raise fp16.min_loss_scale/initial_scale_power, or use precision bfloat16"
            )
        if iteration % cfg.log_interval == 0 or iteration == total:
            rates = throughput(
                window.time_s / window.iters, tokens_per_iter=tokens_per_iter, world_size=env.world_size,
                flops_per_token=flops, peak=peak,
            )
            metrics = {
                **window.metrics(result),
                "train/consumed_samples": consumed_train,
                "train/consumed_tokens": consumed_train * cfg.seq_length,
                **rates.metrics(),
                "time/elapsed_s": clock.elapsed_s,
                "time/eta_s": clock.eta_s(total - iteration),
            }
            if device.type == "cuda":
                metrics["memory/peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            say(format_train_line(iteration, total, metrics))
            sinks.log("train", iteration, metrics)
            window = Window()
        # Evaluate before saving: the checkpoint's validation position then includes this
        # evaluation, as a run that continues from it expects.
        if valid_iter is not None and cfg.eval_interval and cfg.eval_iters and iteration % cfg.eval_interval == 0:
            do_eval("valid", valid_iter)
        if cfg.save and iteration in save_at:
            do_save()
        if cfg.exit_interval and iteration % cfg.exit_interval == 0:
            say(f"neox: exit_interval {cfg.exit_interval} reached at iteration {iteration}; exiting")
            sinks.log("end", iteration, {"reason": "exit_interval"})
            return 0
        if stop.agreed(device):
            say(f"neox: stop signal received; stopping at iteration {iteration}")
            if cfg.save and last_saved != iteration:
                do_save()
            say("neox: stopped early" + ("; checkpoint saved; resume from latest" if cfg.save else " (no save set)"))
            sinks.log("end", iteration, {"reason": "signal"})
            return EXIT_STOPPED

    if cfg.save and iteration > resumed.iteration and last_saved != iteration:
        do_save()
    # The end-of-training evaluation comes after the save: it is not part of the periodic
    # schedule a continuing run replays.
    if valid_iter is not None and cfg.eval_iters and not (cfg.eval_interval and iteration % cfg.eval_interval == 0):
        do_eval("valid", valid_iter)
    if test_iter is not None and cfg.eval_iters:
        do_eval("test", test_iter)
    sinks.log("end", iteration, {"reason": "done"})
    say(f"neox: done at iteration {iteration}")
    return 0
