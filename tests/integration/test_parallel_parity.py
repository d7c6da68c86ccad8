"""Tensor, sequence and pipeline parallelism on CPU (gloo, 2-4 processes) against one process.

Through the real ``neox train --nproc N`` and the harness of the GPU driver
(``tools/bench/gpu_parallel.py``, so CI runs its logic): a tiny GPT-NeoX (2 layers, h 64, s 64,
tied embeddings, parallel residual, ZeRO-1, fp32, dropout 0) trains 20 steps at a global batch of 8
as 1 rank, TP 2, PP 2 (ZeRO-0), TP 2 x DP 2 with sequence parallelism and PP 2 x DP 2, evaluating at steps 10
and 20. The initial weights are the same in every layout (each parameter is drawn at full size from
its own seed, then sharded).

Tolerance: |Δloss| ≤ 1e-5 at every step and at both evaluations (about 10 ulps of fp32 at loss ~7). The layouts compute
the same function in another summation order (split GEMMs, vocab-parallel cross-entropy,
reduce-scatter, gradients summed over stages); that moves the loss by a few ulps per step and
Adam's normalisation keeps it from growing (measured ≤ 1e-6 over 20 steps). Any real error — a
shard, a bias counted on every rank, a missing gradient all-reduce — changes it by ≥ 1e-3 within
two steps.

Also: TP 2 and PP 2 resume from their step-10 checkpoints bit for bit; the TP 2 checkpoint
(per-rank ``layer_LL-model_TT`` files) resharded to TP 1 with ``tools/ckpts/reshard.py`` gives the
logits the two TP ranks compute; hidden dropout is identical at TP 1 and 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "bench"))
import gpu_parallel as harness  # noqa: E402  (the GPU driver's harness, tested here on the CPU)

TOLERANCE = 1e-5
SAVE = ["checkpoint_factor=10"]
GPU_LAYOUTS = {lay.name: lay for lay in harness.PARITY}
# The driver's layouts; PP 2 here runs ZeRO-0 (fp32 clipping by the pipeline-aware norm of
# neox.parallel.grad_norm: DeepSpeed's own counts replicated parameters on the first stage only).
LAYOUTS = {
    "1 rank": GPU_LAYOUTS["1 rank"].overrides,
    "TP 2": GPU_LAYOUTS["TP 2"].overrides,
    "PP 2": [*GPU_LAYOUTS["PP 2"].overrides, "zero_optimization.stage=0"],
    "TP 2 x DP 2 + SP": [*GPU_LAYOUTS["TP 2 x DP 2"].overrides, "sequence_parallel=true"],
    "PP 2 x DP 2": GPU_LAYOUTS["PP 2 x DP 2"].overrides,
}
NPROC = {"1 rank": 1, "TP 2": 2, "PP 2": 2, "TP 2 x DP 2 + SP": 4, "PP 2 x DP 2": 4}


def _layouts(out: Path) -> list[harness.Layout]:
    saved = ("TP 2", "PP 2")
    return [harness.Layout(name, NPROC[name],
                           [*overrides, *((*SAVE, f"save={out / 'ckpt' / harness.slug(name)}") if name in saved else ())])
            for name, overrides in LAYOUTS.items()]


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    report = harness.parity(_layouts(out), out, gpus=0, tolerance=TOLERANCE, timeout=300, deadline=float("inf"),
                            say=lambda msg: None)
    return out, report


def test_layouts_follow_the_single_process_loss_curve(parity):
    _, report = parity
    rows = {r["layout"]: r for r in report["runs"]}
    assert set(rows) == {"1 rank", "TP 2", "PP 2", "TP 2 x DP 2 + SP", "PP 2 x DP 2"}
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row)
        assert row["steps"] == 20 and row["max_abs_diff"] <= TOLERANCE, (name, row)
    ref = rows["1 rank"]
    assert ref["last_loss"] < ref["first_loss"] - 1.0  # it learns


def _train(out: Path, name: str, nproc: int, overrides: list[str]) -> dict[int, float]:
    job = harness.train_job(harness.Layout(name, nproc, overrides), out, _corpus(out), [], timeout=300)
    harness.run_jobs([job], 0, concurrent=False, deadline=float("inf"), say=lambda msg: None)
    assert job.rc == 0, job.log.read_text()[-3000:]
    return harness.losses(out / "runs" / harness.slug(name))


def _corpus(out: Path) -> str:
    return str(out / "data" / "pydoc_text_document")


@pytest.mark.parametrize("name", ["TP 2", "PP 2"])
def test_resume_from_a_parallel_checkpoint_is_exact(parity, name):
    out, _ = parity
    ckpt = out / "ckpt" / harness.slug(name)
    step = ckpt / "global_step10"
    if name == "TP 2":  # each TP rank writes its shard; mp_rank_XX per rank (upstream names)
        assert (step / "layer_02-model_01-model_states.pt").is_file() and (step / "mp_rank_01_model_states.pt").is_file()
    else:  # tied head: no file at L+4; mp_rank_XX numbers the pipe x tensor ranks
        assert (step / "layer_05-model_00-model_states.pt").is_file() and (step / "mp_rank_01_model_states.pt").is_file()
        assert not (step / "layer_06-model_00-model_states.pt").exists()
    straight = harness.losses(out / "runs" / harness.slug(name))
    resumed = _train(out, f"{name} resumed", NPROC[name], [*LAYOUTS[name], f"load={ckpt}", "iteration=10"])
    assert sorted(resumed) == list(range(11, 21))
    assert [resumed[i] for i in range(11, 21)] == [straight[i] for i in range(11, 21)]


def _tp_logits(rank: int, world: int, store: str, ckpt: str, ids: torch.Tensor, out: str) -> None:
    """One TP rank: build the model in a TP group of two, load this rank's shard, forward."""
    from neox.checkpoint.model_config import config_for_checkpoint
    from neox.checkpoint.weights import read_module_state
    from neox.model import build
    from neox.parallel import set_tensor_parallel_group

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    set_tensor_parallel_group(dist.group.WORLD)
    try:
        cfg = config_for_checkpoint(Path(ckpt))
        assert cfg.model_parallel_size == 2
        model = build(cfg).eval()
        model.load_state_dict(read_module_state(Path(ckpt), tp_rank=rank, tp_size=2))
        with torch.no_grad():
            logits = model(ids)  # the head gathers the vocab shards
        if rank == 0:
            torch.save(logits, Path(out) / "tp2_logits.pt")
    finally:
        set_tensor_parallel_group(None)
        dist.destroy_process_group()


def test_tp2_checkpoint_resharded_to_tp1_gives_the_same_logits(parity, tmp_path):
    from neox.checkpoint import load_model

    out, _ = parity
    ckpt = out / "ckpt" / harness.slug("TP 2") / "global_step20"
    summary = subprocess.run(
        [sys.executable, str(REPO / "tools/ckpts/reshard.py"), "--input_dir", str(ckpt), "--output_dir",
         str(tmp_path / "tp1"), "--tp", "1", "--no-progress"], cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(summary.stdout.splitlines()[-1])
    assert (report["from"]["tp"], report["to"]["tp"]) == (2, 1)
    ids = torch.randint(0, 2048, (2, 64), generator=torch.Generator().manual_seed(0))
    mp.spawn(_tp_logits, args=(2, str(tmp_path / "store"), str(ckpt), ids, str(tmp_path)), nprocs=2, join=True)
    tp2 = torch.load(tmp_path / "tp2_logits.pt")
    with torch.no_grad():
        tp1 = load_model(tmp_path / "tp1")(ids)
    assert tp1.shape == tp2.shape == (2, 64, 2048)
    assert (tp1 - tp2).abs().max() <= 1e-5 * max(1.0, tp1.abs().max().item())


def test_hidden_dropout_is_the_same_at_tp1_and_tp2(parity):
    """Dropout outside the TP regions draws from the stream every rank shares, at any TP degree."""
    out, _ = parity
    dropout = ["hidden_dropout=0.1", "attention_dropout=0", "train_iters=6", "lr_decay_iters=6"]
    one = _train(out, "dropout 1 rank", 1, [*LAYOUTS["1 rank"], *dropout])
    two = _train(out, "dropout TP 2", 2, [*LAYOUTS["TP 2"], *dropout])
    assert sorted(one) == sorted(two) == list(range(1, 7))
    assert max(abs(one[i] - two[i]) for i in one) <= TOLERANCE
    no_dropout = harness.losses(out / "runs" / harness.slug("1 rank"))
    assert abs(one[1] - no_dropout[1]) > 1e-3  # dropout did act (step 1: the same weights)


def test_gpu_driver_runs_end_to_end_on_the_cpu(parity, tmp_path):
    """The driver the lead runs on H100s: its bench part (neox bench --nproc 2 on a pipeline) and report."""
    _, report = parity
    assert harness.main([str(tmp_path), "--cpu-smoke", "--skip-parity"]) == 0
    (run,) = json.loads((tmp_path / "bench.json").read_text())["runs"]
    assert run["status"] == "ok" and run["result"]["layout"]["pipe"] == 2 and run["result"]["tokens_per_s_per_gpu"] > 0
    assert "| tiny PP 2 | 1x2x1 | 2 |" in (tmp_path / "results.md").read_text()
    table = harness.markdown({"device": "cpu", "count": 0, "torch": torch.__version__}, report, None)
    assert "| TP 2 x DP 2 + SP | 4 |" in table and table.count("| ok |") == 5
