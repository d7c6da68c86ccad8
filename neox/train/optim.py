"""The optimizer: upstream GPT-NeoX's parameter groups and Adam flavours.

Parameter groups (upstream ``get_params_for_weight_decay_optimization``): every parameter of a
normalisation module (LayerNorm, RMSNorm, ScaleNorm, Transformer Engine norms) and every bias goes
into a group with ``weight_decay`` 0; everything else is decayed. With ``weight_decay`` 0 there is
a single group.

One deliberate difference: with the parallel residual and TP = N > 1, each TP rank holds its own
copy of the attention/MLP output biases and the model adds all N (upstream's semantics, which
NeoX checkpoints keep: the effective bias is the sum). Every copy receives the full gradient, so
upstream moves the effective bias N times as far per step as a TP = 1 run would. Those biases
(marked ``summed_over_tp`` by :class:`neox.parallel.RowParallelLinear`) go into a group whose
learning rate is scaled by 1/N (``lr_scale``, applied by the schedule), which makes training
independent of the TP degree.

``optimizer.type`` (case-insensitive):

- ``Adam`` / ``AdamW``: upstream's ``Adam`` is apex's or DeepSpeed's ``FusedAdam``, whose default
  is decoupled (AdamW) weight decay. Here it is ``torch.optim.AdamW`` — the fused CUDA kernel
  on GPU, the plain implementation on CPU; the update is the same.
- ``cpu_adam``: DeepSpeed's ``DeepSpeedCPUAdam`` (decoupled decay), for ZeRO optimizer offload.
- ``cpu_torch_adam``: ``torch.optim.Adam`` as upstream — note this one is L2 (coupled) decay.

``optimizer.params`` (lr, betas, eps, ...) go to the constructor as upstream passes them; the
schedule then overwrites ``lr`` every step.
"""

from __future__ import annotations

import torch
from torch import nn

from neox.errors import ConfigError

_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def _is_norm(module: nn.Module) -> bool:
    # Our own norms (RMSNorm with a ``scale``, ScaleNorm, TE norm wrappers) are matched by class
    # name: every upstream norm class has "Norm" in its name. TE's fused LayerNormLinear /
    # LayerNormMLP are not norms; only their ``layer_norm_*`` parameters are (see below).
    cls = type(module).__name__.lower()
    return isinstance(module, _NORM_TYPES) or ("norm" in cls and "linear" not in cls and "mlp" not in cls)


def _no_decay(module: nn.Module, name: str) -> bool:
    return _is_norm(module) or name == "bias" or name.endswith("_bias") or name.startswith("layer_norm")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Upstream's two groups: decayed weights, and (weight_decay 0) biases and all norm parameters;
    plus the TP-summed biases at ``lr_scale`` 1/TP (module docstring)."""
    decay, no_decay, seen = [], [], set()
    summed: dict[int, list[nn.Parameter]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p is None or not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if getattr(p, "summed_over_tp", 1) > 1:
                summed.setdefault(p.summed_over_tp, []).append(p)
            elif _no_decay(module, name):
                no_decay.append(p)
            else:
                decay.append(p)
    if weight_decay == 0.0:
        groups = [{"params": decay + no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
    groups += [{"params": ps, "weight_decay": 0.0, "lr_scale": 1.0 / n} for n, ps in sorted(summed.items())]
    return groups


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over :func:`param_groups` of ``model``."""
    kind = (cfg.optimizer_type or "adam").lower()
    params = dict((cfg.optimizer or {}).get("params") or {})
    params.pop("weight_decay", None)  # the top-level key is the one upstream applies
    groups = param_groups(model, cfg.weight_decay)
    on_cuda = next(model.parameters()).is_cuda
    try:
        if kind in ("adam", "adamw"):
            return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=on_cuda or None, **params)
        if kind == "cpu_torch_adam":
            return torch.optim.Adam(groups, weight_decay=cfg.weight_decay, **params)
        if kind == "cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, weight_decay=cfg.weight_decay, **params)
    except TypeError as err:
        raise ConfigError(f"optimizer.params {params} are not accepted by {kind} ({err}); fix optimizer.params") from None
    raise ConfigError(
        f"optimizer type {cfg.optimizer_type!r} is not implemented; use Adam, AdamW, cpu_adam or cpu_torch_adam"
    )
