"""How each parameter of a NeoX checkpoint is cut across tensor-parallel ranks, and put back.

The per-rank files of a TP = N checkpoint hold, for every parameter (facts §4.4, §5.2):

| parameter | on each rank | full tensor from the ranks |
|---|---|---|
| ``word_embeddings.weight``, ``final_linear.weight`` | rows of the padded vocab (dim 0) | concat dim 0 |
| ``query_key_value.*`` (MHA) | a run of whole heads, rows per head ``[q|k|v]`` | concat dim 0 |
| ``query_key_value.*`` (GQA) | ``[Q_r | K_r | V_r]`` | each block concat dim 0 |
| ``mlp.linear1.*`` (non-gated) | rows (dim 0) | concat dim 0 |
| ``mlp.linear1.*`` (gated) | ``[value_r | gate_r]`` | each half concat dim 0 |
| ``attention.dense.weight``, ``mlp.linear2.weight`` | columns (dim 1) | concat dim 1 |
| ``attention.dense.bias``, ``mlp.linear2.bias``, ``gpt_j_residual: true`` | ``bias / N`` | **sum** |
| the same biases, ``gpt_j_residual: false`` | the whole bias | one copy |
| norms, ``inv_freq``, learned position embeddings | the whole tensor | one copy |
| ``attention.qk_layernorm.*`` | ``[heads/N, head_dim]`` | concat dim 0 |

These are the shards :mod:`neox.parallel` layers hold (their ``_split`` tables, with the blocks
of :mod:`neox.parallel.sharding`), so a checkpoint written here is what the engine's TP ranks
load; tests check the two agree for every layer type.

Row-parallel biases are the subtle case. With the parallel residual each rank adds its own bias
to its partial output *before* the one all-reduce (upstream ``ParallelTransformerLayer``), so the
model's effective bias is the sum over ranks: splitting divides by N, merging sums. With the
sequential residual the all-reduce comes first and the replicated bias is added once, so merging
takes one copy. Upstream's ``convert_neox_to_hf.py`` sums in both cases, which multiplies the
biases of a sequential-residual TP = N model by N (facts §5.2, marked as a bug there); here the
residual type decides.

Replicated tensors are merged as one copy when the ranks agree bit for bit, else as their mean
in fp32 (upstream averages norms; ranks can drift apart by rounding in long runs). Names are the
current ones (``mlp.linear1``); map legacy or Transformer Engine names first
(:mod:`neox.checkpoint.dialects`). Functions are pure and return views where they can.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from neox.checkpoint.layout import split_key
from neox.errors import CheckpointError
from neox.parallel.sharding import shard, unshard

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Rule:
    """How one parameter is sharded.

    ``kind``: ``"split"`` (a piece along ``dim``; ``blocks`` are the full sizes of the logical
    blocks along it, each cut separately), ``"sum"`` (each rank holds full / N; the ranks' values
    add up) or ``"replicated"`` (every rank holds the whole tensor).
    """

    kind: str
    dim: int = 0
    blocks: tuple[int, ...] | None = None


REPLICATED = Rule("replicated")
ROWS = Rule("split", 0)
COLUMNS = Rule("split", 1)


def rule(key: str, cfg) -> Rule:
    """The TP rule of ``key`` (``sequential.<idx>.<name>``, current names) in a model of ``cfg``."""
    idx, name = split_key(key)
    param = name.rsplit(".", 1)[-1]
    if idx == 0:
        if name == "word_embeddings.weight":
            return ROWS
        if name == "position_embeddings.weight":
            return REPLICATED
    elif idx == cfg.num_layers + 3:
        if name.startswith("norm."):
            return REPLICATED
    elif idx == cfg.num_layers + 4:
        if name == "final_linear.weight":
            return ROWS
    elif 2 <= idx < cfg.num_layers + 2:
        if name.startswith(("input_layernorm.", "post_attention_layernorm.")):
            return REPLICATED
        if name == "attention.rotary_emb.inv_freq":
            return REPLICATED
        if name.startswith("attention.qk_layernorm."):
            return ROWS
        if name.startswith("attention.query_key_value.") and param in ("weight", "bias"):
            if cfg.kv_heads != cfg.num_attention_heads:
                q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
                return Rule("split", 0, (q, kv, kv))
            return ROWS
        if name.startswith("mlp.linear1.") and param in ("weight", "bias"):
            return Rule("split", 0, (cfg.ffn_dim, cfg.ffn_dim)) if cfg.is_gated_mlp else ROWS
        if name in ("attention.dense.weight", "mlp.linear2.weight"):
            return COLUMNS
        if name in ("attention.dense.bias", "mlp.linear2.bias"):
            return Rule("sum") if cfg.gpt_j_residual else REPLICATED
    raise CheckpointError(
        f"no tensor-parallel rule for checkpoint entry {key!r}; it is not a parameter of the model the "
        "config describes (check num_layers and the model keys), or a feature the converter does not support"
    )


def split_tensor(key: str, full: torch.Tensor, cfg, rank: int, tp: int) -> torch.Tensor:
    """Rank ``rank``'s piece of the full tensor ``full`` of parameter ``key`` at TP ``tp``."""
    r = rule(key, cfg)
    if tp == 1 or r.kind == "replicated":
        return full
    if r.kind == "sum":
        return full / tp
    _check_divisible(key, full, r, tp)
    return shard(full, r.dim, rank, tp, r.blocks)


def merge_tensor(key: str, pieces: Sequence[torch.Tensor], cfg) -> torch.Tensor:
    """The full tensor of parameter ``key`` from all ranks' pieces (in rank order)."""
    if len(pieces) == 1:
        return pieces[0]
    r = rule(key, cfg)
    shapes = {tuple(p.shape) for p in pieces}
    if r.kind != "split" and len(shapes) > 1:
        raise CheckpointError(f"checkpoint entry {key!r} has different shapes on different TP ranks: {sorted(shapes)}")
    if r.kind == "sum":
        return torch.stack([p.float() for p in pieces]).sum(0).to(pieces[0].dtype)
    if r.kind == "replicated":
        if all(torch.equal(pieces[0], p) for p in pieces[1:]):
            return pieces[0]
        return torch.stack([p.float() for p in pieces]).mean(0).to(pieces[0].dtype)
    return unshard(list(pieces), r.dim, r.blocks)


def check_tp(cfg, tp: int) -> None:
    """CheckpointError unless every split dimension of ``cfg``'s model divides into ``tp`` whole pieces."""
    sizes = {
        "num_attention_heads": cfg.num_attention_heads,
        "num_kv_heads": cfg.kv_heads,
        "the MLP width (ffn_dim)": cfg.ffn_dim,
        "padded_vocab_size": cfg.padded_vocab_size,
    }
    bad = [f"{name} {size}" for name, size in sizes.items() if size is not None and size % tp]
    if tp < 1 or bad:
        raise CheckpointError(
            f"tensor parallelism {tp} does not divide {', '.join(bad) or 'anything'}; choose a TP that divides "
            "the heads, the kv heads, the MLP width and the padded vocab"
        )


def full_shape(key: str, shapes: Sequence[Sequence[int]], cfg) -> tuple[int, ...]:
    """The merged shape of ``key`` from its per-rank shapes, without touching the data."""
    r = rule(key, cfg)
    shape = list(shapes[0])
    if r.kind == "split" and len(shapes) > 1:
        shape[r.dim] = sum(s[r.dim] for s in shapes)
    return tuple(shape)


def split_state(full: Tensors, cfg, tp: int) -> list[dict[str, torch.Tensor]]:
    """The TP = ``tp`` shards (one state dict per rank) of a full ``sequential.*`` state dict."""
    check_tp(cfg, tp)
    return [{k: split_tensor(k, v, cfg, rank, tp) for k, v in full.items()} for rank in range(tp)]


def merge_states(shards: Sequence[Tensors], cfg) -> dict[str, torch.Tensor]:
    """The full (TP = 1) state dict from every rank's state dict (in rank order)."""
    keys = list(shards[0])
    for rank, sd in enumerate(shards[1:], start=1):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))
            raise CheckpointError(
                f"TP rank {rank} of the checkpoint has other entries than rank 0 ({', '.join(diff[:3])}); "
                "the checkpoint mixes files of different runs or is damaged"
            )
    return {k: merge_tensor(k, [sd[k] for sd in shards], cfg) for k in keys}


def _check_divisible(key: str, full: torch.Tensor, r: Rule, tp: int) -> None:
    sizes = r.blocks or (full.shape[r.dim],)
    if sum(sizes) != full.shape[r.dim]:
        raise CheckpointError(
            f"checkpoint entry {key!r} has {full.shape[r.dim]} rows along dim {r.dim}, not {sum(sizes)} as the "
            "config implies; the config does not describe this checkpoint"
        )
    bad = [s for s in sizes if s % tp]
    if bad:
        raise CheckpointError(
            f"{key!r}: size {bad[0]} along dim {r.dim} is not divisible by TP {tp}; pick a TP that divides "
            "the heads, the kv heads, the MLP width and the padded vocab"
        )
