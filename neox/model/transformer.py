"""One pre-LN transformer block (upstream ``ParallelTransformerLayer``).

Sequential residual (``gpt_j_residual: false``)::

    a = x + drop(attn(ln1(x)))
    y = a + drop(mlp(ln2(a)))

Parallel residual (``gpt_j_residual: true``, HF ``use_parallel_residual``)::

    y = x + allreduce_tp(drop(attn(ln1(x))) + drop(mlp(ln2(x))))

In parallel mode the attention and MLP outputs stay per-rank partial sums, each with its
rank's bias added, and one all-reduce sums both: upstream's semantics, which make the
effective bias of a TP-sharded checkpoint the sum over ranks. ``gpt_j_tied`` uses ``ln1`` for
both branches; ``post_attention_layernorm`` still exists (unused), as upstream, so the
checkpoint keys do not change. Upstream drops the attention branch when the MLP has no bias
(facts §6.2, flagged as a bug); here both branches are always added.

Under sequence parallelism ``x`` is this rank's ``[b, s/tp, h]`` shard: the norms run on it (their
gradients summed over the TP ranks), the attention and MLP gather the sequence on entry and
reduce-scatter on exit (:mod:`neox.parallel.sequence`). Dropout of the sequential residual then
acts on a shard and draws from the model-parallel stream; in the parallel residual it acts on the
full partial sums before the one reduction and draws from the shared stream, as without SP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox.model.attention import SelfAttention
from neox.model.linears import Linears
from neox.model.mlp import MLP
from neox.model.norms import make_norm
from neox.parallel import TensorParallel
from neox.parallel.random import rng_tracker
from neox.parallel.sequence import leave_tensor_parallel_region, sum_gradients_over_tensor_parallel


class TransformerLayer(nn.Module):
    """Transformer block ``layer_index`` (0-based; NeoX layer ``layer_index + 2``); [b, s, h] -> [b, s, h]."""

    def __init__(
        self, cfg, layer_index: int, linears: Linears, tp: TensorParallel, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.tp = tp
        self.parallel_residual = cfg.gpt_j_residual
        self.tied_norm = cfg.gpt_j_residual and cfg.gpt_j_tied
        self.hidden_dropout = cfg.hidden_dropout
        self.input_layernorm = make_norm(cfg, cfg.hidden_size, device=device, dtype=dtype)
        self.attention = SelfAttention(cfg, layer_index, linears, tp, device=device, dtype=dtype)
        self.post_attention_layernorm = make_norm(cfg, cfg.hidden_size, device=device, dtype=dtype)
        self.mlp = MLP(cfg, linears, tp, device=device, dtype=dtype)
        norms = [*self.input_layernorm.parameters(), *self.post_attention_layernorm.parameters()]
        sum_gradients_over_tensor_parallel(norms, tp)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.hidden_dropout, self.training) if self.hidden_dropout > 0 else x

    def _drop_shard(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on this rank's activations: its sequence shard under SP, else the replicated whole."""
        if not (self.tp.sequence_parallel and self.training and self.hidden_dropout > 0):
            return self._drop(x)
        with rng_tracker().fork():
            return self._drop(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parallel_residual:
            h_attn = self.input_layernorm(x)
            h_mlp = h_attn if self.tied_norm else self.post_attention_layernorm(x)
            partial = self._drop(self.attention(h_attn)) + self._drop(self.mlp(h_mlp))
            return x + leave_tensor_parallel_region(partial, self.tp)
        a = x + self._drop_shard(self.attention(self.input_layernorm(x)))
        return a + self._drop_shard(self.mlp(self.post_attention_layernorm(a)))
