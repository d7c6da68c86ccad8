"""Optimizer parameter groups as upstream: no weight decay on biases and norm parameters."""

from __future__ import annotations

import pytest
import torch

import neox.config
from neox.train.optim import build_optimizer, param_groups


def tiny(*overrides):
    return neox.config.load(["configs/neox-tiny.yml"], ["num_layers=2", "hidden_size=64", *overrides], world_size=1)


@pytest.fixture(autouse=True)
def _repo(monkeypatch, repo):
    monkeypatch.chdir(repo)


def test_no_decay_for_biases_and_norms():
    from neox.model import build

    model = build(tiny())
    groups = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    plain = sorted(names[id(p)] for p in groups[1]["params"])
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(n.endswith(".bias") or "norm" in n for n in plain)
    assert "sequential.2.input_layernorm.weight" in plain and "sequential.5.norm.weight" in plain
    assert "sequential.2.attention.query_key_value.bias" in plain
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert "sequential.0.word_embeddings.weight" in decayed and "sequential.6.final_linear.weight" in decayed
    assert len(decayed) + len(plain) == len(names)


def test_rmsnorm_scale_and_zero_decay_single_group():
    from neox.model import build

    model = build(tiny("norm=rmsnorm"))
    names = {id(p): n for n, p in model.named_parameters()}
    plain = {names[id(p)] for p in param_groups(model, 0.1)[1]["params"]}
    assert "sequential.2.input_layernorm.scale" in plain
    assert len(param_groups(model, 0.0)) == 1


def test_adam_is_decoupled_adamw_and_cpu_torch_adam_is_l2():
    from neox.model import build

    cfg = tiny()
    model = build(cfg)
    opt = build_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW and opt.defaults["betas"] == (0.9, 0.95)
    cfg.optimizer_type = "cpu_torch_adam"
    assert type(build_optimizer(model, cfg)) is torch.optim.Adam
