"""Causal self-attention (upstream ``ParallelSelfAttention``).

One fused QKV projection, rotary on q and k, the backend kernel, the output projection.
The fused ``query_key_value`` rows are laid out as GPT-NeoX lays them out, so checkpoints map
1:1 (facts §4.4, §5.3, upstream ``gqa_project``):

- MHA (``num_kv_heads`` unset or equal to the heads): per head ``[q | k | v]``, i.e. the
  output viewed as ``[heads, 3, head_dim]``; each TP rank holds a run of whole heads.
- GQA (fewer kv heads): blocks ``[Q (heads·d) | K (kv·d) | V (kv·d)]``, and each TP rank holds
  ``[Q_r | K_r | V_r]``.

``use_qk_layernorm`` normalises q and k with one norm of shape ``[heads/tp, head_dim]``
(``attention.qk_layernorm``), as upstream; upstream applies that norm to k as well, which only
has a shape to match with MHA, so it is refused with GQA.

Attention dropout acts on this rank's heads, so it draws from the model-parallel stream
(:mod:`neox.parallel.random`) at every TP degree. Under sequence parallelism ``x`` is a sequence
shard; the QKV projection gathers the whole sequence, so ``b, s`` are read from its output.
"""

from __future__ import annotations

import torch
from torch import nn

from neox.errors import ConfigError
from neox.model.attention_backends import attention_backend
from neox.model.linears import Linears
from neox.model.norms import make_norm
from neox.model.rotary import RotaryEmbedding, apply_rotary
from neox.parallel import TensorParallel
from neox.parallel.layers import divide
from neox.parallel.random import rng_tracker


class SelfAttention(nn.Module):
    def __init__(
        self, cfg, layer_index: int, linears: Linears, tp: TensorParallel, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        h, heads, kv_heads, d = cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads, cfg.head_dim
        self.gqa = kv_heads != heads
        self.heads = divide(heads, tp.world_size, "num_attention_heads")
        self.kv_heads = divide(kv_heads, tp.world_size, "num_kv_heads")
        self.head_dim = d
        bias = cfg.use_bias_in_attn_linear
        self.query_key_value = linears.column(
            h,
            (heads + 2 * kv_heads) * d,
            bias,
            blocks=(heads * d, kv_heads * d, kv_heads * d) if self.gqa else None,
            tp=tp,
            device=device,
            dtype=dtype,
        )
        self.qk_layernorm: nn.Module | None = None
        if cfg.use_qk_layernorm:
            if self.gqa:
                raise ConfigError("use_qk_layernorm: true works only without GQA (num_kv_heads = heads)")
            self.qk_layernorm = make_norm(cfg, (self.heads, d), device=device, dtype=dtype)
            for p in self.qk_layernorm.parameters():
                p.model_parallel = True  # [heads/tp, d]: split by heads
        self.rotary_emb: RotaryEmbedding | None = None
        if cfg.pos_emb == "rotary":
            self.rotary_emb = RotaryEmbedding(
                cfg.rotary_ndims,
                cfg.rotary_emb_base,
                cfg.seq_length,
                cfg.rotary_save_freqs_buffer,
                device=device,
                dtype=dtype,
            )
        self.backend = attention_backend(cfg, layer_index, self.heads, self.kv_heads)
        self.dropout_p = cfg.attention_dropout
        self.dense = linears.row(
            heads * d, h, bias, reduce_output=not cfg.gpt_j_residual, tp=tp, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.query_key_value(x)  # [b, s, (heads + 2·kv_heads)·d / tp]
        b, s = qkv.shape[:2]
        if self.gqa:
            q, k, v = qkv.split([self.heads * self.head_dim, *2 * [self.kv_heads * self.head_dim]], dim=-1)
            q = q.view(b, s, self.heads, self.head_dim)
            k, v = k.view(b, s, self.kv_heads, self.head_dim), v.view(b, s, self.kv_heads, self.head_dim)
        else:
            q, k, v = qkv.view(b, s, self.heads, 3, self.head_dim).unbind(dim=3)  # [b, s, heads, d] each
        if self.qk_layernorm is not None:
            q, k = self.qk_layernorm(q), self.qk_layernorm(k)
        if self.rotary_emb is not None:
            cos, sin = self.rotary_emb(s)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.training and self.dropout_p > 0:
            with rng_tracker().fork():
                out = self.backend(q, k, v, self.dropout_p)  # [b, s, heads, d]
        else:
            out = self.backend(q, k, v, 0.0)
        return self.dense(out.reshape(b, s, self.heads * self.head_dim))
