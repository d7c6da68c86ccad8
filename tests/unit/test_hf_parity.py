"""Logits parity with ``transformers`` (the model's acceptance test), both directions.

HF models are built locally from configs with random weights (nothing is downloaded). Every
parameter, biases and norm weights included, is randomised before mapping, so a wrong or
missing mapping cannot hide behind HF's zero/one initialisation. fp32 on CPU, |Δlogits| ≤ 1e-5.

Run: pytest -q tests/unit/test_hf_parity.py
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from neox import config as neox_config
from neox.checkpoint.hf import hf_config, hf_to_neox, neox_args_from_hf, neox_to_hf
from neox.errors import CheckpointError, ConfigError
from neox.model import build

TOKENIZER_VOCAB = 1000  # padded to 1024, HF's vocab_size
SHAPE = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "seq_length": 32,
    "max_position_embeddings": 32,
    "vocab_file": None,
    "padded_vocab_size": 1024,
}
LLAMA = {
    "norm": "rmsnorm",
    "rms_norm_epsilon": 1e-6,
    "activation": "swiglu",
    "intermediate_size": 96,
    "mlp_multiple_of": 96,  # keeps upstream's 2/3 rule from changing the gated width
    "rotary_pct": 1.0,
    "rotary_emb_base": 500000,
    "gpt_j_residual": False,
    "use_bias_in_norms": False,
    "use_bias_in_attn_linear": False,
    "use_bias_in_mlp": False,
}
HF_CLASSES = {"neox": transformers.GPTNeoXForCausalLM, "llama": transformers.LlamaForCausalLM}


def config(repo, **overrides):
    return neox_config.load([repo / "configs" / "neox-tiny.yml"], {**SHAPE, **overrides})


def randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_norm = "norm" in name or name.endswith("layernorm.weight")
            p.copy_(
                1 + 0.1 * noise if is_norm and p.ndim == 1 and not name.endswith("bias") else 0.05 * noise
            )


def input_ids() -> torch.Tensor:
    return torch.randint(
        0, TOKENIZER_VOCAB, (2, SHAPE["seq_length"]), generator=torch.Generator().manual_seed(1)
    )


def hf_model(cfg, arch: str, **config_changes):
    hf_cfg = hf_config(cfg, arch)
    for key, value in config_changes.items():
        setattr(hf_cfg, key, value)
    model = HF_CLASSES[arch]._from_config(hf_cfg, attn_implementation="eager").eval()
    randomise(model, seed=2)
    return model


def assert_logits_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape == (2, SHAPE["seq_length"], 1024)
    assert ours.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def check_hf_to_neox(cfg, arch: str, **config_changes) -> None:
    hf = hf_model(cfg, arch, **config_changes)
    ours = build(cfg).eval()
    ours.load_state_dict(hf_to_neox(hf.state_dict(), cfg, arch), strict=True)
    with torch.no_grad():
        assert_logits_match(ours(input_ids()), hf(input_ids()).logits)


def check_neox_to_hf(cfg, arch: str, tmp_path) -> None:
    """Our random init -> HF files on disk -> ``from_pretrained``: HF's own loading path."""
    ours = build(cfg).eval()
    randomise(ours, seed=3)
    tensors = {k: v.contiguous().clone() for k, v in neox_to_hf(ours.state_dict(), cfg, arch).items()}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hf_config(cfg, arch).to_dict()))
    hf = HF_CLASSES[arch].from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        assert_logits_match(ours(input_ids()), hf(input_ids()).logits)


NEOX_VARIANTS = [
    pytest.param(
        dict(rotary_pct=rp, gpt_j_residual=par, no_weight_tying=untied),
        id=f"rotary{rp}-par{par}-untied{untied}",
    )
    for rp in (0.25, 1.0)
    for par in (True, False)
    for untied in (True, False)
]


@pytest.mark.parametrize("overrides", NEOX_VARIANTS)
def test_gpt_neox_from_hf(repo, overrides):
    check_hf_to_neox(config(repo, **overrides), "neox")


@pytest.mark.parametrize("overrides", NEOX_VARIANTS)
def test_gpt_neox_to_hf(repo, overrides, tmp_path):
    check_neox_to_hf(config(repo, **overrides), "neox", tmp_path)


@pytest.mark.parametrize("hf_act", ["gelu_new", "gelu_pytorch_tanh"])
def test_tanh_gelu_of_bias_gelu_fusion_matches_hf(repo, hf_act):
    cfg = config(repo, bias_gelu_fusion=True)
    assert hf_config(cfg, "neox").hidden_act == "gelu_new"
    check_hf_to_neox(cfg, "neox", hidden_act=hf_act)


def test_erf_gelu_is_not_tanh_gelu(repo):
    """The GELU variant matters at this tolerance: tanh weights in an erf model do not match."""
    cfg = config(repo)
    with pytest.raises(AssertionError):
        check_hf_to_neox(cfg, "neox", hidden_act="gelu_new")


def test_gpt_neox_without_attention_bias(repo, tmp_path):
    cfg = config(repo, use_bias_in_attn_linear=False)
    check_hf_to_neox(cfg, "neox")
    check_neox_to_hf(cfg, "neox", tmp_path)


LLAMA_VARIANTS = [
    pytest.param(dict(num_kv_heads=kv, no_weight_tying=untied), id=f"kv{kv}-untied{untied}")
    for kv in (None, 2, 1)
    for untied in (True, False)
]


@pytest.mark.parametrize("overrides", LLAMA_VARIANTS)
def test_llama_from_hf(repo, overrides):
    check_hf_to_neox(config(repo, **LLAMA, **overrides), "llama")


@pytest.mark.parametrize("overrides", LLAMA_VARIANTS)
def test_llama_to_hf(repo, overrides, tmp_path):
    check_neox_to_hf(config(repo, **LLAMA, **overrides), "llama", tmp_path)


def test_llama_with_biases(repo):
    check_hf_to_neox(
        config(repo, **{**LLAMA, "use_bias_in_attn_linear": True, "use_bias_in_mlp": True}), "llama"
    )


def test_round_trip_is_identity_and_keeps_the_tensors(repo):
    cfg = config(repo, **LLAMA, num_kv_heads=2, rotary_save_freqs_buffer=True)
    sd = build(cfg).state_dict()
    back = hf_to_neox(neox_to_hf(sd, cfg, "llama"), cfg, "llama")
    assert back.keys() == sd.keys()
    for key in sd:
        assert torch.equal(back[key], sd[key]), key


def test_inv_freq_buffer_is_written_and_dropped(repo):
    cfg = config(repo, rotary_save_freqs_buffer=True)
    hf_sd = hf_model(cfg, "neox").state_dict()
    neox_sd = hf_to_neox(hf_sd, cfg, "neox")
    inv_freq = neox_sd["sequential.2.attention.rotary_emb.inv_freq"]
    assert inv_freq.shape == (cfg.rotary_ndims // 2,)
    assert torch.equal(inv_freq, build(cfg).state_dict()["sequential.2.attention.rotary_emb.inv_freq"])
    assert not any("inv_freq" in k for k in neox_to_hf(neox_sd, cfg, "neox"))


def test_legacy_mlp_names_are_accepted(repo):
    cfg = config(repo)
    sd = {
        k.replace("mlp.linear1", "mlp.dense_h_to_4h").replace("mlp.linear2", "mlp.dense_4h_to_h"): v
        for k, v in build(cfg).state_dict().items()
    }
    assert "gpt_neox.layers.1.mlp.dense_4h_to_h.bias" in neox_to_hf(sd, cfg, "neox")


def test_leftover_and_missing_keys_are_errors(repo):
    cfg = config(repo)
    sd = dict(build(cfg).state_dict())
    with pytest.raises(CheckpointError, match="does not use: sequential.9.extra"):
        neox_to_hf({**sd, "sequential.9.extra": torch.zeros(1)}, cfg, "neox")
    del sd["sequential.3.mlp.linear2.bias"]
    with pytest.raises(CheckpointError, match="has no 'sequential.3.mlp.linear2.bias'"):
        neox_to_hf(sd, cfg, "neox")


def test_configs_hf_cannot_express_are_refused(repo):
    with pytest.raises(ConfigError, match="HF neox cannot express this model: norm 'rmsnorm'"):
        hf_config(config(repo, norm="rmsnorm"), "neox")
    with pytest.raises(ConfigError, match="rotary_pct 0.25 \\(Llama rotates whole heads\\)"):
        hf_config(config(repo, **{**LLAMA, "rotary_pct": 0.25}), "llama")
    with pytest.raises(ConfigError, match="pos_emb 'learned'"):
        hf_to_neox({}, config(repo, pos_emb="learned"), "neox")


@pytest.mark.parametrize(
    "arch, overrides", [("neox", {"bias_gelu_fusion": True}), ("llama", {**LLAMA, "num_kv_heads": 2})]
)
def test_neox_args_from_hf_rebuild_the_same_shape(repo, arch, overrides):
    cfg = config(repo, **overrides)
    args = neox_args_from_hf(hf_config(cfg, arch))
    again = neox_config.load(
        [repo / "configs" / "neox-tiny.yml"], {**SHAPE, **args, "no_weight_tying": cfg.no_weight_tying}
    )
    for key in (
        "ffn_dim",
        "kv_heads",
        "rotary_ndims",
        "is_gated_mlp",
        "norm",
        "gpt_j_residual",
        "bias_gelu_fusion",
    ):
        assert getattr(again, key) == getattr(cfg, key), key
    assert again.rotary_emb_base == cfg.rotary_emb_base
