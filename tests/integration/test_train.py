"""The training loop in one process (real DeepSpeed on CPU over gloo): clipping, checkpoint layouts and
options, crash safety, loggers, and the CLI's error and dry-run paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neox.config
from neox.checkpoint import load_model, weights
from neox.errors import CheckpointError
from neox.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "neox-tiny.yml")
SMALL = [
    "num_layers=2", "hidden_size=64", "num_attention_heads=4", "seq_length=64", "max_position_embeddings=64",
    "train_micro_batch_size_per_gpu=4", "lr_decay_iters=10", "log_interval=1", "eval_interval=2", "eval_iters=1",
    "num_workers=0", "split=90,10,0",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    import pydoc_data.topics

    from neox.data import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs/tokenizers/neox-tiny.json"))
    prefix = tmp_path_factory.mktemp("data") / "pydoc_text_document"
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for text in list(pydoc_data.topics.topics.values())[:12]:
        builder.add_item(tok.encode(text) + [tok.eod])
        builder.end_document()
    builder.finalize()
    return str(prefix)


RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    # train() exports RANK/WORLD_SIZE/... for DeepSpeed; they must not leak into later tests'
    # subprocesses (a child would think it is already a rank).
    for var in RANK_VARS:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.chdir(REPO)


def config(tmp: Path, corpus: str, *overrides: str):
    return neox.config.load([TINY], [*SMALL, f"data_path={corpus}", f"log_dir={tmp / 'logs'}", *overrides], world_size=1)


def records(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_gradient_clipping_is_applied(tmp_path, corpus):
    """Upstream drops gradient_clipping 1.0 (issue #1432); here a tiny clip value visibly shrinks the update."""
    from neox.launch import dist as launch_dist
    from neox.launch.env import discover
    from neox.train.engine import build_engine
    from neox.train.objective import LanguageModeling
    from neox.train.step import train_step

    device = launch_dist.init(discover({}))
    batch = {"text": torch.randint(0, 2000, (4, 65), generator=torch.Generator().manual_seed(0))}

    def first_update(zero: int, clip: float) -> tuple[float, float]:
        cfg = config(tmp_path, corpus, f"zero_optimization.stage={zero}", f"gradient_clipping={clip}", "warmup=0")
        torch.manual_seed(0)
        engine = build_engine(cfg, device)
        before = torch.cat([p.detach().flatten().clone() for p in engine.module.parameters()])
        result = train_step(engine, iter([batch]), LanguageModeling(cfg, 0), 1)
        after = torch.cat([p.detach().flatten() for p in engine.module.parameters()])
        return float((after - before).norm()), result.grad_norm

    for zero in (0, 1):
        free, norm = first_update(zero, 0.0)
        clipped, norm_clipped = first_update(zero, 1e-7)
        assert norm == pytest.approx(norm_clipped, rel=1e-5) and norm > 0.1  # the logged norm is pre-clip
        # Adam normalises the step, so a clipped gradient only shows once it is below eps (1e-8)
        assert clipped < 0.5 * free, (zero, clipped, free)


def test_checkpoint_layouts_load_model_and_legacy_names(tmp_path, corpus):
    """pp=0 puts the weights in mp_rank_00 'module'; pp=1 writes layer files; both hold the same model."""
    models = {}
    for pp in (0, 1):
        out = tmp_path / f"pp{pp}"
        cfg = config(out, corpus, f"pipe_parallel_size={pp}", "train_iters=2", f"save={out / 'ckpt'}",
                     "checkpoint_factor=2")
        assert train(cfg) == 0
        step = out / "ckpt" / "global_step2"
        states = torch.load(step / "mp_rank_00_model_states.pt", weights_only=False)
        layer_files = sorted(p.name for p in step.glob("layer_*"))
        if pp == 0:
            assert set(states["module"]) == set(weights.read_module_state(step)) and not layer_files
        else:
            assert states["module"] is None
            # 2 layers: embedding 0, blocks 2-3, final norm 5, untied head 6
            assert layer_files == [f"layer_{i:02d}-model_00-model_states.pt" for i in (0, 2, 3, 5, 6)]
        assert states["iteration"] == 2 and states["args"]["num_layers"] == 2
        assert {"random_rng_state", "np_rng_state", "torch_rng_state", "lr_scheduler"} <= set(states)
        assert (step / "configs" / "neox-tiny.yml").read_text() == Path(TINY).read_text()
        assert (out / "ckpt" / "latest").read_text() == "global_step2"
        models[pp] = load_model(out / "ckpt")
    a, b = models[0].state_dict(), models[1].state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    # Pythia/20B-era names (mlp.dense_h_to_4h / dense_4h_to_h) load into the current model
    step = tmp_path / "pp1" / "ckpt" / "global_step2"
    f = step / "layer_02-model_00-model_states.pt"
    sd = torch.load(f)
    torch.save({k.replace("linear1", "dense_h_to_4h").replace("linear2", "dense_4h_to_h"): v for k, v in sd.items()}, f)
    assert any("dense_h_to_4h" in k for k in torch.load(f))
    legacy = load_model(step)
    ids = torch.tensor([[1, 5, 9, 200]])
    assert torch.equal(legacy(ids), models[1](ids))


def test_no_save_optim_no_load_optim_and_finetune(tmp_path, corpus):
    save = tmp_path / "ckpt"
    assert train(config(tmp_path, corpus, "train_iters=2", f"save={save}", "checkpoint_factor=2", "no_save_optim=true")) == 0
    assert not list((save / "global_step2").glob("*optim_states.pt"))
    with pytest.raises(CheckpointError, match="no ZeRO optimizer shards.*no_load_optim: true"):
        train(config(tmp_path, corpus, "train_iters=3", f"load={save}"))
    assert train(config(tmp_path, corpus, "train_iters=3", f"load={save}", "no_load_optim=true")) == 0
    steps = [r["iteration"] for r in records(tmp_path) if r["event"] == "train"]
    assert steps[-1:] == [3] and steps.count(3) == 1  # resumed at 2, ran one step
    lr_resumed = [r["train/lr"] for r in records(tmp_path) if r["event"] == "train"][-1]
    from neox.train.lr import annealing_lr

    cfg = config(tmp_path, corpus)
    assert lr_resumed == pytest.approx(annealing_lr(2, lr_max=cfg.lr, warmup=cfg.warmup_iters, total=10,
                                                    style=cfg.lr_decay_style, min_lr=cfg.min_lr))
    assert train(config(tmp_path, corpus, "train_iters=1", f"load={save}", "finetune=true")) == 0
    assert [r["iteration"] for r in records(tmp_path) if r["event"] == "train"][-1] == 1


def test_partial_checkpoints_are_never_loaded_and_old_ones_pruned(tmp_path, corpus):
    save = tmp_path / "ckpt"
    cfg = config(tmp_path, corpus, "train_iters=3", f"save={save}", "checkpoint_factor=1", "keep_last_n_checkpoints=2",
                 "extra_save_iters=[0]")
    assert train(cfg) == 0
    assert sorted(p.name for p in save.iterdir() if p.name.startswith("global_step")) == ["global_step2", "global_step3"]
    assert any(r["event"] == "checkpoint" and r["iteration"] == 0 for r in records(tmp_path))
    # a save that died half-way: a staging dir, latest still names step 3
    dead = save / "global_step4.tmp-deadbeef"
    dead.mkdir()
    (dead / "mp_rank_00_model_states.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="never completed"):
        train(config(tmp_path, corpus, "train_iters=4", f"load={dead}"))
    assert train(config(tmp_path, corpus, "train_iters=4", f"load={save}", f"save={save}", "checkpoint_factor=1")) == 0
    assert not dead.exists()
    assert (save / "latest").read_text() == "global_step4"
    assert [r["iteration"] for r in records(tmp_path) if r["event"] == "train"][-1:] == [4]


def test_failed_load_is_an_error_not_a_fresh_start(tmp_path, corpus):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(config(tmp_path, corpus, "train_iters=1", f"load={tmp_path / 'missing'}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no 'latest' file"):
        train(config(tmp_path, corpus, "train_iters=1", f"load={empty}"))
    # load = save with nothing saved yet is a first job of a chain: it starts at 0
    assert train(config(tmp_path, corpus, "train_iters=1", f"load={empty}", f"save={empty}", "checkpoint_factor=5")) == 0
    assert (empty / "latest").read_text() == "global_step1"


def test_metrics_jsonl_tensorboard_and_offline_wandb(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tb = tmp_path / "tb"
    cfg = config(tmp_path, corpus, "train_iters=2", f"tensorboard_dir={tb}", "use_wandb=true", "wandb_project=neox-test")
    assert train(cfg) == 0
    recs = records(tmp_path)
    assert [r["event"] for r in recs][:1] == ["start"] and recs[-1]["event"] == "end"
    step = next(r for r in recs if r["event"] == "train" and r["iteration"] == 2)
    for key in ("train/lm_loss", "train/lr", "train/grad_norm", "throughput/tokens_per_s",
                "throughput/tokens_per_s_per_gpu", "throughput/tflops_per_gpu", "time/elapsed_s", "time/eta_s"):
        assert isinstance(step[key], float), key
    assert "throughput/mfu_causal_pct" not in step  # no peak known for a CPU
    assert any(r["event"] == "eval" and "validation/lm_loss_ppl" in r for r in recs)
    assert json.loads((tmp_path / "logs" / "config.json").read_text())["hidden_size"] == 64
    assert list(tb.glob("events.out.tfevents.*"))
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def _neox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neox.cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_cli_errors_are_one_line_and_dry_run_prints_the_plan(tmp_path):
    bad = _neox("train", TINY, "data_path=nowhere", f"load={tmp_path / 'nope'}")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("neox: error: checkpoint path")
    assert "Traceback" not in bad.stderr
    dry = _neox("train", "--dry-run", TINY, "--world-size", "4", "train_micro_batch_size_per_gpu=2")
    assert dry.returncode == 0, dry.stderr
    assert "8 = micro 2 x grad_accum 1 x data-parallel 4" in dry.stdout
    assert "world 4 = data 4 x pipe 1 x tensor 1" in dry.stdout


def test_zero3_resumes_exactly_and_writes_neox_weights(tmp_path, corpus):
    save = tmp_path / "ckpt"
    common = ["zero_optimization.stage=3", "train_iters=4", "eval_interval=100"]
    assert train(config(tmp_path / "a", corpus, *common, f"save={save}", "checkpoint_factor=2")) == 0
    assert train(config(tmp_path / "b", corpus, *common, f"load={save}", "iteration=2")) == 0
    full = {r["iteration"]: r["train/lm_loss"] for r in records(tmp_path / "a") if r["event"] == "train"}
    resumed = {r["iteration"]: r["train/lm_loss"] for r in records(tmp_path / "b") if r["event"] == "train"}
    assert resumed == {3: full[3], 4: full[4]}
    step = save / "global_step4"
    assert list(step.glob("zero_pp_rank_0_mp_rank_00_*_states.pt"))
    model = load_model(step)  # the gathered weights, in NeoX layer files
    w = weights.read_module_state(step)["sequential.2.attention.query_key_value.weight"]
    assert w.shape == (3 * 64, 64) and torch.equal(model.state_dict()["sequential.2.attention.query_key_value.weight"], w)


def test_bench_on_cpu_writes_the_report(tmp_path):
    from neox.train.bench import bench

    out = tmp_path / "bench.json"
    report = bench(["neox-tiny"], seq=32, micro_batch=2, steps=2, warmup=1,
                   overrides=["num_layers=1", "hidden_size=64"], json_path=str(out))
    assert json.loads(out.read_text()) == report
    (r,) = report["results"]
    assert r["shape"] == "neox-tiny" and r["precision"] == "fp32" and r["seq_length"] == 32
    assert r["tokens_per_s"] == pytest.approx(2 * 32 / r["step_time_s"]["median"])
    assert r["tflops_per_gpu"] == pytest.approx(r["flops_per_token"]["causal"] * r["tokens_per_s"] / 1e12)
    assert r["mfu_causal_pct"] is None and r["peak_memory_gib"] is None  # a CPU has no peak table entry
    assert r["loss_first"] > 0 and "cpu" in report["environment"]["device"]


def test_gradient_accumulation_matches_the_larger_micro_batch(tmp_path, corpus):
    """micro 2 x GAS 2 and micro 4 x GAS 1 see the same samples per step and give the same curve."""
    curves = {}
    for micro, gas in ((4, 1), (2, 2)):
        out = tmp_path / f"m{micro}g{gas}"
        cfg = config(out, corpus, f"train_micro_batch_size_per_gpu={micro}", f"gradient_accumulation_steps={gas}",
                     "train_iters=4", "eval_interval=100")
        assert cfg.train_batch_size == 4 and train(cfg) == 0
        curves[gas] = [r["train/lm_loss"] for r in records(out) if r["event"] == "train"]
    np.testing.assert_allclose(curves[2], curves[1], rtol=1e-5)
    assert len(curves[1]) == 4
