"""The three spellings of NeoX parameter names in checkpoints, detected and converted.

- ``current``: ``mlp.linear1`` / ``mlp.linear2`` (upstream since PR #1212, and this engine).
- ``legacy``: ``mlp.dense_h_to_4h`` / ``mlp.dense_4h_to_h`` (Pythia, 20B and other older runs).
- ``te``: Transformer Engine modules (``te_mha`` + ``te_layernorm_mlp``): ``attention.qkv``,
  ``attention.proj``, ``mlp.fc1_weight``, ``mlp.fc2_weight``, the post-attention norm as
  ``mlp.layer_norm_weight``/``_bias``, and FP8 metadata in ``*._extra_state`` (facts §4.5).

Detection looks for the same marker keys as upstream's ``convert_neox_to_hf.py``
(``mlp.fc1_weight``, ``mlp.linear1.weight``, ``mlp.dense_h_to_4h.weight``). Converting to the
current names drops ``_extra_state`` (FP8 scaling history, meaningless without FP8 training);
writing TE names adds it as ``None``, which every Transformer Engine release accepts on load as
"no FP8 state". A TE RMSNorm MLP keeps its norm weight under ``mlp.layer_norm_weight`` too; it
is this engine's ``post_attention_layernorm.scale``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from neox.errors import CheckpointError

DIALECTS = ("current", "legacy", "te")

_LEGACY = (("mlp.dense_h_to_4h.", "mlp.linear1."), ("mlp.dense_4h_to_h.", "mlp.linear2."))
_TE = (
    ("attention.qkv.", "attention.query_key_value."),
    ("attention.proj.", "attention.dense."),
    ("mlp.fc1_weight", "mlp.linear1.weight"),
    ("mlp.fc1_bias", "mlp.linear1.bias"),
    ("mlp.fc2_weight", "mlp.linear2.weight"),
    ("mlp.fc2_bias", "mlp.linear2.bias"),
    ("mlp.layer_norm_bias", "post_attention_layernorm.bias"),
)
# Per transformer layer: the FP8 metadata entries of TE's MultiheadAttention and LayerNormMLP.
TE_EXTRA_STATE = (
    "attention.qkv._extra_state",
    "attention.core_attention._extra_state",
    "attention.proj._extra_state",
    "mlp._extra_state",
)


def detect(keys: Iterable[str]) -> str:
    """The dialect of a set of checkpoint keys (``sequential.*`` or one layer file's names)."""
    keys = list(keys)
    if any(k.endswith(("mlp.fc1_weight", "attention.qkv.weight")) for k in keys):
        return "te"
    if any(".dense_h_to_4h." in f".{k}" for k in keys):
        return "legacy"
    return "current"


def _replace(key: str, table) -> str:
    for old, new in table:
        if old in key:
            return key.replace(old, new)
    return key


def to_current(state: Mapping[str, object], norm: str = "layernorm") -> dict[str, object]:
    """``state`` with legacy or TE names spelled the current way; TE ``_extra_state`` dropped.

    ``norm`` is the config's norm (``rmsnorm`` puts TE's ``mlp.layer_norm_weight`` under ``.scale``).
    """
    ln_weight = "post_attention_layernorm.scale" if norm == "rmsnorm" else "post_attention_layernorm.weight"
    out: dict[str, object] = {}
    for key, value in state.items():
        if key.endswith("_extra_state"):
            continue
        new = _replace(_replace(key, _LEGACY), _TE).replace("mlp.layer_norm_weight", ln_weight)
        if new in out:
            raise CheckpointError(f"checkpoint has both {key!r} and its other spelling {new!r}; it is damaged")
        out[new] = value
    return out


def from_current(state: Mapping[str, object], dialect: str) -> dict[str, object]:
    """``state`` (current names) spelled in ``dialect``."""
    if dialect not in DIALECTS:
        raise CheckpointError(f"parameter naming {dialect!r} is not one of {', '.join(DIALECTS)}")
    if dialect == "current":
        return dict(state)
    if dialect == "legacy":
        return {_replace(k, [(b, a) for a, b in _LEGACY]): v for k, v in state.items()}
    table = [(b, a) for a, b in _TE] + [
        ("post_attention_layernorm.weight", "mlp.layer_norm_weight"),
        ("post_attention_layernorm.scale", "mlp.layer_norm_weight"),
    ]
    out: dict[str, object] = {}
    layers = set()
    for key, value in state.items():
        out[_replace(key, table)] = value
        if ".attention.query_key_value.weight" in key:
            layers.add(key[: key.index(".attention.")])
    for prefix in sorted(layers):
        for name in TE_EXTRA_STATE:
            out[f"{prefix}.{name}"] = None
    return out
