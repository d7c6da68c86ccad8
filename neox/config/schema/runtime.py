"""DeepSpeed pass-through, logging, launcher/runner, process and text-generation keys
(upstream ``NeoXArgsDeepspeedConfig``, ``NeoXArgsLogging``, ``NeoXArgsDeepspeedRunner``,
``NeoXArgsOther`` and ``NeoXArgsTextgen``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key


@dataclass
class DeepSpeedArgs:
    """Keys that go into the DeepSpeed config (see ``neox.config.deepspeed``)."""

    deepspeed: bool = key(True, "DeepSpeed is always used (upstream flag)")
    gradient_clipping: float = key(1.0, "global gradient-norm clip; 0 disables (always passed to DeepSpeed)")
    clip_grad: float = key(1.0, "copy of gradient_clipping (derived)", derived=True)
    prescale_gradients: bool = key(False, "scale gradients before the all-reduce")
    gradient_predivide_factor: float = key(1.0, "divide gradients by this before the all-reduce")
    sparse_gradients: bool = key(False, "sparse embedding gradients")
    steps_per_print: int = key(10, "DeepSpeed's own progress print interval")
    wall_clock_breakdown: bool = key(False, "DeepSpeed forward/backward/step timers")
    dump_state: bool = key(False, "print the DeepSpeed engine state after init")
    flops_profiler: dict | None = key(None, "DeepSpeed FLOPs profiler block")
    activation_checkpointing: dict | None = key(None, "DeepSpeed activation-checkpointing block")
    tensorboard: dict | None = key(None, "DeepSpeed TensorBoard monitor block")
    wandb: dict | None = key(None, "DeepSpeed W&B monitor block")
    csv_monitor: dict | None = key(None, "DeepSpeed CSV monitor block")
    comms_logger: dict | None = key(None, "DeepSpeed communication logger block")
    checkpoint: dict | None = key(None, "DeepSpeed checkpoint options block")
    deepspeed_extra_args: dict | None = key(None, "extra DeepSpeed config keys; may not repeat a key set elsewhere")
    autotuning: dict | None = key(None, "DeepSpeed autotuning block", implemented=False, hint="autotuning")
    elasticity: dict | None = key(None, "DeepSpeed elastic training block", implemented=False, hint="elastic training")
    compression_training: dict | None = key(None, "DeepSpeed compression block", implemented=False, hint="compression")
    data_efficiency: dict | None = key(None, "DeepSpeed data-efficiency block", implemented=False, hint="data efficiency")
    sparse_attention: dict | None = key(None, "DeepSpeed sparse attention block", implemented=False, hint="sparse attention")
    curriculum_learning: dict | None = key(
        None, "DeepSpeed curriculum learning block", implemented=False, hint="curriculum learning"
    )
    curriculum_seqlen: int = key(0, "current curriculum sequence length", implemented=False, hint="curriculum learning")


@dataclass
class LoggingArgs:
    """Console, file, TensorBoard and W&B logging."""

    log_interval: int = key(100, "steps between log lines")
    log_dir: str | None = key(None, "directory for per-host stdout/stderr copies")
    tensorboard_dir: str | None = key(None, "TensorBoard log directory")
    use_wandb: bool | None = key(None, "log to Weights & Biases")
    wandb_project: str = key("neox", "W&B project")
    wandb_group: str | None = key(None, "W&B group")
    wandb_run_name: str | None = key(None, "W&B run name")
    wandb_team: str | None = key(None, "W&B entity")
    wandb_host: str = key("https://api.wandb.ai", "W&B server")
    wandb_init_all_ranks: bool = key(False, "start W&B on every rank")
    git_hash: str | None = key(None, "git hash of the code (recorded by the loader)", derived=True)
    peak_theoretical_tflops: float | None = key(None, "peak TFLOPS per GPU; enables MFU/HFU logging")
    log_grad_norm: bool = key(False, "log the gradient norm")
    log_param_norm: bool = key(False, "log the parameter norm")
    log_optimizer_states: bool = key(
        False, "log optimizer-state norms", implemented=False, hint="neox logs the gradient and parameter norms"
    )
    log_grad_pct_zeros: bool = key(
        False, "log the fraction of zero gradients", implemented=False, hint="neox logs the gradient and parameter norms"
    )
    log_gradient_noise_scale: bool = key(
        False, "log the gradient noise scale", implemented=False, hint="the gradient noise scale"
    )
    gradient_noise_scale_n_batches: int = key(
        5, "batches for the gradient noise scale", implemented=False, hint="the gradient noise scale"
    )
    gradient_noise_scale_cpu_offload: bool = key(
        False, "offload gradient-noise buffers", implemented=False, hint="the gradient noise scale"
    )
    memory_profiling: bool = key(False, "record a CUDA memory snapshot", implemented=False, hint="memory snapshots")
    memory_profiling_path: str | None = key(None, "memory snapshot path", implemented=False, hint="memory snapshots")
    profile: bool = key(False, "nsys/torch profiling window", implemented=False, hint="profiling windows")
    profile_step_start: int = key(10, "first profiled step", implemented=False, hint="profiling windows")
    profile_step_stop: int = key(12, "last profiled step", implemented=False, hint="profiling windows")


@dataclass
class RunnerArgs:
    """Upstream's DeepSpeed-runner keys. neox launches through Slurm or torchrun-style variables and
    ignores those it does not need; they are accepted so existing configs keep working."""

    hostfile: str | None = key(None, "MPI-style hostfile ('host slots=N' lines)")
    include: str | None = key(None, "hosts/GPUs to use, e.g. 'host1@host2:0,2'")
    exclude: str | None = key(None, "hosts/GPUs to leave out")
    num_nodes: int = key(-1, "use the first N hosts of the hostfile; -1 uses all")
    num_gpus: int | None = key(None, "GPUs per node to use")
    master_port: int = key(29500, "rendezvous port")
    master_addr: str | None = key(None, "rendezvous address")
    launcher: Literal["pdsh", "openmpi", "mvapich", "slurm"] = key("pdsh", "multi-node launcher of upstream's runner")
    force_multi: bool = key(False, "force multi-node launch mode")
    detect_nvlink_pairs: bool = key(False, "remap GPUs into NVLink pairs")
    no_ssh_check: bool = key(False, "skip the runner's ssh check")
    comment: str | None = key(None, "srun --comment")
    account: str | None = key(None, "srun --account")
    autotuning_run: str | None = key(None, "DeepSpeed autotuning mode", implemented=False, hint="autotuning")


@dataclass
class ProcessArgs:
    """Per-process and distributed-backend settings (mostly set by the launcher)."""

    distributed_backend: str = key("nccl", "torch.distributed backend (nccl on GPUs, gloo on CPU)")
    deepspeed_slurm: bool = key(False, "take RANK/LOCAL_RANK/WORLD_SIZE from Slurm variables")
    deepspeed_mpi: bool = key(False, "take RANK/LOCAL_RANK/WORLD_SIZE from MPI")
    local_rank: int | None = key(None, "local rank (set by the launcher)")
    rank: int | None = key(None, "global rank (set by the launcher)")
    user_script: str | None = key(None, "the script upstream's launcher runs")
    do_train: bool | None = key(None, "set during training")
    do_valid: bool | None = key(None, "set during training")
    do_test: bool | None = key(None, "set during training")
    deepscale: bool = key(False, "deprecated upstream flag")
    deepscale_config: str | None = key(None, "deprecated upstream flag")
    lazy_mpu_init: bool = key(False, "skip DDP init for an external manager", implemented=False, hint="an external DDP manager hook")
    adlr_autoresume: bool = key(False, "ADLR cluster auto-resume", implemented=False, hint="neox requeues through Slurm signals")
    adlr_autoresume_interval: int = key(1000, "ADLR auto-resume check interval", implemented=False, hint="neox requeues through Slurm signals")


@dataclass
class TextGenArgs:
    """Text generation and evaluation settings (used by generation/eval tools, not by training)."""

    text_gen_type: str | None = key(None, "unconditional, input-file, interactive or precompute (derived when unset)")
    temperature: float = key(0.0, "sampling temperature")
    top_p: float = key(0.0, "nucleus sampling threshold")
    top_k: int = key(0, "top-k sampling")
    return_logits: bool = key(False, "return the logits of generated tokens")
    maximum_tokens: int = key(64, "tokens to generate")
    prompt_end: str = key("\n", "end of one prompt in the input file")
    sample_input_file: str | None = key(None, "prompts, one per line")
    sample_output_file: str = key("samples.txt", "where samples are written")
    num_samples: int = key(1, "unconditional samples to generate")
    recompute: bool = key(False, "recompute attention instead of caching keys/values")
    eval_results_prefix: str = key("", "prefix of evaluation result files")
    eval_tasks: list | None = key(None, "lm-eval-harness tasks")
