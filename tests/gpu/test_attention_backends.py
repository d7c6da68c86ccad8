"""Attention backends on a GPU, bf16: each against SDPA (and SDPA against an fp32 reference),
forward and backward; whole models with flash-attn / Transformer Engine against plain ones.

A backend whose package is missing is skipped. Run on a CUDA machine:
pytest -q -m gpu tests/gpu/test_attention_backends.py
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from neox import config as neox_config
from neox.model import build
from neox.model.attention_backends import FlashAttention, SDPAttention, TEAttention

pytestmark = pytest.mark.gpu

HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
HAS_TE = importlib.util.find_spec("transformer_engine") is not None
needs_flash = pytest.mark.skipif(not HAS_FLASH, reason="flash-attn is not installed")
needs_te = pytest.mark.skipif(not HAS_TE, reason="transformer-engine is not installed")

B, S, HEADS, D = 2, 256, 8, 64


def qkv(kv_heads: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = lambda h: (B, S, h, D)  # noqa: E731
    return [
        torch.randn(shape(h), generator=g, device="cuda", dtype=torch.bfloat16).requires_grad_()
        for h in (HEADS, kv_heads, kv_heads)
    ]


def reference(q, k, v, window=None):
    """Causal attention in fp32 with explicit GQA repetition."""
    rep = q.shape[2] // k.shape[2]
    q, k, v = q.float(), k.float().repeat_interleave(rep, 2), v.float().repeat_interleave(rep, 2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    i = torch.arange(q.shape[1], device=q.device)
    allowed = i[:, None] >= i[None, :]
    if window is not None:
        allowed &= i[:, None] - i[None, :] <= window
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v)


def forward_backward(fn, inputs):
    out = fn(*inputs)
    g = torch.Generator(device="cuda").manual_seed(1)
    grad = torch.randn(out.shape, generator=g, device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad(out, inputs, grad)
    return out, grads


def assert_close_bf16(a, b):
    torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("kv_heads", [HEADS, 2])
@pytest.mark.parametrize("window", [None, 31])
def test_sdpa_matches_fp32_reference(kv_heads, window):
    inputs = qkv(kv_heads)
    out, grads = forward_backward(lambda q, k, v: SDPAttention(window)(q, k, v, 0.0), inputs)
    ref, ref_grads = forward_backward(lambda q, k, v: reference(q, k, v, window), inputs)
    assert out.dtype == torch.bfloat16 and out.shape == (B, S, HEADS, D)
    assert_close_bf16(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close_bf16(g, r)


def _compare_with_sdpa(backend, kv_heads, window):
    inputs = qkv(kv_heads)
    out, grads = forward_backward(lambda q, k, v: backend(q, k, v, 0.0), inputs)
    ref, ref_grads = forward_backward(lambda q, k, v: SDPAttention(window)(q, k, v, 0.0), inputs)
    assert out.shape == ref.shape
    assert_close_bf16(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close_bf16(g, r)


@needs_flash
@pytest.mark.parametrize("kv_heads", [HEADS, 2])
@pytest.mark.parametrize("window", [None, 31])
def test_flash_matches_sdpa(kv_heads, window):
    _compare_with_sdpa(FlashAttention(window), kv_heads, window)


@needs_te
@pytest.mark.parametrize("kv_heads", [HEADS, 2])
def test_te_matches_sdpa(kv_heads):
    _compare_with_sdpa(TEAttention(HEADS, kv_heads, D, 0.0, None), kv_heads, None)


def _config(repo, **overrides):
    shape = {
        "num_layers": 2,
        "hidden_size": 512,
        "num_attention_heads": 8,
        "seq_length": S,
        "max_position_embeddings": S,
        "vocab_file": None,
        "padded_vocab_size": 1024,
        "precision": "bfloat16",
    }
    return neox_config.load([repo / "configs" / "neox-tiny.yml"], {**shape, **overrides})


def _model_outputs(cfg):
    # Same seed and parameter names on the same device: the same initial weights for every backend.
    model = build(cfg, device="cuda").train()
    ids = torch.randint(
        0, 1000, (B, S), device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)
    )
    logits = model(ids)
    logits.float().square().mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def _compare_models(repo, **overrides):
    logits, grads = _model_outputs(_config(repo, **overrides))
    ref_logits, ref_grads = _model_outputs(_config(repo))
    assert grads.keys() == ref_grads.keys()
    assert_close_bf16(logits, ref_logits)
    for name in grads:
        scale = ref_grads[name].float().abs().max().clamp(min=1e-6)
        assert (grads[name].float() - ref_grads[name].float()).abs().max() / scale < 5e-2, name


def test_model_on_gpu_bf16_runs_and_is_deterministic(repo):
    a, _ = _model_outputs(_config(repo))
    b, _ = _model_outputs(_config(repo))
    assert torch.isfinite(a).all() and torch.equal(a, b)


@needs_flash
def test_model_with_flash_layers_matches_sdpa(repo):
    _compare_models(repo, attention_config=[[["flash"], 2]])


@needs_te
def test_model_with_te_attention_and_linears_matches_plain(repo):
    _compare_models(repo, te_mha=True, te_columnparallel=True, te_rowparallel=True)
