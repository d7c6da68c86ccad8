"""Training-loop, checkpointing and activation-checkpointing keys (upstream ``NeoXArgsTraining``
and ``NeoXArgsOther``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key


@dataclass
class TrainingArgs:
    """Length of the run, evaluation and the loss."""

    train_iters: int | None = key(None, "optimizer steps to train for")
    train_epochs: int | None = key(None, "epochs to train for instead of train_iters (packed data, one dataset)")
    eval_interval: int = key(1000, "steps between evaluations")
    eval_iters: int = key(100, "batches per evaluation")
    exit_interval: int | None = key(None, "stop after a step divisible by this")
    seed: int = key(1234, "random seed for python, numpy and torch")
    eod_mask_loss: bool = key(False, "no loss on end-of-document tokens")
    short_seq_prob: float = key(0.1, "probability of a short sequence (unused upstream)")
    char_level_ppl: bool = key(
        False, "also report character-level perplexity", implemented=False, hint="neox reports token-level perplexity"
    )


@dataclass
class CheckpointArgs:
    """Where checkpoints go and when they are written."""

    save: str | None = key(None, "directory to save checkpoints to; needs checkpoint_factor or extra_save_iters")
    load: str | None = key(None, "directory to load a checkpoint from")
    checkpoint_factor: int | float | None = key(None, "save every this many steps (linear) or at powers of it (log)")
    checkpoint_scale: Literal["linear", "log"] = key("linear", "spacing of checkpoint steps")
    extra_save_iters: list | None = key(None, "extra steps to save at; 0 saves the initial model")
    keep_last_n_checkpoints: int | None = key(None, "delete older checkpoints, keeping this many")
    no_save_optim: bool = key(False, "do not save optimizer state")
    no_save_rng: bool = key(False, "do not save RNG state")
    no_load_optim: bool = key(False, "do not load optimizer state")
    no_load_rng: bool = key(False, "do not load RNG state")
    finetune: bool = key(False, "load weights only and restart at step 0")
    iteration: int | None = key(None, "load global_step<iteration> instead of the one named in 'latest'")
    load_universal: bool = key(
        False, "load a DeepSpeed universal checkpoint", implemented=False, hint="load a NeoX-layout checkpoint"
    )
    checkpoint_validation_with_forward_pass: bool = key(
        False, "check a forward pass after loading", implemented=False, hint="use `neox verify` to check a checkpoint"
    )
    s3_path: str | None = key(None, "S3 bucket to upload checkpoints to", implemented=False, hint="upload checkpoints with tools/ckpts")
    s3_chunk_size: int = key(104_857_600, "S3 upload chunk size in bytes", implemented=False, hint="S3 upload")
    config_files: dict | None = key(None, "the original config files by name (set by the loader)", derived=True)
    save_iters: list | None = key(None, "steps at which to save (set during training)", derived=True)


@dataclass
class ActivationCheckpointArgs:
    """Activation recomputation (upstream feeds these to deepspeed.checkpointing)."""

    checkpoint_activations: bool = key(False, "recompute each layer's activations in the backward pass")
    checkpoint_num_layers: int = key(1, "layers per recomputed chunk")
    deepspeed_activation_checkpointing: bool = key(True, "use DeepSpeed's checkpointing (deprecated upstream; always on)")
    partition_activations: bool = key(False, "split checkpointed activations across tensor-parallel ranks")
    contiguous_checkpointing: bool = key(False, "copy checkpointed activations into one buffer")
    checkpoint_in_cpu: bool = key(False, "offload checkpointed activations to CPU memory")
    synchronize_each_layer: bool = key(False, "CUDA-synchronise around each checkpointed layer")
    profile_backward: bool = key(False, "profile the backward of checkpointed layers")
