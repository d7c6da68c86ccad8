"""Model keys: shape, norms, positions, MLP, init, attention selection, fusion and Transformer Engine.

Names, types and defaults are upstream GPT-NeoX's (``NeoXArgsModel`` in
``megatron/neox_arguments/neox_args.py``). Values neox does not implement are listed per key
and rejected by the validator with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key

INIT_METHODS = Literal[
    "normal",
    "scaled_normal",
    "orthogonal",
    "scaled_orthogonal",
    "xavier_uniform",
    "xavier_normal",
    "wang_init",
    "small_init",
    "single_residual_scaled_normal",
]


@dataclass
class ModelArgs:
    """Shape of the transformer and its layer variants."""

    num_layers: int | None = key(None, "number of transformer blocks L")
    hidden_size: int | None = key(None, "model width h; a multiple of num_attention_heads")
    num_attention_heads: int | None = key(None, "number of query heads")
    num_kv_heads: int | None = key(
        None, "key/value heads for GQA/MQA; None means num_attention_heads; must divide num_attention_heads"
    )
    seq_length: int | None = key(None, "training context length s in tokens; at most max_position_embeddings")
    max_position_embeddings: int | None = key(None, "size of the position table; at least seq_length")
    intermediate_size: int | None = key(
        None, "MLP width before upstream's gated 2/3 rounding; None means 4 x hidden_size"
    )
    expansion_factor: float | None = key(None, "MLP width as a multiple of hidden_size; exclusive with intermediate_size")
    mlp_multiple_of: int = key(1, "round the MLP widths up to a multiple of this (upstream ParallelMLP rule)")
    mlp_type: str = key(
        "regular",
        "legacy MLP type of older upstream versions ('regular' or 'llama')",
        unimplemented_values=("llama",),
        hint="use activation: swiglu with intermediate_size and mlp_multiple_of (upstream's current form)",
    )
    norm: Literal["layernorm", "rmsnorm", "non_parametric_layernorm", "scalenorm", "te_rmsnorm", "te_layernorm"] = key(
        "layernorm",
        "normalisation layer (te_* variants need Transformer Engine)",
    )
    layernorm_epsilon: float = key(1.0e-5, "LayerNorm epsilon")
    rms_norm_epsilon: float = key(1.0e-8, "RMSNorm epsilon")
    scalenorm_epsilon: float = key(1.0e-8, "ScaleNorm epsilon")
    pos_emb: Literal["learned", "rotary", "sinusoidal", "rpe", "alibi", "none"] = key(
        "learned",
        "position embedding",
        unimplemented_values=("sinusoidal", "rpe", "alibi"),
        hint="use rotary, learned or none",
    )
    rotary_pct: float = key(1.0, "fraction of each head's dims that rotary rotates (0 < pct <= 1)")
    rotary_emb_base: int = key(10000, "rotary theta")
    rotary_save_freqs_buffer: bool = key(False, "save rotary inv_freq in checkpoints (Pythia/20B-era checkpoints have it)")
    rpe_num_buckets: int = key(32, "T5 relative position buckets", implemented=False, hint="rpe")
    rpe_max_distance: int = key(128, "T5 relative position max distance", implemented=False, hint="rpe")
    opt_pos_emb_offset: int = key(0, "offset added to learned position ids (2 for OPT)")
    no_weight_tying: bool = key(False, "false ties the LM head to the input embedding")
    gpt_j_residual: bool = key(False, "parallel attention + MLP residual (HF use_parallel_residual)")
    gpt_j_tied: bool = key(False, "with gpt_j_residual, one shared norm for attention and MLP")
    use_bias_in_norms: bool = key(True, "norms have a bias")
    use_bias_in_attn_linear: bool = key(True, "QKV and attention-output linears have biases")
    use_bias_in_mlp: bool = key(True, "MLP linears have biases")
    use_qk_layernorm: bool = key(False, "normalise queries and keys per head (QK-norm)")
    make_vocab_size_divisible_by: int = key(128, "pad the vocab to a multiple of this x model_parallel_size")
    activation: Literal[
        "gelu", "geglu", "relu", "softsign", "swish", "mish", "silu", "reglu", "swiglu", "bilinear", "glu"
    ] = key(
        "gelu",
        "MLP activation; geglu/reglu/swiglu/bilinear/glu are gated",
    )
    init_method: INIT_METHODS = key("normal", "init of all weights except the residual-output linears")
    output_layer_init_method: INIT_METHODS = key("scaled_normal", "init of the attention-output and MLP-output linears")
    init_method_std: float = key(0.02, "sigma of the normal-family inits")
    hidden_dropout: float = key(0.0, "dropout on embeddings and residual branches")
    attention_dropout: float = key(0.0, "dropout on attention probabilities")
    apply_query_key_layer_scaling: bool = key(False, "scale QK^T by 1/layer_number (forces fp32 softmax)")
    attention_softmax_in_fp32: bool = key(False, "compute the attention softmax in fp32")
    use_cpu_initialization: bool = key(False, "initialise parameters on the CPU (a hint; the result is the same)")
    output_layer_parallelism: Literal["column"] = key("column", "LM head split over the vocab (the only upstream choice)")
    num_unique_layers: int | None = key(None, "layer parameter sharing", implemented=False, hint="layer sharing")
    param_sharing_style: str = key("grouped", "order of shared layers", implemented=False, hint="layer sharing")
    soft_prompt_tuning: dict | None = key(None, "soft prompt tuning settings", implemented=False, hint="soft prompt tuning")
    gmlp_attn_dim: int = key(64, "gMLP attention width", implemented=False, hint="gMLP blocks")


@dataclass
class AttentionArgs:
    """Which attention each layer uses."""

    attention_config: list | None = key(
        None,
        "per-layer attention types as [[types, repeat], ...]; None means global everywhere; neox implements "
        "global and flash",
    )
    sliding_window_width: int | None = key(None, "sliding-window attention: each query sees this many previous keys")
    sparsity_config: dict | None = key(
        None, "DeepSpeed sparse attention settings", implemented=False, hint="sparse attention"
    )


@dataclass
class FusionArgs:
    """Fused-kernel switches. They are hints: neox uses a fused kernel where it has one, else PyTorch."""

    scaled_upper_triang_masked_softmax_fusion: bool = key(False, "fused causal scale-mask-softmax")
    scaled_masked_softmax_fusion: bool = key(False, "fused general scale-mask-softmax")
    bias_gelu_fusion: bool = key(False, "fused bias + GELU (tanh approximation, as upstream's kernel)")
    bias_dropout_fusion: bool = key(False, "fused bias + dropout + residual add")
    rope_fusion: bool = key(False, "fused rotary embedding")
    layernorm_fusion: bool = key(False, "fused LayerNorm kernel")
    rmsnorm_fusion: bool = key(False, "fused RMSNorm kernel")
    use_flashattn_swiglu: bool = key(False, "flash-attn's fused SwiGLU")
    fused_kernels_build_path: str | None = key(None, "where upstream JIT-builds its kernels (unused: neox's are prebuilt)")
    onnx_safe: bool = key(False, "use ONNX-exportable ops (erf GELU)")


@dataclass
class TransformerEngineArgs:
    """Transformer Engine layers and FP8 (the model raises if TE is not installed)."""

    te_columnparallel: bool = key(False, "TE Linear for the column-parallel linears")
    te_rowparallel: bool = key(False, "TE Linear for the row-parallel linears")
    te_layernorm_mlp: bool = key(False, "TE LayerNormMLP (post-attention norm fused into the MLP)")
    te_mha: bool = key(False, "TE MultiheadAttention")
    te_fp8_format: Literal["e4m3", "hybrid"] = key("hybrid", "FP8 format; hybrid is E4M3 forward, E5M2 backward")
    te_fp8_wgrad: bool = key(True, "compute weight gradients in FP8")
    te_fp8_amax_history_len: int = key(1, "amax history window for FP8 scaling")
    te_fp8_amax_compute_algo: str = key("most_recent", "amax choice over the history: most_recent or max")
    te_fp8_margin: int = key(0, "margin of the FP8 scaling factor")
    te_fp8_mha: bool = key(False, "run attention layers under an FP8 autocast")
