"""How a full (TP = 1) weight is cut into tensor-parallel shards, and put back together.

A shard is a contiguous piece along one dimension: rows (dim 0) for column-parallel layers and
the vocab-parallel embedding, columns (dim 1) for row-parallel layers. Some fused weights are
several logical blocks stacked along that dimension, and GPT-NeoX splits *each block* across
the ranks, so rank r holds ``cat(block_0[r], block_1[r], ...)``:

- the gated MLP's ``linear1`` is ``[value | gate]``; each rank computes ``act(gate_r) * value_r``
  on its own output (``megatron/model/transformer.py`` ``Gated_Activation`` chunks the rank's
  local output in two);
- the GQA ``query_key_value`` is ``[Q | K | V]`` with Q wider than K and V; each rank holds
  ``[Q_r | K_r | V_r]`` (``gqa_project`` splits the rank's output by these sizes).

The MHA ``query_key_value`` is one block (its rows are ordered per head, and each rank holds a
contiguous run of heads). These functions are pure; the layers use :func:`shard` to take their
piece of a fully initialised weight, and the checkpoint converter uses both to change TP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _block_sizes(total: int, blocks: Sequence[int] | None) -> list[int]:
    sizes = [total] if blocks is None else list(blocks)
    assert sum(sizes) == total, f"blocks {sizes} do not add up to {total}"
    return sizes


def shard(
    full: torch.Tensor, dim: int, rank: int, world_size: int, blocks: Sequence[int] | None = None
) -> torch.Tensor:
    """Rank ``rank``'s shard of ``full`` along ``dim`` (a view when there is one block).

    ``blocks`` lists the sizes of the consecutive logical blocks along ``dim``; each must be
    divisible by ``world_size``.
    """
    pieces = []
    start = 0
    for size in _block_sizes(full.shape[dim], blocks):
        assert size % world_size == 0, f"block of {size} is not divisible by TP {world_size}"
        part = size // world_size
        pieces.append(full.narrow(dim, start + rank * part, part))
        start += size
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=dim)


def unshard(shards: Sequence[torch.Tensor], dim: int, blocks: Sequence[int] | None = None) -> torch.Tensor:
    """The full tensor from all ranks' shards (in rank order); the inverse of :func:`shard`.

    ``blocks`` are the *full* block sizes, as given to :func:`shard`.
    """
    world_size = len(shards)
    total = sum(s.shape[dim] for s in shards)
    parts = [size // world_size for size in _block_sizes(total, blocks)]
    per_rank = [torch.split(s, parts, dim=dim) for s in shards]
    return torch.cat([per_rank[r][b] for b in range(len(parts)) for r in range(world_size)], dim=dim)
