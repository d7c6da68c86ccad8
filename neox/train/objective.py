"""What a training step minimises: the pluggable loss of the one training loop.

An objective turns one loader micro-batch into ``(loss, metrics)``: ``loss`` is the scalar the
engine back-propagates, ``metrics`` maps names (``lm_loss``) to detached scalars that are
averaged over gradient-accumulation micro-batches and all ranks for the log. Pretraining uses
:class:`LanguageModeling`; SFT and DPO plug in their own objective and reuse the loop.

With tensor parallelism the LM head can leave the logits vocab-sharded ``[b, s, V/tp]`` (never
gathered in training); an objective that computes its loss with
:func:`neox.parallel.cross_entropy.vocab_parallel_cross_entropy` says so with
``vocab_parallel = True``, and the engine then keeps the logits sharded. Under pipeline
parallelism the engine cannot call the objective with the model: it feeds
``pipeline_batch(batch)`` = ``(inputs, targets)`` through the stages and computes
``pipeline_loss(logits, targets)`` on the last one; objectives that have both methods can run on
a pipeline.
"""

from __future__ import annotations

from typing import Protocol

import torch

from neox.data import get_batch
from neox.parallel import TensorParallel, tensor_parallel
from neox.parallel.cross_entropy import vocab_parallel_cross_entropy


class Objective(Protocol):
    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def masked_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, tp: TensorParallel | None = None
) -> torch.Tensor:
    """Σ(CE · mask) / Σ mask over the micro-batch, CE in fp32 over the full (padded) vocab, as upstream.

    ``logits`` are [b, s, V], or this rank's [b, s, V/tp] vocab slice when ``tp`` has several
    ranks (vocab-parallel cross-entropy). A micro-batch with no unmasked token gives 0 rather
    than upstream's 0/0 = nan.
    """
    ce = vocab_parallel_cross_entropy(logits, labels, tp or TensorParallel(None, 0, 1))  # [b, s]
    mask = loss_mask.float()
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


class LanguageModeling:
    """Next-token prediction: ``lm_loss`` of upstream GPT-NeoX pretraining (vocab-parallel logits)."""

    vocab_parallel = True

    def __init__(self, cfg, eod: int | None, tp: TensorParallel | None = None) -> None:
        self.cfg = cfg
        self.eod = eod
        self.tp = tp

    def __call__(self, model, batch):
        tokens, labels, loss_mask = get_batch(batch, self.cfg, self.eod)
        logits = model(tokens)  # [b, s, padded_vocab / tp]
        loss = self.pipeline_loss(logits, (labels, loss_mask))
        return loss, {"lm_loss": loss.detach()}

    def pipeline_batch(self, batch):
        """``(tokens, (labels, loss_mask))``: what the first and the last pipeline stage need."""
        tokens, labels, loss_mask = get_batch(batch, self.cfg, self.eod)
        return tokens, (labels, loss_mask)

    def pipeline_loss(self, logits: torch.Tensor, targets) -> torch.Tensor:
        labels, loss_mask = targets
        tp = self.tp or tensor_parallel()
        if logits.shape[-1] != self.cfg.padded_vocab_size // tp.world_size:
            tp = TensorParallel(None, 0, 1)  # gathered logits (an engine that did not shard them)
        return masked_lm_loss(logits, labels, loss_mask, tp)
