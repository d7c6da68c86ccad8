"""inspect_checkpoint: what a converted checkpoint reports, attribute lookup, and comparison across layouts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tools" / "ckpts"))

import inspect_checkpoint  # noqa: E402
from test_convert_round_trip import make_hf_dir  # noqa: E402

from neox.checkpoint import convert, inspect, reshard  # noqa: E402


def test_describe_and_compare(tmp_path, capsys):
    src = make_hf_dir(tmp_path / "hf", "llama", kv_heads=2)
    convert.hf_to_neox(str(src), tmp_path / "a", tp_size=2, pp=0, naming="te", iteration=40, progress=False)
    d = inspect.describe(tmp_path / "a")
    assert (d["layout"], d["tp"], d["pp"], d["naming"], d["iteration"]) == ("sequential", 2, 0, "te", 40)
    assert d["args"]["model_parallel_size"] == 2 and d["optimizer_files"] == 0 and not d["rng_state"]
    qkv = next(t for t in d["tensor_list"] if t["name"] == "sequential.2.attention.qkv.weight")
    assert qkv["shape"] == [64, 64] and qkv["full_shape"] == [128, 64] and qkv["dtype"] == "float32"
    expected = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(src).parameters())
    assert d["parameters"] == expected  # full model, from the merged shapes
    assert d["bytes"]["model"] > 4 * expected  # fp32 weights, both ranks' files
    assert inspect.attribute(tmp_path / "a", "args/padded_vocab_size") == 2048

    reshard.reshard(tmp_path / "a", tmp_path / "b", tp_size=1, pp=1, naming="current", progress=False, log=lambda _: None)
    assert inspect.compare(tmp_path / "a", tmp_path / "b")["equal"]  # other TP, layout and names, same model
    f = tmp_path / "b" / "global_step40" / "layer_03-model_00-model_states.pt"
    sd = torch.load(f)
    sd["mlp.linear2.weight"] = sd["mlp.linear2.weight"] + 0.5
    torch.save(sd, f)
    result = inspect.compare(tmp_path / "a", tmp_path / "b")
    assert not result["equal"] and list(result["differing"]) == ["sequential.3.mlp.linear2.weight"]
    assert abs(result["max_abs_diff"] - 0.5) < 1e-6

    capsys.readouterr()
    assert inspect_checkpoint.main([str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].strip() == "iteration 40; layout sequential; TP 2; PP 0; names te"
    assert json.loads(out[-1])["tp"] == 2
    assert inspect_checkpoint.main([f"{tmp_path / 'a'},{tmp_path / 'b'}", "--compare", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["differing"]["sequential.3.mlp.linear2.weight"]["max_abs_diff"] > 0.4
    assert inspect_checkpoint.main([str(tmp_path / "a"), "--attributes", "args/nothing"]) == 1
    assert "has no entry 'args/nothing'" in capsys.readouterr().err
