"""Does a checkpoint's set of weights fit the model its config describes? Refuse loudly if not.

Converters must never turn a mismatch into a silently wrong model (user reports: an RMSNorm
checkpoint converted as a LayerNorm model, neox#1323; GQA and gated-MLP layouts misread,
neox#1337). The checks run on the merged (TP = 1) state in current names against the
parameter names and shapes of ``neox.model.build(cfg)`` on the meta device, and name the config
key that disagrees: the norm type, the number of layers, tied or untied head, the MLP width
(gated or not), the attention layout (GQA), the hidden size, the padded vocabulary, and for
checkpoints that store rotary ``inv_freq`` the rotary fraction and base.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from neox.errors import CheckpointError

_OPTIONAL = ("attention.rotary_emb.inv_freq",)


def expected_shapes(cfg) -> dict[str, torch.Size]:
    """Parameter names and shapes of the TP = 1 model ``cfg`` describes (built on the meta device)."""
    from neox.model import build

    return {k: v.shape for k, v in build(cfg, device="meta").state_dict().items()}


def _layers(keys) -> set[int]:
    out = set()
    for k in keys:
        m = re.match(r"^sequential\.(\d+)\.(input_layernorm|attention|mlp)\.", k)
        if m:
            out.add(int(m.group(1)))
    return out


def check_keys(state_keys, cfg, source: str) -> None:
    """CheckpointError naming the config key when the names of ``state_keys`` do not fit ``cfg``."""
    keys = set(state_keys)
    want = set(expected_shapes(cfg))
    if keys == want or not (keys ^ want) - {k for k in keys ^ want if k.endswith(_OPTIONAL)}:
        return
    fix = "use the config it was trained with"
    rms = any(k.endswith(("layernorm.scale", "norm.scale")) for k in keys)
    if rms and cfg.norm != "rmsnorm":
        raise CheckpointError(
            f"{source} has RMSNorm weights (*.scale) but the config says norm: {cfg.norm}; {fix} "
            "(norm: rmsnorm; Llama-style models convert with --architecture llama)"
        )
    if not rms and cfg.norm == "rmsnorm" and any(k.endswith("layernorm.weight") for k in keys):
        raise CheckpointError(f"{source} has LayerNorm weights but the config says norm: rmsnorm; {fix} (norm: layernorm)")
    have, need = _layers(keys), _layers(want)
    if len(have) != len(need):
        raise CheckpointError(
            f"{source} has {len(have)} transformer layers but the config says num_layers: {cfg.num_layers}; {fix}"
        )
    head = f"sequential.{cfg.num_layers + 4}.final_linear.weight"
    if (head in keys) != (head in want):
        raise CheckpointError(
            f"{source} {'has' if head in keys else 'has no'} separate LM head (final_linear) but the config says "
            f"no_weight_tying: {str(cfg.no_weight_tying).lower()}; {fix}"
        )
    missing, unexpected = sorted(want - keys), sorted(keys - want)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    raise CheckpointError(
        f"{source} does not match the model of its config ({'; '.join(parts)}); {fix} "
        "(check pos_emb, use_bias_in_* and the norm)"
    )


def check_shapes(state: Mapping[str, torch.Tensor], cfg, source: str) -> None:
    """CheckpointError naming the config key when a merged tensor's shape does not fit ``cfg``."""
    want = expected_shapes(cfg)
    for key, shape in want.items():
        if key not in state:
            continue
        got = tuple(state[key].shape)
        if got == tuple(shape):
            continue
        name = key.split(".", 2)[2]
        if name.startswith("mlp.linear"):
            hint = (
                f"the MLP width: activation {cfg.activation} (gated: {cfg.is_gated_mlp}), intermediate_size "
                f"{cfg.intermediate_size}, mlp_multiple_of {cfg.mlp_multiple_of} give {cfg.ffn_dim}"
            )
        elif name.startswith("attention.query_key_value"):
            hint = f"the attention layout: num_attention_heads {cfg.num_attention_heads}, num_kv_heads {cfg.num_kv_heads}"
        elif name.startswith(("word_embeddings", "final_linear")):
            hint = f"the padded vocabulary: padded_vocab_size {cfg.padded_vocab_size} from the tokenizer"
        else:
            hint = f"hidden_size {cfg.hidden_size}"
        raise CheckpointError(
            f"{source}: {key} is {list(got)} but the config implies {list(shape)}; check {hint}"
        )
    _check_rotary(state, cfg, source)


def _check_rotary(state: Mapping[str, torch.Tensor], cfg, source: str) -> None:
    from neox.model.rotary import inverse_frequencies

    key = next((k for k in state if k.endswith("attention.rotary_emb.inv_freq")), None)
    if key is None or cfg.pos_emb != "rotary":
        return
    saved = state[key].float()
    implied = inverse_frequencies(cfg.rotary_ndims, cfg.rotary_emb_base)
    if saved.shape != implied.shape or not torch.allclose(saved, implied, rtol=1e-2, atol=0):
        raise CheckpointError(
            f"{source}: the saved rotary inv_freq ({saved.numel() * 2} rotated dims) does not match rotary_pct "
            f"{cfg.rotary_pct} and rotary_emb_base {cfg.rotary_emb_base} of the config; use the config it was trained with"
        )
