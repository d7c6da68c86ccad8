"""The feed-forward block (upstream ``ParallelMLP`` and ``megatron/model/activations.py``).

- Non-gated: ``linear2(act(linear1(x)))``, ``linear1`` has ``ffn_dim`` outputs.
- Gated (``geglu``, ``reglu``, ``swiglu``, ``bilinear``, ``glu``): ``linear1`` has ``2·ffn_dim``
  outputs ``[value | gate]`` and the block computes ``linear2(act(gate) · value)``. So HF
  Llama's ``up_proj`` is the first half and ``gate_proj`` the second.
- ``ffn_dim`` is the config's derived width (upstream's 2/3 rule and ``mlp_multiple_of``
  rounding for gated MLPs happen there, once).
- ``gelu`` is the exact erf GELU, or the tanh approximation when ``bias_gelu_fusion`` is set
  (upstream's fused bias-GELU kernel computes the tanh form; Pythia and 20B trained with it).
  The gated ``geglu`` always uses erf, as upstream. ``swish`` is ``x·sigmoid(x)`` = SiLU.
- ``linear2`` leaves the TP reduction to the block in parallel-residual mode (see
  :class:`neox.parallel.RowParallelLinear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox.errors import ConfigError
from neox.model.linears import Linears
from neox.parallel import TensorParallel

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "softsign": F.softsign,
    "swish": F.silu,
    "silu": F.silu,
    "mish": F.mish,
}
GATED_ACTIVATIONS = {
    "geglu": F.gelu,
    "reglu": F.relu,
    "swiglu": F.silu,
    "bilinear": lambda x: x,
    "glu": torch.sigmoid,
}


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class MLP(nn.Module):
    def __init__(self, cfg, linears: Linears, tp: TensorParallel, *, device=None, dtype=None) -> None:
        super().__init__()
        table = GATED_ACTIVATIONS if cfg.is_gated_mlp else ACTIVATIONS
        if cfg.activation not in table:
            raise ConfigError(
                f"activation: {cfg.activation!r} is not one of {', '.join([*ACTIVATIONS, *GATED_ACTIVATIONS])}"
            )
        self.act = _gelu_tanh if cfg.activation == "gelu" and cfg.bias_gelu_fusion else table[cfg.activation]
        self.gated = cfg.is_gated_mlp
        h, ffn = cfg.hidden_size, cfg.ffn_dim
        self.linear1 = linears.mlp_column(
            h,
            2 * ffn if self.gated else ffn,
            cfg.use_bias_in_mlp,
            blocks=(ffn, ffn) if self.gated else None,
            tp=tp,
            device=device,
            dtype=dtype,
        )
        self.linear2 = linears.mlp_row(
            ffn,
            h,
            cfg.use_bias_in_mlp,
            reduce_output=not cfg.gpt_j_residual,
            tp=tp,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear1(x)  # [b, s, ffn/tp] or [b, s, 2·ffn/tp]
        if self.gated:
            value, gate = y.chunk(2, dim=-1)
            y = self.act(gate) * value
        else:
            y = self.act(y)
        return self.linear2(y)  # [b, s, h]
