"""Rotary position embedding, GPT-NeoX style (``megatron/model/positional_embeddings.py``).

- Only the first ``rotary_ndims`` dims of each head rotate (``rotary_pct``); the rest pass.
- Split-halves convention: dim i pairs with dim i + d/2, ``rotate_half(x) = [-x₂, x₁]``
  (not the interleaved pairs of Meta's original Llama code; HF's GPTNeoX and Llama agree).
- ``inv_freq = 1 / base^(2i/d)``; for position t the angles are ``t·inv_freq`` repeated twice.
- Positions are 0 … s-1 of the sample: upstream's rotary ignores ``position_ids``.
- cos/sin are computed in fp32 for ``seq_length`` positions, then cast to the parameter dtype,
  as upstream does. HF computes them in fp32 per call and casts to the activation dtype; both
  are the same function in fp32, and they round identically in bf16/fp16.
- ``inv_freq`` is a checkpoint entry (``attention.rotary_emb.inv_freq``, in the parameter
  dtype) only with ``rotary_save_freqs_buffer``, as in Pythia/20B-era checkpoints; the cos/sin
  caches are never saved.
"""

from __future__ import annotations

import torch
from torch import nn


def inverse_frequencies(dim: int, base: float, device=None) -> torch.Tensor:
    """``1 / base^(2i/dim)`` for i < dim/2, in fp32."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))


def _cos_sin(inv_freq: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(seq_len, dtype=torch.float32, device=inv_freq.device)
    angles = torch.outer(t, inv_freq)
    emb = torch.cat((angles, angles), dim=-1)  # [s, d]
    return emb.cos(), emb.sin()


class RotaryEmbedding(nn.Module):
    """cos/sin tables for ``dim`` rotated dims, cached for ``max_seq_len`` positions."""

    def __init__(
        self, dim: int, base: float, max_seq_len: int, save_inv_freq: bool, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        assert dim % 2 == 0, f"rotary dims {dim} must be even"
        self.dim, self.base = dim, base
        inv_freq = inverse_frequencies(dim, base, device)
        if save_inv_freq:
            self.register_buffer("inv_freq", inv_freq.to(dtype), persistent=True)
        cos, sin = _cos_sin(inv_freq, max_seq_len)
        self.register_buffer("cos_cached", cos.to(dtype), persistent=False)
        self.register_buffer("sin_cached", sin.to(dtype), persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions 0 … seq_len-1, shaped [s, 1, dim] to broadcast over heads."""
        if seq_len <= self.cos_cached.shape[0]:
            cos, sin = self.cos_cached[:seq_len], self.sin_cached[:seq_len]
        else:  # longer than seq_length (e.g. evaluation): compute, don't grow the cache
            cos, sin = _cos_sin(inverse_frequencies(self.dim, self.base, self.cos_cached.device), seq_len)
            cos, sin = cos.to(self.cos_cached.dtype), sin.to(self.sin_cached.dtype)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of each head of ``x`` [b, s, heads, head_dim]."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
