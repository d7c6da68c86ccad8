"""NeoX checkpoint layout: names, locating checkpoints, weights in both layouts, crash-safe commits."""

from __future__ import annotations

import pytest
import torch

from neox.checkpoint import commit, layout, weights
from neox.errors import CheckpointError


def _state(num_layers=2):
    sd = {"sequential.0.word_embeddings.weight": torch.randn(8, 4)}
    for i in range(num_layers):
        sd[f"sequential.{i + 2}.mlp.linear1.weight"] = torch.randn(16, 4)
        sd[f"sequential.{i + 2}.input_layernorm.weight"] = torch.ones(4)
    sd[f"sequential.{num_layers + 3}.norm.weight"] = torch.ones(4)
    sd[f"sequential.{num_layers + 4}.final_linear.weight"] = torch.randn(8, 4)
    return sd


def test_file_names_match_upstream():
    assert layout.tag(1000) == "global_step1000"
    assert layout.model_states_file(0) == "mp_rank_00_model_states.pt"
    assert layout.layer_file(2, 0) == "layer_02-model_00-model_states.pt"
    assert layout.layer_file(47, 1) == "layer_47-model_01-model_states.pt"
    assert layout.optim_states_file(3, 0, bf16=True) == "bf16_zero_pp_rank_3_mp_rank_00_optim_states.pt"
    assert (layout.final_norm_index(12), layout.head_index(12)) == (15, 16)  # Pythia-160M


def test_layer_files_round_trip(tmp_path):
    sd = _state()
    torch.save({"module": None, "iteration": 5}, tmp_path / layout.model_states_file(0))
    # two writers share the files; together they write every layer exactly once
    a = weights.write_layer_files(tmp_path, sd, writer=0, writers=2)
    b = weights.write_layer_files(tmp_path, sd, writer=1, writers=2)
    names = sorted(p.name for p in a + b)
    assert names == [layout.layer_file(i) for i in (0, 2, 3, 5, 6)]
    assert not set(a) & set(b)
    back = weights.read_module_state(tmp_path)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_mp_rank_layout_reads_module(tmp_path):
    sd = _state()
    torch.save({"module": sd, "iteration": 5}, tmp_path / layout.model_states_file(0))
    assert set(weights.read_module_state(tmp_path)) == set(sd)


def test_tp2_and_damaged_checkpoints_are_refused(tmp_path):
    (tmp_path / layout.model_states_file(0)).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint file .*mp_rank_00_model_states.pt"):
        weights.read_module_state(tmp_path)
    torch.save({"module": None}, tmp_path / layout.model_states_file(0))
    torch.save({"module": None}, tmp_path / layout.model_states_file(1))
    with pytest.raises(CheckpointError, match="tensor parallelism 2"):
        weights.read_module_state(tmp_path)


def test_rename_for_maps_legacy_and_te_names_and_drops_optional():
    ckpt = {
        "sequential.2.mlp.dense_h_to_4h.weight": 1,
        "sequential.2.mlp.dense_4h_to_h.bias": 2,
        "sequential.3.attention.qkv.weight": 3,
        "sequential.3.attention.qkv._extra_state": 4,
        "sequential.2.attention.rotary_emb.inv_freq": 5,
        "sequential.9.something.else": 6,
    }
    expected = ["sequential.2.mlp.linear1.weight", "sequential.2.mlp.linear2.bias",
                "sequential.3.attention.query_key_value.weight"]
    out = layout.rename_for(ckpt, expected)
    assert out == {
        "sequential.2.mlp.linear1.weight": 1,
        "sequential.2.mlp.linear2.bias": 2,
        "sequential.3.attention.query_key_value.weight": 3,
        "sequential.9.something.else": 6,  # kept, so a strict load reports it
    }
    # and the other way: a model with legacy names loads a current checkpoint
    assert layout.rename_for({"sequential.2.mlp.linear1.weight": 1}, ["sequential.2.mlp.dense_h_to_4h.weight"]) == {
        "sequential.2.mlp.dense_h_to_4h.weight": 1}


def test_resolve(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        layout.resolve(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no 'latest' file"):
        layout.resolve(tmp_path)
    step = tmp_path / "global_step10"
    step.mkdir()
    (tmp_path / "latest").write_text("global_step10")
    with pytest.raises(CheckpointError, match="incomplete"):
        layout.resolve(tmp_path)
    torch.save({"module": None}, step / layout.model_states_file(0))
    assert layout.resolve(tmp_path) == step
    assert layout.resolve(step) == step
    with pytest.raises(CheckpointError, match=r"global_step20 does not exist \(checkpoints present: global_step10\)"):
        layout.resolve(tmp_path, iteration=20)
    staged = commit.staging_dir(tmp_path, 30, "abc")
    staged.mkdir()
    with pytest.raises(CheckpointError, match="never completed"):
        layout.resolve(staged)


def test_commit_rename_latest_and_prune(tmp_path):
    for it in (10, 20, 30):
        staged = commit.staging_dir(tmp_path, it, "run1")
        staged.mkdir()
        torch.save({"iteration": it}, staged / layout.model_states_file(0))
        # before commit: not visible
        assert layout.read_latest(tmp_path) == (None if it == 10 else f"global_step{it - 10}")
        final = commit.commit(tmp_path, staged, it)
        assert final.name == f"global_step{it}" and not staged.exists()
        assert (tmp_path / "latest").read_text() == f"global_step{it}"  # no newline, as DeepSpeed writes it
    # re-saving a step replaces it
    staged = commit.staging_dir(tmp_path, 30, "run2")
    staged.mkdir()
    torch.save({"iteration": 30, "new": True}, staged / layout.model_states_file(0))
    commit.commit(tmp_path, staged, 30)
    assert torch.load(tmp_path / "global_step30" / layout.model_states_file(0))["new"]
    deleted = commit.prune(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["global_step10"]
    assert [p.name for _, p in layout.list_checkpoints(tmp_path)] == ["global_step20", "global_step30"]
    leftover = commit.staging_dir(tmp_path, 40, "dead")
    leftover.mkdir()
    assert commit.remove_stale_staging(tmp_path) == [leftover] and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step20", "global_step30", "latest"]
