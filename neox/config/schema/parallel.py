"""Parallelism and batch-size keys (upstream ``NeoXArgsParallelism`` and the DeepSpeed batch triad)."""

from __future__ import annotations

from dataclasses import dataclass

from neox.config.fields import key


@dataclass
class ParallelArgs:
    """How the GPUs are split into data x pipe x tensor groups."""

    pipe_parallel_size: int = key(
        0, "pipeline stages; 0 runs without a PipelineModule (mp_rank checkpoint files), >= 1 uses layer files"
    )
    model_parallel_size: int = key(1, "tensor-parallel degree")
    sequence_parallel: bool = key(False, "Megatron sequence parallelism for norm/dropout regions (only with TP > 1)")
    pipe_partition_method: str = key("type:transformer|mlp", "how layers are split over pipeline stages")
    world_size: int | None = key(None, "total GPUs of the run (derived: the load() argument, WORLD_SIZE, or 1)", derived=True)
    global_num_gpus: int | None = key(None, "total GPUs, as upstream's launcher records it")
    is_pipe_parallel: bool = key(False, "pipe_parallel_size >= 1 (derived)", derived=True)


@dataclass
class BatchArgs:
    """The batch-size triad: train_batch_size = micro batch x gradient accumulation x data-parallel size."""

    train_batch_size: int | None = key(None, "global batch in samples per optimizer step")
    train_micro_batch_size_per_gpu: int | None = key(None, "samples per GPU per forward/backward")
    gradient_accumulation_steps: int = key(1, "micro batches accumulated per optimizer step")
    batch_size: int | None = key(None, "the micro batch (derived)", derived=True)
    gas: int | None = key(
        None,
        "legacy key upstream never read (removed in upstream PR #1144; Pythia's configs still set 1)",
        implemented=False,
        hint="it never changed anything upstream; only 1 is accepted, set gradient_accumulation_steps instead",
    )
