"""Which linear implementation each projection uses: plain TP layers or Transformer Engine.

Upstream's ``get_parallel_linear`` switches the column-parallel projections (QKV, ``linear1``,
the LM head) with ``te_columnparallel`` and the row-parallel ones (``dense``, ``linear2``)
with ``te_rowparallel``; ``te_layernorm_mlp`` makes the MLP use TE. Upstream's
``te_layernorm_mlp`` also fuses the post-attention norm into a TE ``LayerNormMLP`` with other
parameter names (facts §4.5); here the MLP keeps its norm and its ``linear1``/``linear2`` names
and only the two GEMMs move to TE, so checkpoints look the same with or without TE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from neox.parallel import ColumnParallelLinear, RowParallelLinear
from neox.parallel.te import require_transformer_engine, te_column_parallel_linear, te_row_parallel_linear

LinearFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class Linears:
    """Constructors with the signatures of :class:`ColumnParallelLinear`/:class:`RowParallelLinear`."""

    column: LinearFactory
    row: LinearFactory
    mlp_column: LinearFactory
    mlp_row: LinearFactory


def linears(cfg) -> Linears:
    """The linear constructors ``cfg`` asks for; ConfigError if TE is asked for but missing."""
    for key in ("te_columnparallel", "te_rowparallel", "te_layernorm_mlp"):
        if getattr(cfg, key):
            require_transformer_engine(key)
    column = te_column_parallel_linear if cfg.te_columnparallel else ColumnParallelLinear
    row = te_row_parallel_linear if cfg.te_rowparallel else RowParallelLinear
    if cfg.te_layernorm_mlp:
        return Linears(column, row, te_column_parallel_linear, te_row_parallel_linear)
    return Linears(column, row, column, row)
