"""Tensor-parallel layers: exact nn.Linear/nn.Embedding behaviour at TP = 1, and sharding.

Run: pytest -q tests/unit/test_parallel.py
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neox.parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallel,
    VocabParallelEmbedding,
    copy_to_tensor_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    scatter_to_tensor_parallel_region,
    set_tensor_parallel_group,
    shard,
    tensor_parallel,
    unshard,
)


def _same_as_linear(layer: nn.Module, bias: bool) -> None:
    torch.manual_seed(0)
    ref = nn.Linear(layer.in_features, layer.out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(ref.weight)
        if bias:
            layer.bias.copy_(ref.bias)
    x = torch.randn(2, 5, ref.in_features, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = layer(x), ref(x_ref)
    assert torch.equal(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)
    assert torch.equal(layer.weight.grad, ref.weight.grad)
    if bias:
        assert torch.equal(layer.bias.grad, ref.bias.grad)
    assert list(dict(layer.named_parameters())) == list(dict(ref.named_parameters()))


@pytest.mark.parametrize("bias", [True, False])
def test_column_parallel_linear_is_nn_linear_at_tp1(bias):
    _same_as_linear(ColumnParallelLinear(12, 20, bias, gather_output=True), bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduce_output", [True, False])
def test_row_parallel_linear_is_nn_linear_at_tp1(bias, reduce_output):
    _same_as_linear(RowParallelLinear(20, 12, bias, reduce_output=reduce_output), bias)


def test_vocab_parallel_embedding_is_nn_embedding_at_tp1():
    torch.manual_seed(0)
    ref = nn.Embedding(64, 8)
    layer = VocabParallelEmbedding(64, 8)
    with torch.no_grad():
        layer.weight.copy_(ref.weight)
    ids = torch.randint(0, 64, (3, 7))
    out, out_ref = layer(ids), ref(ids)
    assert torch.equal(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert torch.equal(layer.weight.grad, ref.weight.grad)


def test_collectives_are_identity_without_autograd_nodes_at_tp1():
    tp = tensor_parallel()
    assert (tp.world_size, tp.rank, tp.group) == (1, 0, None)
    x = torch.randn(3, 4, requires_grad=True)
    for fn in (
        copy_to_tensor_parallel_region,
        reduce_from_tensor_parallel_region,
        scatter_to_tensor_parallel_region,
        gather_from_tensor_parallel_region,
    ):
        assert fn(x, tp) is x


def test_set_tensor_parallel_group_none_resets_to_single_rank():
    assert set_tensor_parallel_group(None) == TensorParallel(None, 0, 1)


def test_shard_and_unshard_one_block():
    full = torch.arange(24.0).reshape(6, 4)
    shards = [shard(full, 0, r, 3) for r in range(3)]
    assert torch.equal(shards[1], full[2:4])
    assert torch.equal(unshard(shards, 0), full)
    cols = [shard(full, 1, r, 2) for r in range(2)]
    assert torch.equal(cols[1], full[:, 2:])
    assert torch.equal(unshard(cols, 1), full)


def test_shard_splits_each_block_gqa_layout():
    # [Q (4 rows) | K (2) | V (2)] over 2 ranks: rank r holds [Q_r | K_r | V_r].
    q, k, v = torch.arange(4.0), torch.arange(10.0, 12.0), torch.arange(20.0, 22.0)
    full = torch.cat([q, k, v])
    blocks = (4, 2, 2)
    assert shard(full, 0, 0, 2, blocks).tolist() == [0, 1, 10, 20]
    assert shard(full, 0, 1, 2, blocks).tolist() == [2, 3, 11, 21]
    assert torch.equal(unshard([shard(full, 0, r, 2, blocks) for r in range(2)], 0, blocks), full)


def test_tp2_layers_take_their_shard_of_the_full_weight():
    """The shard each rank keeps, and the math the collectives complete, equal the TP = 1 layer.

    Without a process group the two ranks are simulated in one process: the sum over ranks of
    the row-parallel partial products (the all-reduce) and the concatenation of the
    column-parallel outputs (the all-gather) are done by hand.
    """
    torch.manual_seed(0)
    full_col, full_row = nn.Linear(6, 8), nn.Linear(8, 6)
    x = torch.randn(2, 6)
    cols, rows = [], []
    for r in range(2):
        tp = TensorParallel(group=None, rank=r, world_size=2)
        col, row = ColumnParallelLinear(6, 8, tp=tp), RowParallelLinear(8, 6, reduce_output=False, tp=tp)
        assert col.full_shape("weight") == (8, 6) and row.full_shape("weight") == (6, 8)
        with torch.no_grad():
            col.weight.copy_(col.take_shard("weight", full_col.weight))
            col.bias.copy_(col.take_shard("bias", full_col.bias))
            row.weight.copy_(row.take_shard("weight", full_row.weight))
            row.bias.copy_(
                row.take_shard("bias", full_row.bias) / 2
            )  # each rank adds its bias before the sum
        cols.append(col)
        rows.append(row)
    hidden = [col(x) for col in cols]  # copy_to_tensor_parallel_region is the identity forward
    assert torch.allclose(torch.cat(hidden, dim=-1), full_col(x))
    out = sum(row(h) for row, h in zip(rows, hidden))
    assert torch.allclose(out, full_row(full_col(x)), atol=1e-6)
