"""Cross-entropy over vocab-sharded logits, without gathering them (upstream ``vocab_parallel_cross_entropy``).

In training the LM head leaves each TP rank with its slice ``[..., V/tp]`` of the logits
(columns ``rank·V/tp`` onwards, as :class:`~neox.parallel.VocabParallelEmbedding` splits the
vocab). The loss per token is ``log Σ_v exp(z_v) − z_target``, computed in fp32 from three
all-reduces of ``[...]``-sized tensors (the max, the target logit, the sum of exponentials)
instead of an all-gather of ``[..., V]``. The gradient is ``softmax(z) − onehot(target)`` on each
rank's own columns, so the backward pass needs no communication. With one rank this is
``torch.nn.functional.cross_entropy`` in fp32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from neox.parallel.mappings import _group
from neox.parallel.state import TensorParallel


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, tp):
        logits = logits.float()
        group = _group(tp)
        local_max = logits.max(dim=-1).values
        dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - local_max.unsqueeze(-1)  # a fresh tensor; logits are left untouched

        part = logits.shape[-1]
        start = tp.rank * part
        outside = (target < start) | (target >= start + part)
        local_target = (target - start).masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        dist.all_reduce(target_logit, group=group)

        exp = shifted.exp_()
        sum_exp = exp.sum(dim=-1)
        dist.all_reduce(sum_exp, group=group)
        loss = sum_exp.log() - target_logit

        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, local_target, outside)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, local_target, outside = ctx.saved_tensors
        grad = softmax  # reused in place: this backward runs once
        inside = (~outside).to(grad.dtype)
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -inside.unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, tp: TensorParallel) -> torch.Tensor:
    """Per-token cross-entropy (fp32, no reduction) of ``logits [..., V/tp]`` against ``target [...]``.

    ``target`` holds full-vocabulary ids; each rank's logits are its contiguous slice of the vocab.
    """
    if tp.world_size == 1:
        return F.cross_entropy(logits.float().flatten(0, -2), target.flatten(), reduction="none").view(target.shape)
    return _VocabParallelCrossEntropy.apply(logits, target, tp)
