"""The normalisation layers selected by upstream's ``norm`` key (``megatron/model/norms.py``).

| ``norm`` | module | parameters |
|---|---|---|
| ``layernorm`` | ``torch.nn.LayerNorm`` (eps ``layernorm_epsilon``) | ``weight``, ``bias`` unless ``use_bias_in_norms: false`` |
| ``rmsnorm`` | :class:`RMSNorm` (eps ``rms_norm_epsilon``) | ``scale`` |
| ``non_parametric_layernorm`` | ``LayerNorm`` without affine parameters | none |
| ``scalenorm`` | :class:`ScaleNorm` (eps ``scalenorm_epsilon``) | ``g`` |

The Transformer Engine norms (``te_layernorm``, ``te_rmsnorm``) keep their parameters under a
nested module whose on-disk names are unconfirmed (facts §4.5); they are refused with a
pointer to the plain equivalents, which compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neox.errors import ConfigError


class RMSNorm(nn.Module):
    """``x · rsqrt(mean(x²) + eps) · scale``, computed in fp32 and cast back, as upstream.

    The mean runs over the last dimension; ``scale`` has the module's full ``shape`` (for
    QK-norm that is ``[heads, head_dim]``).
    """

    def __init__(self, shape: int | Sequence[int], eps: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (normed * self.scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.scale.shape)}, eps={self.eps}"


class ScaleNorm(nn.Module):
    """``x / max(‖x‖, eps) · g`` with a single learned scalar ``g`` (Nguyen & Salazar, 2019)."""

    def __init__(self, eps: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=self.eps) * self.g


NORMS = ("layernorm", "rmsnorm", "non_parametric_layernorm", "scalenorm")


def make_norm(cfg, shape: int | Sequence[int], *, device=None, dtype=None) -> nn.Module:
    """The norm module ``cfg.norm`` names, over the trailing ``shape``."""
    kind = cfg.norm
    if kind == "layernorm":
        return nn.LayerNorm(
            shape, eps=cfg.layernorm_epsilon, bias=cfg.use_bias_in_norms, device=device, dtype=dtype
        )
    if kind == "rmsnorm":
        return RMSNorm(shape, cfg.rms_norm_epsilon, device=device, dtype=dtype)
    if kind == "non_parametric_layernorm":
        return nn.LayerNorm(shape, eps=cfg.layernorm_epsilon, elementwise_affine=False, bias=False)
    if kind == "scalenorm":
        return ScaleNorm(cfg.scalenorm_epsilon, device=device, dtype=dtype)
    if kind in ("te_layernorm", "te_rmsnorm"):
        plain = kind.removeprefix("te_")
        raise ConfigError(f"norm: {kind} is not supported (its checkpoint names differ); use norm: {plain}")
    raise ConfigError(f"norm: {kind!r} is not one of {', '.join(NORMS)}")


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is one of the norms above (initialised to ones and zeros)."""
    return isinstance(module, nn.LayerNorm | RMSNorm | ScaleNorm)
