"""neox.config.plan: parameter counts (against the real model), FLOPs per token (against the
perf-anchors table), the rank layout and the memory estimate."""

from __future__ import annotations

import pytest

from neox.config import from_dict, load
from neox.config.plan import (
    coordinates,
    flops_per_token,
    format_plan,
    layout,
    memory_estimate,
    parameter_count,
    plan,
)

PYTHIA = {
    "num_layers": 12,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "seq_length": 2048,
    "max_position_embeddings": 2048,
    "pos_emb": "rotary",
    "rotary_pct": 0.25,
    "no_weight_tying": True,
    "gpt_j_residual": True,
    "tokenizer_type": "HFTokenizer",
    "padded_vocab_size": 50304,
    "train_micro_batch_size_per_gpu": 8,
}


def pythia(**changes):
    world_size = changes.pop("world_size", 1)
    return from_dict({**PYTHIA, **changes}, world_size=world_size)


def test_pythia_160m_parameter_count():
    counts = parameter_count(pythia())
    assert counts["total"] == 162_322_944  # HF EleutherAI/pythia-160m with the padded vocab 50304
    assert counts["embedding"] == 50304 * 768
    assert counts["non_embedding"] == 162_322_944 - 50304 * 768
    assert counts["matmul"] == 12 * 12 * 768 * 768 + 50304 * 768
    assert parameter_count(pythia(no_weight_tying=False))["total"] == 162_322_944 - 50304 * 768


@pytest.mark.parametrize(
    "shape, seq, expected",
    [
        ((24, 2048, 16), 2048, (8.47, 9.07, 8.92)),
        ((24, 2048, 16), 4096, (9.07, 10.28, 10.13)),
        ((32, 4096, 32), 2048, (41.5, 43.1, 42.8)),
        ((32, 4096, 32), 8192, (46.3, 52.8, 52.5)),
    ],
)
def test_flops_per_token_match_perf_anchors(shape, seq, expected):
    layers, hidden, heads = shape
    cfg = pythia(num_layers=layers, hidden_size=hidden, num_attention_heads=heads, seq_length=seq,
                 max_position_embeddings=seq)
    flops = flops_per_token(cfg)
    got = (flops["causal"] / 1e9, flops["noncausal"] / 1e9, flops["neox"] / 1e9)
    assert got == pytest.approx(expected, abs=0.01 if expected[0] < 10 else 0.05)
    assert flops["neox_hfu"] == flops["neox"]
    assert flops_per_token(pythia(checkpoint_activations=True))["neox_hfu"] == pytest.approx(
        flops_per_token(pythia())["neox"] * 4 / 3
    )


def test_llama3_8b_causal_flops_anchor():
    cfg = from_dict(
        {"num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_kv_heads": 8, "seq_length": 8192,
         "max_position_embeddings": 8192, "pos_emb": "rotary", "norm": "rmsnorm", "activation": "swiglu",
         "intermediate_size": 14336, "mlp_multiple_of": 14336, "use_bias_in_attn_linear": False,
         "use_bias_in_mlp": False, "no_weight_tying": True, "make_vocab_size_divisible_by": 1,
         "padded_vocab_size": 128256, "train_micro_batch_size_per_gpu": 1}
    )
    flops = flops_per_token(cfg)
    assert flops["causal"] / 1e9 == pytest.approx(51.5, abs=0.1)  # perf-anchors §1: 51.5 / 57.9
    assert flops["noncausal"] / 1e9 == pytest.approx(57.9, abs=0.1)
    assert parameter_count(cfg)["total"] == 8_030_261_248  # Meta-Llama-3-8B


def test_sliding_window_shrinks_attention_flops():
    full = flops_per_token(pythia())["causal"]
    windowed = flops_per_token(pythia(sliding_window_width=512))["causal"]
    matmul = 6 * parameter_count(pythia())["matmul"]
    assert (windowed - matmul) == pytest.approx((full - matmul) * (512 - 512**2 / 4096) / 1024)


MODEL_VARIANTS = [
    {},
    {"no_weight_tying": False, "pos_emb": "learned", "gpt_j_residual": False},
    {"norm": "rmsnorm", "activation": "swiglu", "num_kv_heads": 2, "use_bias_in_attn_linear": False,
     "use_bias_in_mlp": False, "use_bias_in_norms": False, "intermediate_size": 384, "mlp_multiple_of": 32},
    {"use_qk_layernorm": True, "activation": "geglu", "intermediate_size": 384, "use_bias_in_norms": False,
     "pos_emb": "none"},
]


@pytest.mark.parametrize("changes", MODEL_VARIANTS)
def test_parameter_count_matches_the_model(changes):
    torch = pytest.importorskip("torch")
    from neox.model import build

    cfg = from_dict(
        {"num_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "seq_length": 64, "max_position_embeddings": 64,
         "pos_emb": "rotary", "no_weight_tying": True, "gpt_j_residual": True, "tokenizer_type": "CharLevelTokenizer",
         "train_micro_batch_size_per_gpu": 2, **changes}
    )
    model = build(cfg, device=torch.device("meta"))
    total = sum(p.numel() for p in model.parameters())
    assert parameter_count(cfg)["total"] == total
    embed = model.embedding.word_embeddings.weight.numel()
    positions = model.embedding.position_embeddings
    assert parameter_count(cfg)["embedding"] == embed + (positions.weight.numel() if positions is not None else 0)


def test_layout_rank_order_is_pipe_data_tensor():
    cfg = pythia(world_size=16, pipe_parallel_size=2, model_parallel_size=2, padded_vocab_size=50432)
    lay = layout(cfg)
    assert (lay["data"], lay["pipe"], lay["tensor"]) == (4, 2, 2)
    assert lay["tensor_group_of_rank_0"] == [0, 1]
    assert lay["data_group_of_rank_0"] == [0, 2, 4, 6]
    assert lay["pipe_group_of_rank_0"] == [0, 8]
    assert coordinates(13, data=4, pipe=2, tensor=2) == {"pipe": 1, "data": 2, "tensor": 1}
    assert lay["last_rank"] == {"pipe": 1, "data": 3, "tensor": 1}


def test_memory_estimate_follows_zero_and_precision():
    base = pythia(world_size=8, bf16={"enabled": True})
    mem0 = memory_estimate(base)
    params = parameter_count(base)["total"]
    assert mem0["parameters_per_gpu"] == params
    assert mem0["weights"] == 2 * params and mem0["gradients"] == 2 * params
    assert mem0["optimizer_states"] == 12 * params
    z1 = memory_estimate(pythia(world_size=8, bf16={"enabled": True}, zero_optimization={"stage": 1}))
    assert z1["optimizer_states"] == 12 * params / 8 and z1["gradients"] == 2 * params
    z3 = memory_estimate(pythia(world_size=8, bf16={"enabled": True}, zero_optimization={"stage": 3}))
    assert z3["weights"] == 2 * params / 8 and z3["gradients"] == 2 * params / 8
    fp32 = memory_estimate(pythia(world_size=8))
    assert fp32["optimizer_states"] == 8 * params and fp32["weights"] == 4 * params
    tp2 = memory_estimate(pythia(world_size=8, model_parallel_size=2, padded_vocab_size=50432))
    assert tp2["parameters_per_gpu"] < 0.55 * params
    ckpt = memory_estimate(pythia(world_size=8, checkpoint_activations=True))
    assert ckpt["activations"] < fp32["activations"] / 5
    assert mem0["total"] == pytest.approx(sum(v for k, v in mem0.items() if k not in ("total", "parameters_per_gpu")))


def test_plan_report_for_a_shipped_config():
    cfg = load(["configs/pythia-1.4b.yml"], ["padded_vocab_size=50304"], world_size=256)
    report = plan(cfg)
    assert report["batch"]["train_batch_size"] == 16 * 256
    assert report["batch"]["tokens_per_step"] == 16 * 256 * 2048
    assert report["flops_per_token"]["causal"] / 1e9 == pytest.approx(8.47, abs=0.01)
    text = format_plan(report)
    assert "world 256 = data 256 x pipe 1 x tensor 1" in text
    assert "batch           4096 = micro 16 x grad_accum 1 x data-parallel 256" in text
    assert text.count("\n") == 4
