"""What a training step minimises: the pluggable loss of the one training loop.

An objective turns one loader micro-batch into ``(loss, metrics)``: ``loss`` is the scalar the
engine back-propagates, ``metrics`` maps names (``lm_loss``) to detached scalars that are
averaged over gradient-accumulation micro-batches and all ranks for the log. Pretraining uses
:class:`LanguageModeling`; SFT and DPO plug in their own objective and reuse the loop.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from neox.data import get_batch


class Objective(Protocol):
    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Σ(CE · mask) / Σ mask over the micro-batch, CE in fp32 over the full (padded) vocab, as upstream.

    A micro-batch with no unmasked token gives 0 rather than upstream's 0/0 = nan.
    """
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")  # [b*s]
    mask = loss_mask.flatten().float()
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


class LanguageModeling:
    """Next-token prediction: ``lm_loss`` of upstream GPT-NeoX pretraining."""

    def __init__(self, cfg, eod: int | None) -> None:
        self.cfg = cfg
        self.eod = eod

    def __call__(self, model, batch):
        tokens, labels, loss_mask = get_batch(batch, self.cfg, self.eod)
        logits = model(tokens)  # [b, s, padded_vocab]
        loss = masked_lm_loss(logits, labels, loss_mask)
        return loss, {"lm_loss": loss.detach()}
