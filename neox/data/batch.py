"""A micro-batch of samples -> model inputs, targets and loss mask (upstream ``_get_batch``).

Reference facts §3.11: ``tokens = text[:, :-1]``; targets are ``text[:, 1:]``, or with a label
file ``where(label >= 0, label, 0)[:, 1:]`` with the loss masked where the label is negative
(-100: prompt, padding, non-assistant turns). With ``eod_mask_loss`` positions whose *input*
token is the end-of-document id carry no loss. Attention is plain causal across documents and
positions are 0..s-1 for every row, so neither is returned.
"""

from __future__ import annotations

import torch


def get_batch(batch: dict[str, torch.Tensor], cfg, eod: int | None):
    """(tokens [b, s], labels [b, s], loss_mask float32 [b, s]) from a loader micro-batch."""
    text = batch["text"].long()
    tokens = text[:, :-1].contiguous()
    label = batch.get("label")
    if label is None:
        labels = text[:, 1:].contiguous()
        loss_mask = torch.ones_like(labels, dtype=torch.float32)
    else:
        label = label.long()
        keep = label[:, 1:] >= 0
        labels = torch.where(keep, label[:, 1:], torch.zeros_like(label[:, 1:])).contiguous()
        loss_mask = keep.to(torch.float32)
    if getattr(cfg, "eod_mask_loss", False) and eod is not None:
        loss_mask = loss_mask * (tokens != eod).to(torch.float32)
    return tokens, labels, loss_mask
