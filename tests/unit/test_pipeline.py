"""Pipeline stages: upstream's layer indices and files, layout-independent weights, partitions, loading.

Two gloo processes build the two stages of a 2-layer model (DeepSpeed ``PipelineModule``) with an
untied and a tied head. Run: pytest -q tests/unit/test_pipeline.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neox.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SMALL = ["num_layers=2", "hidden_size=64", "num_attention_heads=4", "seq_length=16", "max_position_embeddings=16",
         "pipe_parallel_size=2"]


def _config(*overrides, world_size=2):
    import neox.config

    return neox.config.load([str(REPO / "configs/neox-tiny.yml")], [*SMALL, *overrides], world_size=world_size)


def _stage(rank: int, cfg, tmp: Path) -> dict:
    from neox.checkpoint import layout
    from neox.model import build
    from neox.parallel.pipeline import build_pipeline_module
    from neox.parallel.topology import build_topology

    topo = build_topology(pipe=2, data=1, tensor=1)
    module = build_pipeline_module(cfg, topo, device=torch.device("cpu"), loss_fn=None)
    tying = f"no_weight_tying={str(cfg.no_weight_tying).lower()}"
    ref = build(_config("pipe_parallel_size=1", tying, world_size=1)).state_dict()  # the same model in one piece
    mine = module.neox_state_dict()
    out = {
        "layers": sorted(module.stage_layers()),
        "same_init": all(torch.equal(v, ref[k]) for k, v in mine.items()),
        "files": [Path(module.ckpt_layer_path(str(tmp), local)).name
                  for local, layer in enumerate(module.forward_funcs) if hasattr(layer, "state_dict")],
        "expected_files": [layout.layer_file(i) for i in module.stage_layers()],
        "parts": list(module.parts),
        "summary": module.partition_summary(),
        "tied": sorted(module.tied_modules.keys()),
    }
    if "embed" in module.tied_modules:
        out["tied_equal"] = torch.equal(module.tied_modules["embed"].word_embeddings.weight,
                                        ref["sequential.0.word_embeddings.weight"])
    # Loading maps legacy names and re-synchronises the tied copy from the first stage.
    if rank == 0:
        changed = {k: v + 1.0 for k, v in ref.items()}
        for idx, sd in layout.group_by_layer(changed).items():
            legacy = {k.replace("mlp.linear1.", "mlp.dense_h_to_4h.").replace("mlp.linear2.", "mlp.dense_4h_to_h."): v
                      for k, v in sd.items()}
            torch.save(legacy, tmp / layout.layer_file(idx))
    dist.barrier()
    module.load_state_dir(str(tmp))
    loaded = module.neox_state_dict()
    out["loaded"] = all(torch.equal(v, ref[k] + 1.0) for k, v in loaded.items())
    if "embed" in module.tied_modules:
        out["tied_loaded"] = torch.equal(module.tied_modules["embed"].word_embeddings.weight,
                                         ref["sequential.0.word_embeddings.weight"] + 1.0)
    dist.barrier()
    return out


def _partitions() -> dict:
    from neox.parallel.pipeline import build_pipeline_module
    from neox.parallel.topology import build_topology

    topo = build_topology(pipe=2, data=1, tensor=1)
    parts = {}
    for method in ("uniform", "parameters", "type:ParallelTransformerLayerPipe", "type:transformer|mlp"):
        cfg = _config(f"pipe_partition_method={method}")
        parts[method] = list(build_pipeline_module(cfg, topo, device=torch.device("cpu"), loss_fn=None).parts)
    return parts


def _main(rank: int, world: int, store: str, out: str) -> None:
    import deepspeed

    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    try:
        results = {}
        for tied in (False, True):
            tmp = Path(out) / f"ckpt_tied{tied}"
            tmp.mkdir(exist_ok=True)
            cfg = _config(f"no_weight_tying={str(not tied).lower()}")
            results[tied] = _stage(rank, cfg, tmp)
        results["parts"] = _partitions()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_stages(tmp_path):
    mp.spawn(_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    first, last = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    # untied: 0 embedding | 1 fn | 2, 3 blocks | 4 fn | 5 final norm | 6 head (facts 4.3 with L = 2)
    assert first[False]["layers"] == [0, 2] and last[False]["layers"] == [3, 5, 6]
    assert first[False]["summary"] == "stage 0: layers 0-2, stage 1: layers 3-6"
    # tied: the head has no parameters and no file; both stages hold the embedding
    assert first[True]["layers"] == [0, 2] and last[True]["layers"] == [3, 5]
    assert first[True]["tied"] == last[True]["tied"] == ["embed"]
    assert last[True]["tied_equal"] and last[True]["tied_loaded"]
    for stage in (first, last):
        for tied in (False, True):
            res = stage[tied]
            assert res["same_init"], "stage weights differ from the single-module model's"
            assert res["files"] == res["expected_files"], (res["files"], res["expected_files"])
            assert res["loaded"], "legacy-named layer files did not load"
    parts = first["parts"]
    assert parts["type:transformer|mlp"] == parts["type:ParallelTransformerLayerPipe"] == [0, 3, 7]
    assert parts["uniform"] == [0, 4, 7]
    assert parts["parameters"][0] == 0 and parts["parameters"][-1] == 7 and len(parts["parameters"]) == 3


def test_layer_recipes_follow_upstreams_indices():
    from neox.model.gpt import Embedding, FinalNorm, LMHead, layer_recipes
    from neox.model.transformer import TransformerLayer

    recipes = layer_recipes(_config("pipe_parallel_size=1", world_size=1))
    assert [r.cls for r in recipes] == [Embedding, None, TransformerLayer, TransformerLayer, None, FinalNorm, LMHead]
    tied = layer_recipes(_config("pipe_parallel_size=1", "no_weight_tying=false", world_size=1))
    assert tied[-1].tied and tied[-1].cls is None


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["zero_optimization.stage=2"], "zero_optimization.stage 2 needs pipe_parallel_size <= 1 and model_parallel_size 1 "
                                        "(got pipe 2, tensor 1): DeepSpeed's pipeline engine supports ZeRO stage 0 or 1"),
        (["pipe_partition_method=balanced"], "pipe_partition_method 'balanced' is not 'parameters', 'uniform' or "
                                             "'type:<regex>'"),
        (["pipe_partition_method=type:mlp"], "pipe_partition_method 'type:mlp' matches no layer"),
        (["pipe_partition_method=type:("], "has an invalid regex"),
        (["pipe_parallel_size=3"], "pipe_parallel_size 3 is more than num_layers 2"),
        (["train_impl=dpo"], "train_impl dpo does not support pipeline parallelism"),
    ],
)
def test_pipeline_combinations_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        _config(*overrides, world_size=6 if "pipe_parallel_size=3" in overrides else 2)
    assert message in str(err.value) and "\n" not in str(err.value)
