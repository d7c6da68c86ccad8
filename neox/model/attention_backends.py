"""The causal-attention kernel behind one interface, chosen per layer from the config.

Every backend maps ``q`` [b, s, heads, d] and ``k``, ``v`` [b, s, kv_heads, d] to the
attention output [b, s, heads, d], causal, scale 1/√d, with ``dropout_p`` on the
probabilities; query head i reads kv head ``i // (heads / kv_heads)`` (GQA).

| backend | chosen when | kernel |
|---|---|---|
| ``sdpa`` | attention type ``global`` (the default) | ``torch.nn.functional.scaled_dot_product_attention``, which dispatches to FlashAttention/cuDNN/memory-efficient kernels on GPU |
| ``flash`` | attention type ``flash`` | ``flash_attn.flash_attn_func`` (flash-attn 2), as upstream's Pythia configs ask |
| ``te`` | ``te_mha: true`` | Transformer Engine ``DotProductAttention`` |

``sliding_window_width`` w limits each query to the w keys before it (flash-attn's
``window_size=(w, -1)``); upstream honours it only on the flash path, we honour it on all three
(SDPA then needs an explicit mask). ``apply_query_key_layer_scaling`` and
``attention_softmax_in_fp32`` change only how upstream's unfused fp16 softmax rounds (the
layer-number factor divides the scores and multiplies them back); these kernels accumulate the
softmax in fp32 anyway, so both are accepted and need nothing here. Upstream's sparse,
local, bigbird, gMLP/aMLP, RWKV and Mamba types are not implemented and are refused.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from neox.errors import ConfigError

SUPPORTED_TYPES = ("global", "flash")


class SDPAttention:
    """PyTorch's fused scaled-dot-product attention."""

    name = "sdpa"

    def __init__(self, window: int | None = None) -> None:
        self.window = window
        self._mask: torch.Tensor | None = None  # the last sliding-window mask, reused while s is unchanged

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        # SDPA wants [b, heads, s, d]; the transposes are views, the kernels take the strides.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        gqa = q.shape[1] != k.shape[1]
        if self.window is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa)
        else:
            mask = self._window_mask(q.shape[2], q.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa)
        return out.transpose(1, 2)

    def _window_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        if self._mask is None or self._mask.shape[0] != seq_len or self._mask.device != device:
            self._mask = _sliding_window_mask(seq_len, self.window, device)
        return self._mask


def _sliding_window_mask(seq_len: int, window: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(seq_len, device=device)
    distance = i[:, None] - i[None, :]  # query - key
    return (distance >= 0) & (distance <= window)


class FlashAttention:
    """flash-attn 2's ``flash_attn_func``; takes [b, s, heads, d] as it is, no transposes."""

    name = "flash"

    def __init__(self, window: int | None = None) -> None:
        self.fn = importlib.import_module("flash_attn").flash_attn_func
        self.extra = {} if window is None else {"window_size": (window, -1)}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        return self.fn(q, k, v, dropout_p, softmax_scale=None, causal=True, **self.extra)


class TEAttention:
    """Transformer Engine's ``DotProductAttention`` in bshd layout.

    The TE module is held outside the model's module tree, so the checkpoint keys do not depend
    on the backend (it has no parameters; its FP8 metadata is not used without FP8).
    """

    name = "te"

    def __init__(self, heads: int, kv_heads: int, head_dim: int, dropout: float, window: int | None) -> None:
        te = importlib.import_module("transformer_engine.pytorch")
        self.module = te.DotProductAttention(
            heads,
            head_dim,
            num_gqa_groups=kv_heads,
            attention_dropout=dropout,
            qkv_format="bshd",
            attn_mask_type="causal",
            window_size=None if window is None else (window, 0),
        )

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        self.module.train(dropout_p > 0)  # it drops out only in training mode
        out = self.module(q.contiguous(), k.contiguous(), v.contiguous())  # [b, s, heads * d]
        return out.view(q.shape)


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def attention_backend(cfg, layer_index: int, heads: int, kv_heads: int):
    """The backend for transformer layer ``layer_index`` (0-based) with this rank's head counts."""
    kind = cfg.attention_types[layer_index]
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(
            f"attention_config type {kind!r} (layer {layer_index}) is not supported; "
            f"use {' or '.join(repr(t) for t in SUPPORTED_TYPES)}"
        )
    window = cfg.sliding_window_width
    if cfg.te_mha:
        if not _installed("transformer_engine.pytorch"):
            raise ConfigError(
                "te_mha: true needs Transformer Engine, which is not installed; "
                "install transformer-engine or set te_mha: false"
            )
        return TEAttention(heads, kv_heads, cfg.head_dim, cfg.attention_dropout, window)
    if kind == "flash":
        if not _installed("flash_attn"):
            raise ConfigError(
                f"attention_config asks for 'flash' (layer {layer_index}) but flash-attn is not installed; "
                "install flash-attn or use 'global'"
            )
        if cfg.params_dtype == "float32":
            raise ConfigError(
                f"attention_config asks for 'flash' (layer {layer_index}) but flash-attn needs fp16 or "
                "bfloat16 and precision is fp32; set precision or use 'global'"
            )
        return FlashAttention(window)
    return SDPAttention(window)
