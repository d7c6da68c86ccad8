"""Process-group topology (data × pipe × tensor), tensor-parallel layers and collectives.

- :mod:`~neox.parallel.topology`: the pipe × data × tensor grid in upstream's rank order, its
  process groups, and the ``mpu`` DeepSpeed queries.
- :mod:`~neox.parallel.state`: the tensor-parallel group the layers use (one rank by default).
- :mod:`~neox.parallel.mappings`: autograd-aware collectives at TP region edges.
- :mod:`~neox.parallel.sequence`: sequence parallelism (the sequence-sharded region edges).
- :mod:`~neox.parallel.layers`: ``ColumnParallelLinear``, ``RowParallelLinear``,
  ``VocabParallelEmbedding`` (plain ``nn.Linear``/``nn.Embedding`` behaviour at TP = 1).
- :mod:`~neox.parallel.cross_entropy`: cross-entropy over vocab-sharded logits.
- :mod:`~neox.parallel.random`: the per-TP-rank dropout stream and activation checkpointing.
- :mod:`~neox.parallel.grad_norm`: the global gradient norm, each weight counted once.
- :mod:`~neox.parallel.pipeline`: pipeline stages on DeepSpeed's pipeline engine.
- :mod:`~neox.parallel.sharding`: cutting full weights into TP shards and back.
- :mod:`~neox.parallel.te`: the Transformer Engine linears (optional dependency).
"""

from neox.parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelModule,
    VocabParallelEmbedding,
)
from neox.parallel.mappings import (
    copy_to_tensor_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    scatter_to_tensor_parallel_region,
)
from neox.parallel.sharding import shard, unshard
from neox.parallel.state import TensorParallel, set_tensor_parallel_group, tensor_parallel

__all__ = [
    "ColumnParallelLinear",
    "RowParallelLinear",
    "TensorParallel",
    "TensorParallelModule",
    "VocabParallelEmbedding",
    "copy_to_tensor_parallel_region",
    "gather_from_tensor_parallel_region",
    "reduce_from_tensor_parallel_region",
    "scatter_to_tensor_parallel_region",
    "set_tensor_parallel_group",
    "shard",
    "tensor_parallel",
    "unshard",
]
