"""Converted TP = 2 shards run in the engine's real tensor-parallel forward (2 processes, gloo).

HF models are converted at TP 2; each of two processes builds ``neox.model`` in a TP group of
two, loads only its own rank's shard from disk, and runs the forward with the engine's
collectives (vocab-parallel embedding, column/row-parallel linears, the parallel-residual
all-reduce, the gathered logits). Rank 0's logits must equal the original HF model's within
1e-5. This is the end-to-end check of the on-disk shard rules against how the engine executes
TP, including the rule that matters most and is easiest to get wrong: with the parallel residual
each rank adds bias / TP before the reduction (variant ``neox-parallel``), with the sequential
residual the full bias once after it (``neox-sequential``); GQA and gated MLP blocks per rank
(``llama-gqa``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent

CASES = {
    "neox-parallel": dict(arch="neox", parallel=True, rotary_pct=0.25),
    "neox-sequential": dict(arch="neox", parallel=False, rotary_pct=1.0, tied=True),
    "llama-gqa": dict(arch="llama", kv_heads=2),
}


def _rank_main(rank: int, world: int, store: str, ckpts: dict[str, str], tokens: torch.Tensor, out: str) -> None:
    """One TP rank (spawned; imports only torch and neox, so it starts fast)."""
    from neox.checkpoint import dialects
    from neox.checkpoint.model_config import config_for_checkpoint, in_precision
    from neox.checkpoint.shards import read_shard, scan
    from neox.model import build
    from neox.parallel import set_tensor_parallel_group

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    set_tensor_parallel_group(dist.group.WORLD)
    try:
        for name, ckpt in ckpts.items():
            cfg = in_precision(config_for_checkpoint(Path(ckpt)), "fp32")
            assert cfg.model_parallel_size == world
            model = build(cfg).eval()
            shard = dialects.to_current(read_shard(scan(Path(ckpt)), rank), cfg.norm)
            model.load_state_dict(shard, strict=True)
            with torch.no_grad():
                logits = model(tokens)
            if rank == 0:
                torch.save(logits, Path(out) / f"{name}.pt")
    finally:
        set_tensor_parallel_group(None)
        dist.destroy_process_group()


def _corrupt_parallel_residual_biases(ckpt: Path) -> None:
    """What a splitter that copies row-parallel biases to every rank would write (2 x bias in effect)."""
    for rank in range(2):
        f = ckpt / f"mp_rank_{rank:02d}_model_states.pt"
        states = torch.load(f, weights_only=False)
        for key in [k for k in states["module"] if k.endswith(("attention.dense.bias", "mlp.linear2.bias"))]:
            states["module"][key] = states["module"][key] * 2
        torch.save(states, f)


def test_tp2_shards_in_the_engines_tensor_parallel_forward(tmp_path):
    sys.path.insert(0, str(HERE))
    from test_convert_round_trip import assert_close, hf_logits, ids, make_hf_dir

    from neox.checkpoint import convert

    ckpts, references = {}, {}
    for name, spec in {**CASES, "bad-bias": CASES["neox-parallel"]}.items():
        src = make_hf_dir(tmp_path / name / "hf", **spec)
        references[name] = hf_logits(src)
        convert.hf_to_neox(str(src), tmp_path / name / "neox", tp_size=2, progress=False)
        ckpts[name] = str(tmp_path / name / "neox" / "global_step0")
    _corrupt_parallel_residual_biases(Path(ckpts["bad-bias"]))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), ckpts, ids(), str(tmp_path)), nprocs=2, join=True)
    for name in CASES:
        assert_close(torch.load(tmp_path / f"{name}.pt"), references[name])
    # The negative control: the same model with biases copied instead of split is visibly wrong.
    with pytest.raises(AssertionError, match="not close"):
        assert_close(torch.load(tmp_path / "bad-bias.pt"), references["bad-bias"])
