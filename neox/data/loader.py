"""Micro-batches for one data-parallel rank, resumable at any consumed-sample count.

Matches upstream's ``SequentialSampler`` + ``DistributedBatchSampler`` (reference facts §3.10):
the dataset is read in order, one global micro-batch of ``micro_batch x dp_size`` samples at a
time (``drop_last``), rank r taking the contiguous slice ``[r * micro_batch, (r + 1) * micro_batch)``;
after the last full global micro-batch it starts again at sample 0.

The position is derived from ``consumed_samples`` (global samples consumed so far) alone:
global sample ``consumed_samples mod P`` comes next, P = the samples in one pass. For an
unchanged layout this is exactly upstream's ``start_iter = iteration * GAS mod len(loader)``. If
the data-parallel size (or micro batch) changed between runs, the next global batch still starts
at the first unconsumed sample; the ranks just slice it differently. Unlike upstream's
``itertools.cycle`` over the loader (which replays the *first* pass, i.e. only the batches after
the resume point, on every later pass), every pass here is the full dataset.
"""

from __future__ import annotations

import numpy as np
import torch

from neox.errors import ConfigError


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless index lists for one rank's micro-batches, starting at ``consumed_samples``."""

    def __init__(self, num_samples: int, micro_batch: int, dp_rank: int, dp_size: int, consumed_samples: int = 0):
        if micro_batch <= 0 or dp_size <= 0 or not 0 <= dp_rank < dp_size:
            raise ConfigError(f"bad data-parallel layout: micro batch {micro_batch}, rank {dp_rank} of {dp_size}")
        self.global_batch = micro_batch * dp_size
        self.per_pass = (num_samples // self.global_batch) * self.global_batch
        if self.per_pass == 0:
            raise ConfigError(f"the dataset has {num_samples} samples, fewer than one global micro-batch of "
                              f"{self.global_batch} (micro batch {micro_batch} x data-parallel {dp_size}); "
                              "use more data or a smaller batch")
        self.micro_batch = micro_batch
        self.rank = dp_rank
        self.start = consumed_samples % self.per_pass

    def __iter__(self):
        pos = self.start
        while True:
            first = pos + self.rank * self.micro_batch
            yield [(first + k) % self.per_pass for k in range(self.micro_batch)]
            pos += self.global_batch
            if pos >= self.per_pass:
                pos -= self.per_pass


def build_loader(dataset, cfg, *, dp_rank: int, dp_size: int, consumed_samples: int = 0):
    """An endless iterator of micro-batches (dict of LongTensor [micro_batch, seq_length + 1])."""
    if dataset is None:
        return None
    micro = getattr(cfg, "train_micro_batch_size_per_gpu", None) or getattr(cfg, "batch_size", None)
    if not micro:
        raise ConfigError("train_micro_batch_size_per_gpu is not set; the loader needs the micro batch")
    sampler = ResumableBatchSampler(len(dataset), int(micro), dp_rank, dp_size, consumed_samples)
    workers = int(getattr(cfg, "num_workers", 2) or 0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        collate_fn=_collate,
    )
    return iter(loader)


def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


def consumed_samples(cfg, iteration: int, split: str = "train") -> int:
    """Global samples consumed at ``iteration`` as upstream positions its loaders on resume.

    train: iteration x train_batch_size. valid: upstream restarts the validation loader at
    ``((iteration x GAS) // eval_interval) x eval_iters`` loader batches.
    """
    micro = getattr(cfg, "train_micro_batch_size_per_gpu", None) or cfg.batch_size
    dp = getattr(cfg, "data_parallel_size", None) or 1
    gas = getattr(cfg, "gradient_accumulation_steps", 1) or 1
    if split == "train":
        return iteration * gas * micro * dp
    if split == "valid":
        return ((iteration * gas) // cfg.eval_interval) * cfg.eval_iters * micro * dp
    return 0
