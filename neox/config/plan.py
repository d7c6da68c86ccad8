"""The dry run: parameter count, FLOPs per token, batch arithmetic, parallel layout and a per-GPU
memory estimate, from a config alone (no torch, no GPU), in milliseconds.

FLOPs per token (training = forward + backward) come in the conventions of perf-anchors §1:

- ``causal``: 6·N_matmul + 6·L·(heads·head_dim)·s̄, where N_matmul counts every weight that
  takes part in a matmul per token (QKV, attention output, both MLP linears, the LM head; not the
  embedding lookup, norms or biases) and s̄ = s for a full causal context (each query sees on
  average s/2 keys; QKᵀ and A·V are 2·2·s̄/2 FLOPs per query dim forward, x3 for backward). GQA
  changes the QKV width but not the score FLOPs, which depend on the query heads.
- ``noncausal``: the same without halving the attention term (PaLM/nanoGPT/torchtitan style).
- ``neox``: upstream GPT-NeoX's MFU formula 72·L·h²·(1 + s/(6h) + V/(16·L·h))
  (``megatron/logging.py``), which assumes MHA and a 4h non-gated MLP whatever the config says;
  ``neox_hfu``: the same with 96 instead of 72 under activation checkpointing.

With ``sliding_window_width`` w, each query sees at most w keys, which shrinks the attention term.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neox.config.config import Config

GIB = 1024**3
BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def _vocab(cfg: Config) -> int:
    return cfg.require_padded_vocab_size()


def _layer_params(cfg: Config) -> dict[str, int]:
    """Parameters of one transformer layer, split by role (and whether TP splits them)."""
    h, d, heads, kv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.kv_heads
    qkv_out = (heads + 2 * kv) * d
    linear1_out = 2 * cfg.ffn_dim if cfg.is_gated_mlp else cfg.ffn_dim
    matmul = h * qkv_out + h * h + h * linear1_out + cfg.ffn_dim * h
    split_bias = (qkv_out if cfg.use_bias_in_attn_linear else 0) + (linear1_out if cfg.use_bias_in_mlp else 0)
    replicated_bias = (h if cfg.use_bias_in_attn_linear else 0) + (h if cfg.use_bias_in_mlp else 0)
    norm = 2 * _norm_params(cfg, h)
    if cfg.use_qk_layernorm:
        norm += _norm_params(cfg, heads * d)  # one norm over [heads, head_dim], shared by q and k
    return {"matmul": matmul, "split_bias": split_bias, "replicated_bias": replicated_bias, "norm": norm}


def _norm_params(cfg: Config, width: int) -> int:
    kind = cfg.norm.removeprefix("te_")
    if kind == "layernorm":
        return width * (2 if cfg.use_bias_in_norms else 1)
    if kind == "rmsnorm":
        return width
    if kind == "scalenorm":
        return 1
    return 0  # non_parametric_layernorm


def parameter_count(cfg: Config) -> dict[str, int]:
    """Exact parameter counts of the model this config builds.

    ``total``: all parameters (a tied LM head is counted once). ``embedding``: the word embedding
    plus learned positions. ``non_embedding``: total - embedding. ``matmul``: weights used in a
    matmul per token: all linear weights including the LM head (the tied embedding counts here
    too, as the head), excluding the embedding lookup, norms and biases. ``per_layer``: one layer.
    """
    h, v, n = cfg.hidden_size, _vocab(cfg), cfg.num_layers
    layer = _layer_params(cfg)
    per_layer = sum(layer.values())
    positions = cfg.max_position_embeddings * h if cfg.pos_emb == "learned" else 0
    embedding = v * h + positions
    head = 0 if not cfg.no_weight_tying else v * h
    final_norm = _norm_params(cfg, h)
    total = embedding + n * per_layer + final_norm + head
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "matmul": n * layer["matmul"] + v * h,
        "per_layer": per_layer,
        "lm_head": head,
    }


def _attended_keys(cfg: Config, causal: bool) -> float:
    """Average number of keys a query attends to."""
    s, w = cfg.seq_length, cfg.sliding_window_width
    if w is None or w >= s:
        return s / 2 if causal else s
    if not causal:
        return w
    return w - w * w / (2 * s)  # positions < w see their prefix, the rest see w keys


def flops_per_token(cfg: Config) -> dict[str, float]:
    """Training FLOPs per token (forward + backward) in the conventions above."""
    from neox.errors import ConfigError

    if cfg.seq_length is None:
        raise ConfigError("seq_length is not set; FLOPs per token need the sequence length")
    h, n, s, v = cfg.hidden_size, cfg.num_layers, cfg.seq_length, _vocab(cfg)
    matmul = parameter_count(cfg)["matmul"]
    attn_width = cfg.num_attention_heads * cfg.head_dim
    causal = 6 * matmul + 12 * n * attn_width * _attended_keys(cfg, True)
    noncausal = 6 * matmul + 12 * n * attn_width * _attended_keys(cfg, False)
    neox = 72 * n * h * h * (1 + s / (6 * h) + v / (16 * n * h))
    return {
        "causal": causal,
        "noncausal": noncausal,
        "neox": neox,
        "neox_hfu": neox * (4 / 3 if cfg.checkpoint_activations else 1),
    }


def coordinates(rank: int, data: int, pipe: int, tensor: int) -> dict[str, int]:
    """(pipe, data, tensor) coordinates of a global rank in upstream's [pipe, data, model] order:
    rank = pipe_rank·(data·tensor) + data_rank·tensor + tensor_rank (tensor varies fastest)."""
    return {"pipe": rank // (data * tensor), "data": rank // tensor % data, "tensor": rank % tensor}


def layout(cfg: Config) -> dict[str, Any]:
    """The data x pipe x tensor grid and how global ranks map onto it."""
    dp, pp, tp = cfg.data_parallel_size, max(cfg.pipe_parallel_size, 1), cfg.model_parallel_size
    last = cfg.world_size - 1
    return {
        "world_size": cfg.world_size,
        "data": dp,
        "pipe": pp,
        "tensor": tp,
        "order": "[pipe, data, tensor]: rank = pipe·(data·tensor) + data·tensor + tensor",
        "tensor_group_of_rank_0": list(range(tp)),
        "data_group_of_rank_0": [i * tp for i in range(dp)],
        "pipe_group_of_rank_0": [i * dp * tp for i in range(pp)],
        "last_rank": coordinates(last, dp, pp, tp),
    }


def _activation_bytes_per_layer(cfg: Config, micro: int) -> tuple[float, float]:
    """(full, checkpointed) activation bytes of one layer for one micro batch on one GPU.

    Follows Korthikanti et al. 2022 (34·s·b·h for a 16-bit MHA/4h layer), generalised to GQA and
    gated MLPs, with fused attention (SDPA/flash: no s² score matrices are stored). Without
    sequence parallelism the norm inputs, the QKV/MLP inputs and dropout masks (10·s·b·h) are
    replicated across tensor-parallel ranks; the rest is split.
    """
    s, h, tp = cfg.seq_length, cfg.hidden_size, cfg.model_parallel_size
    kv_width = cfg.kv_heads * cfg.head_dim
    linear1 = 2 * cfg.ffn_dim if cfg.is_gated_mlp else cfg.ffn_dim
    scale = BYTES[cfg.params_dtype] / 2
    replicated = 10 * h
    attention = 2 * (h + kv_width) + 2 * kv_width + 2 * h + 2 * h  # Q,K; V; context; attention output
    mlp = 2 * linear1 + 2 * cfg.ffn_dim + (2 * cfg.ffn_dim if cfg.is_gated_mlp else 0)
    split = attention + mlp
    if cfg.sequence_parallel and tp > 1:
        per_token = (replicated + split) / tp
        checkpointed = 2 * h / tp
    else:
        per_token = replicated + split / tp
        checkpointed = 2 * h
    tokens = s * micro
    return per_token * tokens * scale, checkpointed * tokens * scale


def memory_estimate(cfg: Config) -> dict[str, float]:
    """Per-GPU memory in bytes for the most loaded pipeline stage.

    Assumptions: weights in ``params_dtype``; gradients in ``params_dtype`` (fp32 when
    ``data_types.grad_accum_dtype`` is fp32); Adam-family optimizer states of 8 bytes per parameter
    (m, v in fp32) plus a 4-byte fp32 master copy when weights are 16-bit; cpu_adam/cpu_torch_adam
    keep them in CPU memory. ZeRO >= 1 divides optimizer states by data-parallel size, >= 2 also
    gradients, 3 also weights. Pipeline stages split the layers evenly; the first stage holds the
    embedding and up to min(pipe, grad_accum) micro batches in flight (1F1B). Activations as in
    :func:`_activation_bytes_per_layer` plus the fp32 logits; with ``checkpoint_activations`` only
    layer inputs are kept, plus one layer recomputed at a time. Not included: CUDA context,
    communication buckets, allocator fragmentation (budget several GiB).
    """
    counts = parameter_count(cfg)
    layer = _layer_params(cfg)
    tp, pp, dp = cfg.model_parallel_size, max(cfg.pipe_parallel_size, 1), cfg.data_parallel_size
    h, v = cfg.hidden_size, _vocab(cfg)
    layers_here = math.ceil(cfg.num_layers / pp)
    per_layer_local = (layer["matmul"] + layer["split_bias"]) / tp + layer["replicated_bias"] + layer["norm"]
    embedding_local = v * h / tp + (counts["embedding"] - v * h)
    head_local = v * h / tp + _norm_params(cfg, h)
    if pp == 1:
        ends = embedding_local + (head_local if cfg.no_weight_tying else _norm_params(cfg, h))
    else:
        ends = max(embedding_local, head_local)
    params = layers_here * per_layer_local + ends

    weight_bytes = BYTES[cfg.params_dtype]
    grad_accum_fp32 = (cfg.data_types or {}).get("grad_accum_dtype") == "fp32"
    grad_bytes = 4 if grad_accum_fp32 else weight_bytes
    optim_bytes = 8 + (4 if weight_bytes == 2 else 0)
    if cfg.optimizer_type in ("cpu_adam", "cpu_torch_adam"):
        optim_bytes = 0
    z = cfg.zero_stage
    weights = params * weight_bytes / (dp if z >= 3 else 1)
    grads = params * grad_bytes / (dp if z >= 2 else 1)
    optimizer = params * optim_bytes / (dp if z >= 1 else 1)

    micro = cfg.train_micro_batch_size_per_gpu
    full, kept = _activation_bytes_per_layer(cfg, micro)
    in_flight = min(pp, cfg.gradient_accumulation_steps) if pp > 1 else 1
    if cfg.checkpoint_activations:
        activations = layers_here * kept * in_flight + full
    else:
        activations = layers_here * full * in_flight
    logits = cfg.seq_length * micro * v / tp * (weight_bytes + 4)
    total = weights + grads + optimizer + activations + logits
    return {
        "parameters_per_gpu": params,
        "weights": weights,
        "gradients": grads,
        "optimizer_states": optimizer,
        "activations": activations,
        "logits": logits,
        "total": total,
    }


def plan(cfg: Config) -> dict[str, Any]:
    """Everything the dry run reports, as plain data (numbers and lists)."""
    flops = flops_per_token(cfg)
    tokens_per_step = cfg.train_batch_size * cfg.seq_length
    return {
        "parameters": parameter_count(cfg),
        "flops_per_token": flops,
        "batch": {
            "train_batch_size": cfg.train_batch_size,
            "micro_batch_per_gpu": cfg.train_micro_batch_size_per_gpu,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "data_parallel_size": cfg.data_parallel_size,
            "tokens_per_step": tokens_per_step,
            "train_tokens": tokens_per_step * cfg.train_iters if cfg.train_iters else None,
            "flops_per_step": flops["causal"] * tokens_per_step,
        },
        "layout": layout(cfg),
        "memory_per_gpu": memory_estimate(cfg),
        "world_size_source": cfg.note("world_size"),
    }


def _si(x: float) -> str:
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.3g}"


def format_plan(p: dict[str, Any]) -> str:
    """The dry-run report as a few aligned lines of text."""
    params, flops, batch, lay, mem = p["parameters"], p["flops_per_token"], p["batch"], p["layout"], p["memory_per_gpu"]
    lines = [
        f"parameters      {params['total']:,} total, {params['non_embedding']:,} non-embedding, "
        f"{params['matmul']:,} in matmuls",
        f"FLOPs/token     causal {_si(flops['causal'])}, non-causal {_si(flops['noncausal'])}, "
        f"NeoX formula {_si(flops['neox'])} (HFU {_si(flops['neox_hfu'])}); {_si(batch['flops_per_step'])} per step",
        f"batch           {batch['train_batch_size']} = micro {batch['micro_batch_per_gpu']} x grad_accum "
        f"{batch['gradient_accumulation_steps']} x data-parallel {batch['data_parallel_size']}; "
        f"{batch['tokens_per_step']:,} tokens/step"
        + (f", {_si(batch['train_tokens'])} tokens in total" if batch["train_tokens"] else ""),
        f"layout          world {lay['world_size']} = data {lay['data']} x pipe {lay['pipe']} x tensor {lay['tensor']} "
        f"(rank order pipe, data, tensor; tensor fastest; world size: {p['world_size_source']})",
        f"memory/GPU      {mem['total'] / 2**30:.1f} GiB = weights {mem['weights'] / 2**30:.1f} + grads "
        f"{mem['gradients'] / 2**30:.1f} + optimizer {mem['optimizer_states'] / 2**30:.1f} + activations "
        f"{mem['activations'] / 2**30:.1f} + logits {mem['logits'] / 2**30:.1f} GiB (estimate, most loaded stage)",
    ]
    return "\n".join(lines)
