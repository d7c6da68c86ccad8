"""Transformer Engine versions of the tensor-parallel linears (``te_columnparallel``,
``te_rowparallel``, ``te_layernorm_mlp``).

Each class *is* a ``transformer_engine.pytorch.Linear`` over this rank's shard (TE's own TP is
left off: ``tp_size=1``) with our collectives around it, so the parameters keep the names
``weight``/``bias`` at the same module paths as the plain layers (TE adds its FP8 metadata as
``_extra_state``, as upstream TE checkpoints have). Sharding, initialisation and the
parallel-residual bias rule are those of :mod:`neox.parallel.layers`.

Transformer Engine is optional: :func:`require_transformer_engine` turns its absence into one
``ConfigError`` line naming the key that asked for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import cache
from types import ModuleType

import torch

from neox.errors import ConfigError
from neox.parallel.layers import TensorParallelModule, divide
from neox.parallel.mappings import gather_from_tensor_parallel_region, scatter_to_tensor_parallel_region
from neox.parallel.sequence import (
    enter_tensor_parallel_region,
    leave_tensor_parallel_region,
    sum_gradients_over_tensor_parallel,
)
from neox.parallel.state import TensorParallel, tensor_parallel


def require_transformer_engine(key: str) -> ModuleType:
    """``transformer_engine.pytorch``, or a ConfigError saying config key ``key`` needs it."""
    try:
        return importlib.import_module("transformer_engine.pytorch")
    except ImportError:
        raise ConfigError(
            f"{key}: true needs Transformer Engine, which is not installed; "
            f"install transformer-engine or set {key}: false"
        ) from None


@cache
def _classes() -> tuple[type, type]:
    te = require_transformer_engine("te_columnparallel")

    class TEColumnParallelLinear(TensorParallelModule, te.Linear):
        """:class:`neox.parallel.layers.ColumnParallelLinear` computed by TE's GEMM."""

        def __init__(self, in_features, out_features, bias, *, gather_output, blocks, tp, device, dtype):
            local_out = divide(out_features, tp.world_size, "output features")
            te.Linear.__init__(self, in_features, local_out, bias=bias, params_dtype=dtype, device=device)
            self.tp, self.gather_output = tp, gather_output
            self._split = {"weight": (0, blocks), "bias": (0, blocks)}
            self._full_shapes = {
                "weight": torch.Size([out_features, in_features]),
                "bias": torch.Size([out_features]),
            }
            self._mark_split_parameters()

        def forward(self, x):
            y = te.Linear.forward(self, enter_tensor_parallel_region(x, self.tp))
            return gather_from_tensor_parallel_region(y, self.tp) if self.gather_output else y

    class TERowParallelLinear(TensorParallelModule, te.Linear):
        """:class:`neox.parallel.layers.RowParallelLinear` computed by TE's GEMM."""

        def __init__(
            self, in_features, out_features, bias, *, input_is_parallel, reduce_output, tp, device, dtype
        ):
            local_in = divide(in_features, tp.world_size, "input features")
            # return_bias: TE hands the bias back unadded, so it can go after the reduction.
            te.Linear.__init__(
                self, local_in, out_features, bias=bias, return_bias=True, params_dtype=dtype, device=device
            )
            self.tp, self.input_is_parallel, self.reduce_output = tp, input_is_parallel, reduce_output
            self._split = {"weight": (1, None), "bias": None}
            self._full_shapes = {
                "weight": torch.Size([out_features, in_features]),
                "bias": torch.Size([out_features]),
            }
            self._mark_split_parameters()
            if bias and reduce_output:
                sum_gradients_over_tensor_parallel([self.bias], tp)
            elif bias and tp.world_size > 1:
                self.bias.summed_over_tp = tp.world_size

        def forward(self, x):
            if not self.input_is_parallel:
                x = scatter_to_tensor_parallel_region(x, self.tp)
            y, bias = te.Linear.forward(self, x)
            if self.reduce_output:
                y = leave_tensor_parallel_region(y, self.tp)
            return y if bias is None or bias.numel() == 0 else y + bias

    return TEColumnParallelLinear, TERowParallelLinear


def _te_device(device: torch.device | str | None) -> torch.device | str:
    if device is None:
        if not torch.cuda.is_available():
            raise ConfigError(
                "te_columnparallel/te_rowparallel/te_layernorm_mlp need a CUDA GPU; set them to false on CPU"
            )
        return "cuda"
    return device


def te_column_parallel_linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    gather_output: bool = False,
    blocks: Sequence[int] | None = None,
    tp: TensorParallel | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """A TE column-parallel linear; arguments as :class:`neox.parallel.ColumnParallelLinear`."""
    column, _ = _classes()
    return column(
        in_features,
        out_features,
        bias,
        gather_output=gather_output,
        blocks=blocks,
        tp=tp or tensor_parallel(),
        device=_te_device(device),
        dtype=dtype,
    )


def te_row_parallel_linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    input_is_parallel: bool = True,
    reduce_output: bool = True,
    tp: TensorParallel | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """A TE row-parallel linear; arguments as :class:`neox.parallel.RowParallelLinear`."""
    _, row = _classes()
    return row(
        in_features,
        out_features,
        bias,
        input_is_parallel=input_is_parallel,
        reduce_output=reduce_output,
        tp=tp or tensor_parallel(),
        device=_te_device(device),
        dtype=dtype,
    )
