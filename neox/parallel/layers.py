"""Tensor-parallel linear and embedding layers (GPT-NeoX ``megatron/mpu/layers.py`` semantics).

- :class:`ColumnParallelLinear`: ``y = x Wᵀ + b`` with the output features (rows of W and b)
  split over the TP ranks; the input is replicated.
- :class:`RowParallelLinear`: the input features (columns of W) split over the ranks; the
  partial products are summed across ranks and the replicated bias is added once. With
  ``reduce_output=False`` the layer adds its bias to the *partial* product and leaves the sum
  to the caller: GPT-NeoX's parallel-residual block does that, adding the attention and MLP
  outputs of each rank before one all-reduce, so the effective bias of a TP-sharded
  checkpoint is the sum over ranks (facts §5.2).
- :class:`VocabParallelEmbedding`: the vocabulary rows split over the ranks.

With sequence parallelism (``tp.sequence_parallel``) the region edges change collective
(:mod:`neox.parallel.sequence`): the column-parallel input is all-gathered along the sequence,
the row-parallel output and the embedding are reduce-scattered along it, and a replicated
row-parallel bias added after the reduce-scatter sums its gradient over the ranks.

Parameters that are split over the ranks carry ``model_parallel = True``, the attribute
DeepSpeed's gradient-norm code reads: it counts those on every rank and replicated ones on TP
rank 0 only, so the global norm for clipping counts each weight once.

Parameters are named ``weight`` and ``bias`` and hold this rank's shard, so a module's
``state_dict`` is the per-rank file content of a NeoX checkpoint. With one TP rank each layer
is exactly ``nn.Linear`` / ``nn.Embedding`` (same parameters, same calls).

Every layer knows the full (TP = 1) shape of each parameter and how to take its shard of a full
tensor (:meth:`TensorParallelModule.full_shape`, :meth:`TensorParallelModule.take_shard`):
initialisation fills the full tensor and keeps this rank's piece, so the values do not depend
on the TP degree (upstream initialises each shard from a per-rank RNG instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neox.parallel.mappings import gather_from_tensor_parallel_region, scatter_to_tensor_parallel_region
from neox.parallel.sequence import (
    enter_tensor_parallel_region,
    leave_tensor_parallel_region,
    sequence_parallel_linear,
    sum_gradients_over_tensor_parallel,
)
from neox.parallel.sharding import shard
from neox.parallel.state import TensorParallel, tensor_parallel


def divide(numerator: int, denominator: int, what: str) -> int:
    """``numerator / denominator``, which must be whole (a sharding invariant)."""
    assert numerator % denominator == 0, f"{what} {numerator} is not divisible by TP {denominator}"
    return numerator // denominator


class TensorParallelModule:
    """Mixin: how each parameter of a TP layer relates to its full (TP = 1) tensor.

    ``_split`` maps a parameter name to ``(dim, blocks)`` (split along ``dim``, block sizes as in
    :func:`neox.parallel.sharding.shard`) or to ``None`` (replicated on every rank).
    """

    tp: TensorParallel
    _split: dict[str, tuple[int, Sequence[int] | None] | None]
    _full_shapes: dict[str, torch.Size]

    def full_shape(self, name: str) -> torch.Size:
        """Shape of parameter ``name`` in a TP = 1 model."""
        return self._full_shapes[name]

    def take_shard(self, name: str, full: torch.Tensor) -> torch.Tensor:
        """This rank's piece of ``full`` (a tensor of :meth:`full_shape`) for parameter ``name``."""
        assert full.shape == self._full_shapes[name], (name, full.shape, self._full_shapes[name])
        split = self._split[name]
        if split is None or self.tp.world_size == 1:
            return full
        dim, blocks = split
        return shard(full, dim, self.tp.rank, self.tp.world_size, blocks)

    def _mark_split_parameters(self) -> None:
        for name, split in self._split.items():
            param = getattr(self, name, None)
            if split is not None and isinstance(param, nn.Parameter):
                param.model_parallel = True


class ColumnParallelLinear(TensorParallelModule, nn.Module):
    """Linear layer with its output features split over the TP ranks.

    Args:
        in_features, out_features: full (TP = 1) sizes.
        bias: whether the layer has a bias.
        gather_output: all-gather the output so every rank holds all ``out_features``
            (for logits); otherwise each rank returns its own slice.
        blocks: sizes of the logical blocks stacked along the output features, each split over
            the ranks (see :mod:`neox.parallel.sharding`); None for one block.
        tp: the tensor-parallel group; the current one (:func:`tensor_parallel`) by default.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        gather_output: bool = False,
        blocks: Sequence[int] | None = None,
        tp: TensorParallel | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.tp = tp or tensor_parallel()
        assert not (gather_output and blocks), "gathering a multi-block output would interleave blocks"
        self.in_features, self.out_features = in_features, out_features
        self.gather_output = gather_output
        local_out = divide(out_features, self.tp.world_size, "output features")
        self.weight = nn.Parameter(torch.empty(local_out, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(local_out, device=device, dtype=dtype)) if bias else None
        self._split = {"weight": (0, blocks), "bias": (0, blocks)}
        self._full_shapes = {
            "weight": torch.Size([out_features, in_features]),
            "bias": torch.Size([out_features]),
        }
        self._mark_split_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.sequence_parallel:
            y = sequence_parallel_linear(x, self.weight, self.bias, self.tp)
        else:
            y = F.linear(enter_tensor_parallel_region(x, self.tp), self.weight, self.bias)
        return gather_from_tensor_parallel_region(y, self.tp) if self.gather_output else y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features} (TP {self.tp.world_size}), bias={self.bias is not None}"


class RowParallelLinear(TensorParallelModule, nn.Module):
    """Linear layer with its input features split over the TP ranks.

    Args:
        in_features, out_features: full (TP = 1) sizes.
        bias: whether the layer has a (replicated) bias.
        input_is_parallel: the input already holds this rank's slice of the features (the output
            of a column-parallel layer); otherwise the layer takes its slice first.
        reduce_output: sum the partial products over the ranks and then add the bias (the usual
            case; a reduce-scatter along the sequence under sequence parallelism). If False,
            return ``partial + bias`` and let the caller reduce: GPT-NeoX's parallel residual,
            where each rank's bias is added before the one reduction.
        tp: the tensor-parallel group; the current one by default.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        input_is_parallel: bool = True,
        reduce_output: bool = True,
        tp: TensorParallel | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.tp = tp or tensor_parallel()
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel, self.reduce_output = input_is_parallel, reduce_output
        local_in = divide(in_features, self.tp.world_size, "input features")
        self.weight = nn.Parameter(torch.empty(out_features, local_in, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self._split = {"weight": (1, None), "bias": None}
        self._full_shapes = {
            "weight": torch.Size([out_features, in_features]),
            "bias": torch.Size([out_features]),
        }
        self._mark_split_parameters()
        if self.bias is not None and reduce_output:
            sum_gradients_over_tensor_parallel([self.bias], self.tp)  # added to sequence shards under SP
        elif self.bias is not None and self.tp.world_size > 1:
            self.bias.summed_over_tp = self.tp.world_size  # one copy per rank, all added: see neox.train.optim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tensor_parallel_region(x, self.tp)
        if self.tp.world_size == 1 or not self.reduce_output:
            return F.linear(x, self.weight, self.bias)
        y = leave_tensor_parallel_region(F.linear(x, self.weight), self.tp)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features} (TP {self.tp.world_size}), out={self.out_features}, bias={self.bias is not None}"


class VocabParallelEmbedding(TensorParallelModule, nn.Module):
    """Embedding table with its rows (the padded vocabulary) split over the TP ranks.

    Each rank looks up the ids in its own range, writes zeros for the others, and the ranks'
    results are summed (reduce-scattered along the sequence under sequence parallelism).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        tp: TensorParallel | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.tp = tp or tensor_parallel()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        rows = divide(num_embeddings, self.tp.world_size, "padded vocab size")
        self.vocab_start, self.vocab_end = self.tp.rank * rows, (self.tp.rank + 1) * rows
        self.weight = nn.Parameter(torch.empty(rows, embedding_dim, device=device, dtype=dtype))
        self._split = {"weight": (0, None)}
        self._full_shapes = {"weight": torch.Size([num_embeddings, embedding_dim])}
        self._mark_split_parameters()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp.world_size == 1:
            return F.embedding(ids, self.weight)
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        local = (ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return leave_tensor_parallel_region(out, self.tp)

    def logits(self, x: torch.Tensor, *, gather_output: bool) -> torch.Tensor:
        """The tied LM head: ``x · Wᵀ`` over this rank's vocab rows (all of them if ``gather_output``)."""
        if self.tp.sequence_parallel:
            y = sequence_parallel_linear(x, self.weight, None, self.tp)
        else:
            y = F.linear(enter_tensor_parallel_region(x, self.tp), self.weight)
        return gather_from_tensor_parallel_region(y, self.tp) if gather_output else y

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim} (TP {self.tp.world_size})"
