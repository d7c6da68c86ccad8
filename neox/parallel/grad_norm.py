"""The global gradient norm of a model spread over tensor and pipeline ranks, each weight counted once.

A gradient is counted on this rank if its parameter is split over the TP ranks
(``model_parallel``, set by the TP layers) or if this is TP rank 0 (replicated parameters: norms,
row-parallel biases), and not if it is DeepSpeed's second copy of a tied weight
(``ds_pipe_replicated``, the embedding on the last pipeline stage). The squares are summed over the
pipe × tensor group; data-parallel replicas hold the same gradients after their all-reduce.

DeepSpeed's ZeRO and bf16 optimizers apply this rule themselves. Its plain fp32 path under a
pipeline does not (it counts replicated parameters only on the first stage, and the tied copy
twice), so the engine uses :func:`clip_grad_norm_` there; the training step also uses
:func:`grad_norm` to report the norm where DeepSpeed does not keep it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def _counted(p: torch.nn.Parameter, tensor_rank: int) -> bool:
    if p.grad is None or getattr(p, "ds_pipe_replicated", False):
        return False
    return tensor_rank == 0 or getattr(p, "model_parallel", False)


def grad_norm(parameters: Iterable[torch.nn.Parameter], topo) -> float:
    """The 2-norm of all gradients of the model (a collective over the pipe × tensor group)."""
    params = [p for p in parameters if p.grad is not None]
    device = params[0].grad.device if params else torch.device("cpu")
    total = torch.zeros((), dtype=torch.float32, device=device)
    for p in params:
        if _counted(p, topo.tensor_rank if topo is not None else 0):
            total += p.grad.detach().float().pow(2).sum()
    if topo is not None and topo.model_group is not None and topo.pipe * topo.tensor > 1:
        dist.all_reduce(total, group=topo.model_group)
    return float(total.sqrt())


def clip_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float, topo) -> float:
    """Scale the gradients so their global norm is at most ``max_norm`` (DeepSpeed's coefficient
    ``max_norm / (norm + 1e-6)``, capped at 1); returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    norm = grad_norm(params, topo)
    coef = min(1.0, max_norm / (norm + 1e-6))
    if coef < 1.0:
        for p in params:
            p.grad.detach().mul_(coef)
    return norm
