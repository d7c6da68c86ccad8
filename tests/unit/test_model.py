"""The model: NeoX names and numbering, tied head, init, dtypes, backends, block variants.

Run: pytest -q tests/unit/test_model.py
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from neox import config as neox_config
from neox.errors import ConfigError
from neox.model import GPTModel, build, build_layers
from neox.model.attention_backends import SDPAttention
from neox.model.init import INIT_METHODS
from neox.parallel import TensorParallel

SHAPE = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "seq_length": 16,
    "max_position_embeddings": 16,
    "vocab_file": None,
    "padded_vocab_size": 1024,
}
LLAMA = {
    "norm": "rmsnorm",
    "activation": "swiglu",
    "intermediate_size": 96,
    "mlp_multiple_of": 96,
    "rotary_pct": 1.0,
    "gpt_j_residual": False,
    "use_bias_in_norms": False,
    "use_bias_in_attn_linear": False,
    "use_bias_in_mlp": False,
    "no_weight_tying": False,
    "num_kv_heads": 2,
}


def config(repo, world_size=None, **overrides):
    return neox_config.load(
        [repo / "configs" / "neox-tiny.yml"], {**SHAPE, **overrides}, world_size=world_size
    )


def ids(seq=16, batch=2):
    return torch.randint(0, 1000, (batch, seq), generator=torch.Generator().manual_seed(0))


# --- names and numbering (facts §4.3, §4.4) ------------------------------------------------------

PER_LAYER_PYTHIA = [
    ("input_layernorm.weight", (64,)),
    ("input_layernorm.bias", (64,)),
    ("attention.query_key_value.weight", (192, 64)),
    ("attention.query_key_value.bias", (192,)),
    ("attention.dense.weight", (64, 64)),
    ("attention.dense.bias", (64,)),
    ("post_attention_layernorm.weight", (64,)),
    ("post_attention_layernorm.bias", (64,)),
    ("mlp.linear1.weight", (256, 64)),
    ("mlp.linear1.bias", (256,)),
    ("mlp.linear2.weight", (64, 256)),
    ("mlp.linear2.bias", (64,)),
]
PER_LAYER_LLAMA = [
    ("input_layernorm.scale", (64,)),
    ("attention.query_key_value.weight", ((4 + 2 * 2) * 16, 64)),
    ("attention.dense.weight", (64, 64)),
    ("post_attention_layernorm.scale", (64,)),
    ("mlp.linear1.weight", (192, 64)),
    ("mlp.linear2.weight", (64, 96)),
]


def test_pythia_like_state_dict_is_the_neox_module_dict(repo):
    model = build(config(repo))  # neox-tiny: rotary 0.25, parallel residual, untied, layernorm
    expected = [("sequential.0.word_embeddings.weight", (1024, 64))]
    expected += [(f"sequential.{i}.{name}", shape) for i in (2, 3) for name, shape in PER_LAYER_PYTHIA]
    expected += [("sequential.5.norm.weight", (64,)), ("sequential.5.norm.bias", (64,))]
    expected += [("sequential.6.final_linear.weight", (1024, 64))]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def test_llama_like_state_dict_is_the_neox_module_dict(repo):
    model = build(config(repo, **LLAMA))  # tied, GQA, RMSNorm, SwiGLU, no biases
    expected = [("sequential.0.word_embeddings.weight", (1024, 64))]
    expected += [(f"sequential.{i}.{name}", shape) for i in (2, 3) for name, shape in PER_LAYER_LLAMA]
    expected += [("sequential.5.norm.scale", (64,))]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def test_optional_entries_learned_positions_inv_freq_qk_norm(repo):
    sd = build(config(repo, pos_emb="learned", opt_pos_emb_offset=0)).state_dict()
    assert sd["sequential.0.position_embeddings.weight"].shape == (16, 64)
    assert not any("rotary" in k for k in sd)
    sd = build(config(repo, rotary_save_freqs_buffer=True, use_qk_layernorm=True)).state_dict()
    assert sd["sequential.3.attention.rotary_emb.inv_freq"].shape == (2,)  # rotary_ndims 4 of head_dim 16
    assert sd["sequential.2.attention.qk_layernorm.weight"].shape == (4, 16)
    assert not any("cos_cached" in k for k in sd)


def test_layers_map_tensor_to_tensor_and_compose_to_the_model(repo):
    cfg = config(repo)
    layers = build_layers(cfg)
    assert len(layers) == cfg.num_layers + 5
    model = GPTModel(layers, cfg).eval()
    x = ids()
    with torch.no_grad():
        h = x
        for layer in layers:
            h = layer(h)
        assert torch.equal(h, model(x))
    assert h.shape == (2, 16, 1024)
    assert model.final_norm is layers[5] and model.head is layers[6] and list(model.layers) == layers[2:4]


# --- tied head --------------------------------------------------------------------------------


def test_tied_head_has_no_parameters_and_uses_the_embedding(repo):
    model = build(config(repo, no_weight_tying=False)).eval()
    assert list(model.head.parameters()) == [] and list(model.head.state_dict()) == []
    assert not any(k.startswith("sequential.6.") for k in model.state_dict())
    emb = model.embedding.word_embeddings.weight
    x = ids()
    hidden = model.final_norm(model.layers(model.embedding(x)))
    assert torch.equal(model(x), hidden @ emb.T)
    model(x).sum().backward()
    unseen = sorted(set(range(1024)) - set(x.flatten().tolist()))[0]
    assert emb.grad[unseen].abs().sum() > 0  # only the head reaches rows of unseen tokens
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in model.state_dict().values())


# --- initialisation ----------------------------------------------------------------------------


def test_small_init_and_wang_init_stds_biases_and_norms(repo):
    cfg = config(repo, hidden_size=256, num_layers=4, seq_length=8, max_position_embeddings=8)
    layer = build(cfg).sequential[2]
    h, layers = 256, 4
    assert math.isclose(
        layer.attention.query_key_value.weight.std().item(), math.sqrt(2 / (5 * h)), rel_tol=0.02
    )
    assert math.isclose(layer.mlp.linear2.weight.std().item(), 2 / layers / math.sqrt(h), rel_tol=0.02)
    assert math.isclose(layer.attention.dense.weight.std().item(), 2 / layers / math.sqrt(h), rel_tol=0.03)
    assert torch.all(layer.mlp.linear1.bias == 0) and torch.all(layer.attention.dense.bias == 0)
    assert torch.all(layer.input_layernorm.weight == 1) and torch.all(layer.input_layernorm.bias == 0)


def _check_init(name: str, w: torch.Tensor, sigma: float, layers: int) -> None:
    std = w.std().item()
    rows, cols = w.shape
    if name == "normal":
        assert math.isclose(std, sigma, rel_tol=0.03)
    elif name == "scaled_normal":
        assert math.isclose(std, sigma / math.sqrt(2 * layers), rel_tol=0.03)
    elif name == "single_residual_scaled_normal":
        assert math.isclose(std, sigma / math.sqrt(layers), rel_tol=0.03)
    elif name == "small_init":
        assert math.isclose(std, math.sqrt(2 / (5 * cols)), rel_tol=0.03)
    elif name == "wang_init":
        assert math.isclose(std, 2 / layers / math.sqrt(cols), rel_tol=0.03)
    elif name in ("xavier_uniform", "xavier_normal"):
        assert math.isclose(std, math.sqrt(2 / (rows + cols)), rel_tol=0.03)
        if name == "xavier_uniform":
            assert w.abs().max() <= math.sqrt(6 / (rows + cols))
    else:  # (scaled_)orthogonal: rows orthogonal with squared norm gain²
        gain2 = 2.0 if name == "orthogonal" else 2.0 / layers
        gram = w.double() @ w.double().T
        torch.testing.assert_close(gram, gain2 * torch.eye(rows, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", INIT_METHODS)
def test_every_upstream_init_method(repo, method):
    cfg = config(repo, hidden_size=128, num_layers=4, init_method=method, output_layer_init_method=method)
    layer = build(cfg).sequential[2]
    _check_init(method, layer.attention.dense.weight.detach(), cfg.init_method_std, 4)  # square 128 x 128
    assert torch.all(torch.isfinite(layer.mlp.linear1.weight))


def test_init_is_deterministic_from_the_seed(repo):
    a, b = build(config(repo)).state_dict(), build(config(repo)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build(config(repo, seed=4321)).state_dict()
    assert not torch.equal(a["sequential.2.mlp.linear1.weight"], c["sequential.2.mlp.linear1.weight"])
    # Each parameter has its own stream: layers are not copies of one another.
    assert not torch.equal(a["sequential.2.mlp.linear1.weight"], a["sequential.3.mlp.linear1.weight"])


@pytest.mark.parametrize("overrides", [{}, LLAMA], ids=["pythia", "llama-gqa"])
def test_init_does_not_depend_on_the_tp_degree(repo, overrides):
    """A TP = 2 rank (simulated, no process group) holds exactly its shard of the TP = 1 model."""
    full = build(config(repo, **overrides))
    cfg2 = config(repo, world_size=2, model_parallel_size=2, **overrides)
    full_params = dict(full.named_parameters())
    for rank in range(2):
        model = build(cfg2, tp=TensorParallel(group=None, rank=rank, world_size=2))
        for path, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                whole = full_params[f"{path}.{pname}"].detach()
                expected = module.take_shard(pname, whole) if hasattr(module, "take_shard") else whole
                assert torch.equal(p, expected), f"{path}.{pname} rank {rank}"


# --- dtype, backends, errors ----------------------------------------------------------------


def test_dtype_follows_params_dtype_and_bf16_runs_on_cpu(repo):
    model = build(config(repo, precision="bfloat16", **LLAMA))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.sequential[2].attention.rotary_emb.cos_cached.dtype == torch.bfloat16
    logits = model(ids())
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    assert model.sequential[2].mlp.linear1.weight.grad.abs().sum() > 0


def test_missing_flash_attn_is_one_config_error(repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn -> ImportError
    cfg = config(repo, num_layers=4, attention_config=[[["global", "flash"], 2]], precision="bfloat16")
    with pytest.raises(ConfigError) as err:
        build(cfg)
    assert str(err.value) == (
        "attention_config asks for 'flash' (layer 1) but flash-attn is not installed; install flash-attn or use 'global'"
    )


@pytest.mark.parametrize("key", ["te_mha", "te_columnparallel", "te_rowparallel", "te_layernorm_mlp"])
def test_missing_transformer_engine_is_one_config_error(repo, monkeypatch, key):
    monkeypatch.setitem(sys.modules, "transformer_engine", None)
    monkeypatch.setitem(sys.modules, "transformer_engine.pytorch", None)
    with pytest.raises(ConfigError, match=f"^{key}: true needs Transformer Engine, which is not installed; "):
        build(config(repo, **{key: True}))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pos_emb": "alibi"}, "pos_emb: 'alibi' is not supported; use one of rotary, learned, none"),
        (
            {"norm": "te_rmsnorm"},
            "norm: te_rmsnorm is not supported (its checkpoint names differ); use norm: rmsnorm",
        ),
    ],
)
def test_unsupported_settings_are_refused(repo, overrides, message):
    cfg = config(repo)
    for key, value in overrides.items():  # set after loading: the model checks on its own too
        setattr(cfg, key, value)
    with pytest.raises(ConfigError) as err:
        build(cfg)
    assert str(err.value) == message


def test_sdpa_sliding_window_and_gqa_match_a_reference():
    torch.manual_seed(0)
    b, s, heads, kv, d, w = 2, 12, 4, 2, 8, 3
    q, k, v = torch.randn(b, s, heads, d), torch.randn(b, s, kv, d), torch.randn(b, s, kv, d)
    ref_k, ref_v = k.repeat_interleave(heads // kv, dim=2), v.repeat_interleave(heads // kv, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, ref_k) / math.sqrt(d)
    i = torch.arange(s)
    allowed = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] <= w)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    expected = torch.einsum("bhqk,bkhd->bqhd", probs, ref_v)
    torch.testing.assert_close(SDPAttention(window=w)(q, k, v, 0.0), expected, atol=1e-5, rtol=1e-5)
    causal = scores.masked_fill(i[:, None] < i[None, :], float("-inf")).softmax(-1)
    expected = torch.einsum("bhqk,bkhd->bqhd", causal, ref_v)
    torch.testing.assert_close(SDPAttention()(q, k, v, 0.0), expected, atol=1e-5, rtol=1e-5)


# --- block variants, positions, dropout, checkpointing ------------------------------------------


def test_gpt_j_tied_uses_one_norm_for_both_branches(repo):
    model = build(config(repo, gpt_j_tied=True)).eval()
    x = ids()
    before = model(x)
    layer = model.sequential[2]
    with torch.no_grad():
        layer.post_attention_layernorm.weight.mul_(3.0)
    assert torch.equal(model(x), before)  # kept for the checkpoint keys, unused
    with torch.no_grad():
        layer.input_layernorm.weight.mul_(3.0)
    assert not torch.allclose(model(x), before)


def test_learned_positions_with_opt_offset(repo):
    model = build(config(repo, pos_emb="learned", opt_pos_emb_offset=2)).eval()
    x = ids(seq=10)
    emb = model.embedding
    expected = emb.word_embeddings.weight[x] + emb.position_embeddings.weight[2:12]
    assert torch.equal(emb(x), expected)


def test_sequences_longer_than_seq_length_match_a_longer_cache(repo):
    short, long = (
        build(config(repo)).eval(),
        build(config(repo, seq_length=32, max_position_embeddings=32)).eval(),
    )
    x = ids(seq=24)
    with torch.no_grad():
        torch.testing.assert_close(short(x), long(x), atol=1e-6, rtol=0)


def test_dropout_only_in_training(repo):
    model = build(config(repo, hidden_dropout=0.2, attention_dropout=0.2))
    x = ids()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_activation_checkpointing_gives_the_same_loss_and_gradients(repo):
    def loss_and_grads(checkpointing: bool):
        model = build(
            config(
                repo,
                num_layers=3,
                checkpoint_activations=checkpointing,
                checkpoint_num_layers=2,
                hidden_dropout=0.1,
            )
        ).train()
        torch.manual_seed(7)
        logits = model(ids())
        loss = F.cross_entropy(logits.flatten(0, 1), ids().roll(-1, dims=1).flatten())
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss_a, grads_a = loss_and_grads(False)
    loss_b, grads_b = loss_and_grads(True)
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)
