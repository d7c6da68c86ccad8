"""Names and layouts between a full (TP = 1) NeoX state dict and Hugging Face's.

Two HF architectures, as upstream's ``tools/ckpts/convert_neox_to_hf.py`` (facts §5):

- ``"neox"``: ``GPTNeoXForCausalLM``. Names map 1:1 and the fused QKV layout is the same
  (per head ``[q | k | v]``). The LM head is ``embed_out.weight`` in HF files (transformers 5
  calls the module ``lm_head`` in memory; both are accepted).
- ``"llama"``: ``LlamaForCausalLM`` (RMSNorm, SwiGLU, optional GQA, no biases). HF's separate
  ``q/k/v_proj`` become the fused ``query_key_value``: interleaved per head for MHA, blocks
  ``[Q | K | V]`` for GQA (facts §4.4); ``[up | gate]`` become ``linear1`` (value first, gate
  second); RMSNorm weights are NeoX ``scale``. HF's Llama q/k rows are already in the
  split-halves ("rotate_half") rotary convention NeoX uses, so no permutation is needed (the
  one in upstream's raw-Meta converter undoes Meta's interleaved pairs, which HF's own
  conversion already did); the logits parity tests confirm it.

NeoX keys are those of :class:`neox.model.GPTModel` (``sequential.{index}.{name}``), which are
the keys of a sequential-mode checkpoint's ``module`` dict. Legacy MLP names
(``mlp.dense_h_to_4h``/``dense_4h_to_h``) are accepted on input. ``attention.rotary_emb.inv_freq``
is written when ``rotary_save_freqs_buffer`` is set and dropped towards HF. A tied model
(``no_weight_tying: false``) has no head entry on either side.

The functions are pure: tensors that map one to one are passed through (no copy, no cast);
fused ones are built with ``cat``/``stack`` or split into views. A key left over or missing is a
:class:`~neox.errors.CheckpointError`; a config HF cannot express is a
:class:`~neox.errors.ConfigError`. TP splitting and file I/O belong to the converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from neox.errors import CheckpointError, ConfigError
from neox.model.rotary import inverse_frequencies

ARCHITECTURES = ("neox", "llama")
HF_ACTIVATIONS = {"relu": "relu", "silu": "silu", "swish": "silu", "mish": "mish"}
_LEGACY_MLP = {".mlp.dense_h_to_4h.": ".mlp.linear1.", ".mlp.dense_4h_to_h.": ".mlp.linear2."}
_HF_HEAD_NAMES = ("embed_out.weight", "lm_head.weight")
# Buffers older HF files carry and HF itself ignores on load (causal masks, rotary tables).
_HF_IGNORED_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")

Tensors = Mapping[str, torch.Tensor]


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"architecture {arch!r} is not one of {', '.join(ARCHITECTURES)}")


def _norm_names(cfg) -> tuple[str, ...]:
    if cfg.norm == "rmsnorm":
        return ("scale",)
    return ("weight", "bias") if cfg.use_bias_in_norms else ("weight",)


def _gqa(cfg) -> bool:
    return cfg.kv_heads != cfg.num_attention_heads


class _Source:
    """A state dict being consumed: every key must be taken exactly once."""

    def __init__(self, tensors: Tensors, side: str, ignored: tuple[str, ...] = ()) -> None:
        self.tensors, self.side = tensors, side
        self.taken = {k for k in tensors if ignored and k.endswith(ignored)}

    def take(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise CheckpointError(f"the {self.side} state dict has no {key!r}; is it for this config?")
        self.taken.add(key)
        return self.tensors[key]

    def has(self, key: str) -> bool:
        return key in self.tensors

    def finish(self) -> None:
        left = sorted(set(self.tensors) - self.taken)
        if left:
            more = f" and {len(left) - 3} more" if len(left) > 3 else ""
            raise CheckpointError(
                f"the {self.side} state dict has entries this config does not use: {', '.join(left[:3])}{more}"
            )


def _normalise_neox_keys(state_dict: Tensors) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        for old, new in _LEGACY_MLP.items():
            key = key.replace(old, new)
        out[key] = value
    return out


# --- fused QKV / MLP layouts ------------------------------------------------------------------


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg) -> torch.Tensor:
    """NeoX ``query_key_value`` (weight or bias) from separate q, k, v projections."""
    if _gqa(cfg):
        return torch.cat([q, k, v], dim=0)
    heads, d = cfg.num_attention_heads, cfg.head_dim
    per_head = [t.reshape(heads, d, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(per_head, dim=1).reshape(3 * heads * d, *q.shape[1:])


def split_qkv(qkv: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v projections from a NeoX ``query_key_value`` (the inverse of :func:`fuse_qkv`)."""
    heads, kv, d = cfg.num_attention_heads, cfg.kv_heads, cfg.head_dim
    if _gqa(cfg):
        return tuple(qkv.split([heads * d, kv * d, kv * d], dim=0))
    per_head = qkv.reshape(heads, 3, d, *qkv.shape[1:])
    return tuple(per_head[:, i].reshape(heads * d, *qkv.shape[1:]) for i in range(3))


# --- state dicts --------------------------------------------------------------------------------


def _layer_pairs(cfg, arch: str, i: int) -> list[tuple[str, str]]:
    """(NeoX key, HF key) for the one-to-one parameters of transformer layer i."""
    n = f"sequential.{i + 2}."
    norms = _norm_names(cfg)
    if arch == "neox":
        h = f"gpt_neox.layers.{i}."
        pairs = [
            (f"{n}{ln}.{p}", f"{h}{ln}.{p}")
            for ln in ("input_layernorm", "post_attention_layernorm")
            for p in norms
        ]
        pairs += [
            (f"{n}attention.{m}.{p}", f"{h}attention.{m}.{p}")
            for m in ("query_key_value", "dense")
            for p in _bias_opt(cfg.use_bias_in_attn_linear)
        ]
        pairs += [(f"{n}mlp.linear1.{p}", f"{h}mlp.dense_h_to_4h.{p}") for p in ("weight", "bias")]
        pairs += [(f"{n}mlp.linear2.{p}", f"{h}mlp.dense_4h_to_h.{p}") for p in ("weight", "bias")]
        return pairs
    h = f"model.layers.{i}."
    pairs = [(f"{n}input_layernorm.scale", f"{h}input_layernorm.weight")]
    pairs += [(f"{n}post_attention_layernorm.scale", f"{h}post_attention_layernorm.weight")]
    pairs += [
        (f"{n}attention.dense.{p}", f"{h}self_attn.o_proj.{p}")
        for p in _bias_opt(cfg.use_bias_in_attn_linear)
    ]
    pairs += [(f"{n}mlp.linear2.{p}", f"{h}mlp.down_proj.{p}") for p in _bias_opt(cfg.use_bias_in_mlp)]
    return pairs


def _bias_opt(bias: bool) -> tuple[str, ...]:
    return ("weight", "bias") if bias else ("weight",)


def _outer_pairs(cfg, arch: str) -> list[tuple[str, str]]:
    final = f"sequential.{cfg.num_layers + 3}.norm."
    if arch == "neox":
        pairs = [("sequential.0.word_embeddings.weight", "gpt_neox.embed_in.weight")]
        pairs += [(final + p, "gpt_neox.final_layer_norm." + p) for p in _norm_names(cfg)]
    else:
        pairs = [("sequential.0.word_embeddings.weight", "model.embed_tokens.weight")]
        pairs += [(final + "scale", "model.norm.weight")]
    return pairs


def hf_to_neox(state_dict: Tensors, cfg, arch: str = "neox") -> dict[str, torch.Tensor]:
    """A NeoX (``sequential.*``) state dict from an HF ``arch`` state dict of the same model."""
    _check_arch(arch)
    check_hf_compatible(cfg, arch)
    src = _Source(state_dict, f"HF {arch}", ignored=_HF_IGNORED_SUFFIXES)
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_layers):
        for neox_key, hf_key in _layer_pairs(cfg, arch, i):
            out[neox_key] = src.take(hf_key)
        n = f"sequential.{i + 2}."
        if arch == "llama":
            a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            for p in _bias_opt(cfg.use_bias_in_attn_linear):
                q, k, v = (src.take(f"{a}{x}_proj.{p}") for x in "qkv")
                out[f"{n}attention.query_key_value.{p}"] = fuse_qkv(q, k, v, cfg)
            for p in _bias_opt(cfg.use_bias_in_mlp):
                out[f"{n}mlp.linear1.{p}"] = torch.cat(
                    [src.take(f"{m}up_proj.{p}"), src.take(f"{m}gate_proj.{p}")]
                )
        if cfg.pos_emb == "rotary" and cfg.rotary_save_freqs_buffer:
            out[f"{n}attention.rotary_emb.inv_freq"] = inverse_frequencies(
                cfg.rotary_ndims, cfg.rotary_emb_base
            ).to(getattr(torch, cfg.params_dtype))
    for neox_key, hf_key in _outer_pairs(cfg, arch):
        out[neox_key] = src.take(hf_key)
    head_keys = [k for k in _HF_HEAD_NAMES if src.has(k)]
    if cfg.no_weight_tying:
        if not head_keys:
            raise CheckpointError(
                f"the HF {arch} state dict has no LM head (embed_out/lm_head) but no_weight_tying is true"
            )
        out[f"sequential.{cfg.num_layers + 4}.final_linear.weight"] = src.take(head_keys[0])
    else:
        for key in head_keys:  # a tied copy (in-memory state dicts list it), same tensor as the embedding
            src.take(key)
    src.finish()
    return out


def neox_to_hf(state_dict: Tensors, cfg, arch: str = "neox") -> dict[str, torch.Tensor]:
    """An HF ``arch`` state dict, with the names HF writes in its files, from a NeoX one."""
    _check_arch(arch)
    check_hf_compatible(cfg, arch)
    src = _Source(_normalise_neox_keys(state_dict), "NeoX")
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_layers):
        for neox_key, hf_key in _layer_pairs(cfg, arch, i):
            out[hf_key] = src.take(neox_key)
        n = f"sequential.{i + 2}."
        if arch == "llama":
            a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            for p in _bias_opt(cfg.use_bias_in_attn_linear):
                q, k, v = split_qkv(src.take(f"{n}attention.query_key_value.{p}"), cfg)
                out.update({f"{a}q_proj.{p}": q, f"{a}k_proj.{p}": k, f"{a}v_proj.{p}": v})
            for p in _bias_opt(cfg.use_bias_in_mlp):
                up, gate = src.take(f"{n}mlp.linear1.{p}").chunk(2, dim=0)
                out.update({f"{m}up_proj.{p}": up, f"{m}gate_proj.{p}": gate})
        inv_freq = f"{n}attention.rotary_emb.inv_freq"
        if src.has(inv_freq):
            src.take(inv_freq)  # HF recomputes it
    for neox_key, hf_key in _outer_pairs(cfg, arch):
        out[hf_key] = src.take(neox_key)
    if cfg.no_weight_tying:
        head = "embed_out.weight" if arch == "neox" else "lm_head.weight"
        out[head] = src.take(f"sequential.{cfg.num_layers + 4}.final_linear.weight")
    src.finish()
    return out


# --- configs ------------------------------------------------------------------------------------


def check_hf_compatible(cfg, arch: str) -> None:
    """ConfigError if HF's ``arch`` cannot express this model exactly."""
    _check_arch(arch)
    problems = []
    if cfg.pos_emb != "rotary":
        problems.append(f"pos_emb {cfg.pos_emb!r} (HF {arch} is rotary only)")
    if cfg.gpt_j_residual and cfg.gpt_j_tied:
        problems.append("gpt_j_tied (HF has no shared-norm block)")
    if cfg.use_qk_layernorm:
        problems.append("use_qk_layernorm")
    if arch == "neox":
        if cfg.norm != "layernorm":
            problems.append(f"norm {cfg.norm!r} (GPTNeoX uses layernorm)")
        elif not cfg.use_bias_in_norms:
            problems.append("use_bias_in_norms false (GPTNeoX norms have biases)")
        if not cfg.use_bias_in_mlp:
            problems.append("use_bias_in_mlp false (GPTNeoX MLP has biases)")
        if _gqa(cfg):
            problems.append("num_kv_heads (GPTNeoX has no GQA; use architecture llama)")
        if cfg.is_gated_mlp or (cfg.activation != "gelu" and cfg.activation not in HF_ACTIVATIONS):
            problems.append(f"activation {cfg.activation!r}")
    else:
        if cfg.norm != "rmsnorm":
            problems.append(f"norm {cfg.norm!r} (Llama uses rmsnorm)")
        if cfg.activation != "swiglu":
            problems.append(f"activation {cfg.activation!r} (Llama uses swiglu)")
        if cfg.gpt_j_residual:
            problems.append("gpt_j_residual (Llama is sequential)")
        if cfg.rotary_ndims != cfg.head_dim:
            problems.append(f"rotary_pct {cfg.rotary_pct} (Llama rotates whole heads)")
    if problems:
        raise ConfigError(f"HF {arch} cannot express this model: {'; '.join(problems)}")


def hf_config(cfg, arch: str = "neox"):
    """The ``transformers`` config (``GPTNeoXConfig`` or ``LlamaConfig``) of this model.

    ``vocab_size`` is the padded vocabulary, as upstream's converter writes it. The activation
    says what the model computes: ``gelu_new`` (tanh) when ``bias_gelu_fusion`` is set, where
    upstream's converter writes ``gelu`` (facts §5.4).
    """
    import transformers

    check_hf_compatible(cfg, arch)
    common = dict(
        vocab_size=cfg.padded_vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.ffn_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.init_method_std,
        tie_word_embeddings=not cfg.no_weight_tying,
        attention_dropout=cfg.attention_dropout,
    )
    if arch == "neox":
        act = "gelu_new" if cfg.bias_gelu_fusion else "gelu"
        return transformers.GPTNeoXConfig(
            **common,
            hidden_act=act if cfg.activation == "gelu" else HF_ACTIVATIONS[cfg.activation],
            rotary_pct=cfg.rotary_pct,
            rotary_emb_base=cfg.rotary_emb_base,
            use_parallel_residual=cfg.gpt_j_residual,
            layer_norm_eps=cfg.layernorm_epsilon,
            attention_bias=cfg.use_bias_in_attn_linear,
            hidden_dropout=cfg.hidden_dropout,
        )
    return transformers.LlamaConfig(
        **common,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        rms_norm_eps=cfg.rms_norm_epsilon,
        rope_theta=float(cfg.rotary_emb_base),
        attention_bias=cfg.use_bias_in_attn_linear,
        mlp_bias=cfg.use_bias_in_mlp,
    )


def neox_args_from_hf(hf_cfg) -> dict[str, Any]:
    """Upstream NeoX config keys describing an HF ``GPTNeoXConfig`` or ``LlamaConfig``.

    The vocabulary is HF's ``vocab_size``, already padded: give the result with a tokenizer
    whose padded size matches (or set ``make_vocab_size_divisible_by`` accordingly).
    """
    rope = dict(getattr(hf_cfg, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(
            f"HF rope_type {rope['rope_type']!r} has no NeoX equivalent; only default RoPE converts"
        )
    theta = rope.get(
        "rope_theta", getattr(hf_cfg, "rope_theta", None) or getattr(hf_cfg, "rotary_emb_base", 10000)
    )
    args: dict[str, Any] = {
        "num_layers": hf_cfg.num_hidden_layers,
        "hidden_size": hf_cfg.hidden_size,
        "num_attention_heads": hf_cfg.num_attention_heads,
        "intermediate_size": hf_cfg.intermediate_size,
        "max_position_embeddings": hf_cfg.max_position_embeddings,
        "seq_length": hf_cfg.max_position_embeddings,
        "pos_emb": "rotary",
        "rotary_emb_base": int(theta) if float(theta).is_integer() else theta,  # an int upstream
        "no_weight_tying": not hf_cfg.tie_word_embeddings,
        "init_method_std": hf_cfg.initializer_range,
    }
    if hf_cfg.model_type == "gpt_neox":
        act = hf_cfg.hidden_act
        gelu_tanh = act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
        if not gelu_tanh and act not in ("gelu", *HF_ACTIVATIONS.values()):
            raise ConfigError(f"HF hidden_act {act!r} has no NeoX equivalent")
        args.update(
            norm="layernorm",
            layernorm_epsilon=hf_cfg.layer_norm_eps,
            rotary_pct=rope.get("partial_rotary_factor", getattr(hf_cfg, "rotary_pct", 1.0)),
            gpt_j_residual=hf_cfg.use_parallel_residual,
            activation="gelu" if gelu_tanh or act == "gelu" else act,
            bias_gelu_fusion=gelu_tanh,
            use_bias_in_attn_linear=hf_cfg.attention_bias,
        )
    elif hf_cfg.model_type == "llama":
        if hf_cfg.hidden_act != "silu":
            raise ConfigError(
                f"HF Llama hidden_act {hf_cfg.hidden_act!r} has no NeoX equivalent (swiglu needs silu)"
            )
        if hf_cfg.head_dim != hf_cfg.hidden_size // hf_cfg.num_attention_heads:
            raise ConfigError(
                f"HF Llama head_dim {hf_cfg.head_dim} is not hidden_size / heads; NeoX cannot express it"
            )
        args.update(
            norm="rmsnorm",
            rms_norm_epsilon=hf_cfg.rms_norm_eps,
            rotary_pct=1.0,
            gpt_j_residual=False,
            activation="swiglu",
            # Llama's intermediate_size is the gated width itself: a multiple equal to it keeps
            # upstream's 2/3 rule from shrinking it (facts §6.4, the Llama-3 recipe).
            mlp_multiple_of=hf_cfg.intermediate_size,
            num_kv_heads=hf_cfg.num_key_value_heads,
            use_bias_in_norms=False,
            use_bias_in_attn_linear=hf_cfg.attention_bias,
            use_bias_in_mlp=hf_cfg.mlp_bias,
        )
    else:
        raise ConfigError(f"HF model_type {hf_cfg.model_type!r} is not gpt_neox or llama")
    return args
