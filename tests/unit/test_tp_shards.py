"""TP shard rules of checkpoints (neox.checkpoint.tp) and parameter-name dialects.

The rules must be the shards the engine's TP layers hold: for every parameter of several model
variants, the piece ``split_state`` gives rank r equals what a rank-r model built by
``neox.model.build`` at that TP keeps of the same (TP-independent) initialisation, and the rule's
kind matches the layer (column/row/vocab split with the same blocks; the parallel-residual
row-parallel bias is the one whose layer adds it before the reduction). Merging inverts
splitting exactly. The multi-process forward at TP 2 is in tests/integration/test_convert_tp_engine.py.
"""

from __future__ import annotations

import pytest
import torch

from neox.checkpoint import dialects, tp
from neox.config import from_dict
from neox.errors import CheckpointError
from neox.model import build
from neox.parallel import RowParallelLinear, TensorParallel, TensorParallelModule

BASE = {
    "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 16, "max_position_embeddings": 16,
    "vocab_file": None, "padded_vocab_size": 1024, "train_micro_batch_size_per_gpu": 1, "pos_emb": "rotary",
    "no_weight_tying": True,
}
LLAMA = {"norm": "rmsnorm", "activation": "swiglu", "intermediate_size": 96, "mlp_multiple_of": 96, "rotary_pct": 1.0,
         "use_bias_in_norms": False, "use_bias_in_attn_linear": False, "use_bias_in_mlp": False}
VARIANTS = {
    "neox-parallel-residual": dict(gpt_j_residual=True, rotary_pct=0.25),
    "neox-sequential-residual": dict(gpt_j_residual=False),
    "neox-tied-qk-norm": dict(no_weight_tying=False, use_qk_layernorm=True, rotary_save_freqs_buffer=True),
    "llama-mha": dict(LLAMA),
    "llama-gqa": dict(LLAMA, num_kv_heads=2),
    "llama-biases": dict(LLAMA, num_kv_heads=2, use_bias_in_attn_linear=True, use_bias_in_mlp=True),
}


def config(tp_size: int = 1, **changes):
    return from_dict({**BASE, **changes, "model_parallel_size": tp_size}, world_size=tp_size)


def _module_of(model: torch.nn.Module, key: str) -> tuple[torch.nn.Module, str]:
    path, param = key.rsplit(".", 1)
    return model.get_submodule(path), param


@pytest.mark.parametrize(
    "variant, tp_size",
    [(v, t) for v in VARIANTS for t in (2, 4) if VARIANTS[v].get("num_kv_heads", 4) % t == 0],
)
def test_rules_are_the_shards_the_engine_layers_hold(variant, tp_size):
    one, cfg = config(1, **VARIANTS[variant]), config(tp_size, **VARIANTS[variant])
    full = build(one).state_dict()
    ours = tp.split_state(full, cfg, tp_size)
    for rank in range(tp_size):
        model = build(cfg, tp=TensorParallel(group=None, rank=rank, world_size=tp_size))
        theirs = model.state_dict()
        assert theirs.keys() == full.keys()
        for key, value in theirs.items():
            rule = tp.rule(key, cfg)
            module, param = _module_of(model, key)
            if isinstance(module, TensorParallelModule):
                split = module._split[param]
                if split is None:
                    assert rule.kind in ("sum", "replicated"), key
                    sums = isinstance(module, RowParallelLinear) and not module.reduce_output
                    assert (rule.kind == "sum") == sums, key  # the parallel-residual bias rule
                    assert sums == cfg.gpt_j_residual, key
                    continue  # a layer's own init replicates it; the checkpoint holds bias / TP
                dim, blocks = split
                assert (rule.kind, rule.dim, rule.blocks) == ("split", dim, tuple(blocks) if blocks else None), key
            assert torch.equal(ours[rank][key], value), (key, rank)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merge_inverts_split(variant):
    cfg = config(2, **VARIANTS[variant])
    torch.manual_seed(0)
    full = {k: torch.randn_like(v) for k, v in build(config(1, **VARIANTS[variant])).state_dict().items()}
    merged = tp.merge_states(tp.split_state(full, cfg, 2), cfg)
    assert merged.keys() == full.keys()
    for key in full:
        assert torch.equal(merged[key], full[key]), key


def test_gqa_and_gated_blocks_are_split_per_block():
    cfg = config(2, **VARIANTS["llama-gqa"])  # q 64 rows, k 32, v 32; linear1 [value 96 | gate 96]
    qkv = torch.arange(128.0)
    r0 = tp.split_tensor("sequential.2.attention.query_key_value.bias", qkv, cfg, 0, 2)
    assert r0.tolist() == list(range(0, 32)) + list(range(64, 80)) + list(range(96, 112))
    linear1 = torch.arange(192.0)
    r1 = tp.split_tensor("sequential.2.mlp.linear1.bias", linear1, cfg, 1, 2)
    assert r1.tolist() == list(range(48, 96)) + list(range(144, 192))


def test_row_parallel_bias_sums_only_with_parallel_residual():
    """Upstream's converter sums these biases for every model: TP x the bias for sequential residual."""
    bias = torch.tensor([1.0, -2.0, 3.0])
    for key in ("sequential.2.attention.dense.bias", "sequential.3.mlp.linear2.bias"):
        par = config(2, gpt_j_residual=True)
        pieces = [tp.split_tensor(key, bias, par, r, 2) for r in range(2)]
        assert [p.tolist() for p in pieces] == [[0.5, -1.0, 1.5]] * 2
        assert torch.equal(tp.merge_tensor(key, pieces, par), bias)
        seq = config(2, gpt_j_residual=False)
        pieces = [tp.split_tensor(key, bias, seq, r, 2) for r in range(2)]
        assert all(torch.equal(p, bias) for p in pieces)
        assert torch.equal(tp.merge_tensor(key, pieces, seq), bias)  # not 2 x bias


def test_replicated_tensors_merge_to_one_copy_or_their_mean():
    cfg = config(2)
    key = "sequential.2.input_layernorm.weight"
    w = torch.tensor([1.0, 2.0])
    assert tp.merge_tensor(key, [w, w.clone()], cfg) is w
    assert tp.merge_tensor(key, [w, w + 1], cfg).tolist() == [1.5, 2.5]


def test_bad_layouts_are_refused_with_the_reason():
    cfg = config(2, **VARIANTS["llama-gqa"])
    with pytest.raises(CheckpointError, match=r"tensor parallelism 4 does not divide num_kv_heads 2"):
        tp.split_state(build(config(1, **VARIANTS["llama-gqa"])).state_dict(), config(1, **VARIANTS["llama-gqa"]), 4)
    with pytest.raises(CheckpointError, match=r"no tensor-parallel rule for checkpoint entry 'sequential.2.mlp.w3.weight'"):
        tp.rule("sequential.2.mlp.w3.weight", cfg)
    with pytest.raises(CheckpointError, match=r"TP rank 1 of the checkpoint has other entries than rank 0"):
        tp.merge_states([{"sequential.0.word_embeddings.weight": torch.zeros(2, 2)}, {}], cfg)
    with pytest.raises(CheckpointError, match=r"different shapes on different TP ranks"):
        tp.merge_tensor("sequential.2.input_layernorm.scale", [torch.zeros(2), torch.zeros(3)], cfg)


@pytest.mark.parametrize("dialect", ["legacy", "te"])
def test_dialects_round_trip_and_are_detected(dialect):
    cfg = config(1, **VARIANTS["neox-parallel-residual"])
    state = build(cfg).state_dict()
    spelled = dialects.from_current(state, dialect)
    assert dialects.detect(spelled) == dialect and dialects.detect(state) == "current"
    back = dialects.to_current(spelled, cfg.norm)
    assert back.keys() == state.keys()
    if dialect == "te":
        assert spelled["sequential.2.mlp.layer_norm_weight"] is state["sequential.2.post_attention_layernorm.weight"]
        assert spelled["sequential.3.attention.qkv._extra_state"] is None  # "no FP8 state" to every TE release
        assert "sequential.2.attention.proj.bias" in spelled and "sequential.2.mlp.fc2_bias" in spelled
    else:
        assert "sequential.2.mlp.dense_h_to_4h.weight" in spelled


def test_te_rmsnorm_mlp_norm_maps_to_scale():
    state = {"sequential.2.mlp.layer_norm_weight": torch.ones(4), "sequential.2.mlp._extra_state": None}
    assert list(dialects.to_current(state, "rmsnorm")) == ["sequential.2.post_attention_layernorm.scale"]


def test_incomplete_checkpoint_directories_are_refused(tmp_path):
    from neox.checkpoint import shards

    empty = tmp_path / "global_step1"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"neither layer_\*-model_\*-model_states.pt nor mp_rank_\*"):
        shards.scan(empty)
    gap = tmp_path / "global_step2"
    gap.mkdir()
    for name in ("mp_rank_00_model_states.pt", "mp_rank_02_model_states.pt"):
        (gap / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model-state files of ranks \[0, 2\]; some ranks' files are missing"):
        shards.scan(gap)
    layers = tmp_path / "global_step3"
    layers.mkdir()
    for name in ("layer_00-model_00-model_states.pt", "layer_00-model_01-model_states.pt",
                 "layer_02-model_00-model_states.pt", "mp_rank_00_model_states.pt"):
        (layers / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is missing layer_02-model_01-model_states.pt"):
        shards.scan(layers)
    (layers / "layer_02-model_01-model_states.pt").write_bytes(b"")
    info = shards.scan(layers)
    assert (info.layout, info.tp, info.layer_indices) == ("pipeline", 2, [0, 2])
