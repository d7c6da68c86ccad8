"""Converted checkpoints train in the engine; trained checkpoints reshard and resume (real DeepSpeed, CPU).

1. An HF model is converted and trained from with the documented command shape (the generated
   config + a training YAML + ``load=<output> finetune=true``) at learning rate 0: the checkpoint
   the engine saves after two DeepSpeed steps holds exactly the converted weights, so the engine
   loaded them (and the run wrote real ZeRO optimizer shards, RNG and LR-scheduler state).
2. That trained checkpoint is resharded TP 1 (layer files) -> TP 2 (sequential) -> TP 1 (layer
   files): logits before and after are equal (``--verify``), tensors merge back bit for bit,
   the optimizer and RNG states are reported dropped, the schedule and iteration kept; training
   resumes from the resharded checkpoint with ``no_load_optim``/``no_load_rng`` and refuses to
   without them; the TP 2 checkpoint converts to HF with the original logits.
3. ``iteration=N`` conversions continue a schedule at N (``no_load_optim``, ``no_load_rng``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_convert_round_trip import assert_close, engine_logits, hf_logits, make_hf_dir  # noqa: E402

import neox.config  # noqa: E402
from neox.checkpoint import convert, inspect, reshard  # noqa: E402
from neox.errors import CheckpointError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "ckpts"

TRAIN_YAML = """\
# data, batch and optimizer: everything the converted architecture config does not set
train_micro_batch_size_per_gpu: 2
optimizer: {type: Adam, params: {lr: 0.0, betas: [0.9, 0.95], eps: 1.0e-8}}
min_lr: 0.0
weight_decay: 0.0
zero_optimization: {stage: 1}
lr_decay_iters: 10
warmup: 0.0
log_interval: 1
eval_interval: 1000
eval_iters: 0
split: "100,0,0"
num_workers: 0
checkpoint_factor: 2
"""


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    import pydoc_data.topics

    from neox.data import IndexedDatasetBuilder
    from neox.tokenizer import build_tokenizer

    tok = build_tokenizer("HFTokenizer", str(REPO / "configs/tokenizers/neox-tiny.json"))
    prefix = tmp_path_factory.mktemp("data") / "pydoc_text_document"
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for text in list(pydoc_data.topics.topics.values())[:8]:
        builder.add_item(tok.encode(text) + [tok.eod])
        builder.end_document()
    builder.finalize()
    return str(prefix)


def train(configs: list[Path], tmp: Path, corpus: str, *overrides: str) -> int:
    from neox.train import train as run

    cfg = neox.config.load([str(c) for c in configs], [f"data_path={corpus}", f"log_dir={tmp / 'logs'}", *overrides],
                           world_size=1)
    return run(cfg)


def train_steps(tmp: Path) -> list[int]:
    lines = (tmp / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r["iteration"] for r in map(json.loads, lines) if r["event"] == "train"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """(HF dir, converted save dir, trained save dir): 2 steps at lr 0 from the converted weights."""
    tmp = tmp_path_factory.mktemp("trained")
    src = make_hf_dir(tmp / "hf", "neox", rotary_pct=0.25, parallel=True)
    summary = convert.hf_to_neox(str(src), tmp / "converted", tp_size=1, pp=1, progress=False)
    (tmp / "train.yml").write_text(TRAIN_YAML)
    save = tmp / "save"
    code = train([Path(summary["config"]), tmp / "train.yml"], tmp, corpus,
                 "train_iters=2", f"load={tmp / 'converted'}", "finetune=true", f"save={save}")
    assert code == 0 and train_steps(tmp) == [1, 2]
    return src, tmp / "converted", save


def test_engine_trains_from_the_converted_checkpoint(trained):
    src, converted, save = trained
    step = save / "global_step2"
    assert list(step.glob("zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    result = inspect.compare(converted, save)
    assert result["equal"], result  # lr 0: the saved weights are the loaded (converted) ones
    assert_close(engine_logits(save), hf_logits(src))


def test_reshard_tp1_to_tp2_and_back_keeps_logits_and_reports_dropped_state(trained, tmp_path, corpus):
    src, _, save = trained
    lines = []
    tp2 = reshard.reshard(save, tmp_path / "tp2", tp_size=2, pp=0, verify_logits=True, progress=False, log=lines.append)
    assert tp2["from"] == {"tp": 1, "pp": 1, "layout": "pipeline", "padded_vocab_size": 2048}
    assert tp2["to"] == {"tp": 2, "pp": 0, "layout": "sequential", "padded_vocab_size": 2048}
    assert tp2["optimizer_state"] == "dropped" and tp2["optimizer_files_dropped"] == 1 and tp2["rng_state"] == "dropped"
    assert tp2["verify"]["ok"] and tp2["verify"]["max_abs_diff"] <= 1e-5
    assert any("no_load_optim: true and no_load_rng: true" in line for line in lines)
    step = tmp_path / "tp2" / "global_step2"
    assert sorted(p.name for p in step.glob("mp_rank_*")) == ["mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]
    assert not list(step.glob("*optim_states.pt")) and not list(step.glob("layer_*"))
    states = torch.load(step / "mp_rank_01_model_states.pt", weights_only=False)
    assert states["iteration"] == 2 and states["args"]["model_parallel_size"] == 2
    assert states["lr_scheduler"] is not None and "torch_rng_state" not in states
    overrides = json.loads((step / "configs" / "overrides.txt").read_text())  # the run's, plus the new layout
    assert overrides["model_parallel_size"] == 2 and overrides["pipe_parallel_size"] == 0 and overrides["finetune"]

    back = reshard.reshard(tmp_path / "tp2", tmp_path / "tp1", tp_size=1, pp=1, progress=False, log=lines.append)
    assert back["to"]["layout"] == "pipeline" and back["optimizer_state"] == "none in source"
    assert inspect.compare(save, tmp_path / "tp1")["equal"]

    hf = convert.neox_to_hf(tmp_path / "tp2", tmp_path / "hf-from-tp2", progress=False)
    assert hf["tp"] == 2
    assert_close(hf_logits(tmp_path / "hf-from-tp2"), hf_logits(src))

    # Resuming a resharded checkpoint: refused with the fix, then continues the run at iteration 2.
    configs = sorted((tmp_path / "tp1" / "global_step2" / "configs").glob("*.yml"))
    with pytest.raises(CheckpointError, match="no_load_optim: true"):
        train(configs, tmp_path, corpus, "train_iters=3", f"load={tmp_path / 'tp1'}", "model_parallel_size=1")
    code = train(configs, tmp_path, corpus, "train_iters=3", f"load={tmp_path / 'tp1'}", "no_load_optim=true",
                 "no_load_rng=true")
    assert code == 0 and train_steps(tmp_path)[-1:] == [3] and train_steps(tmp_path).count(3) == 1


def test_converted_iteration_continues_the_schedule(tmp_path, corpus):
    src = make_hf_dir(tmp_path / "hf", "llama", kv_heads=2)
    summary = convert.hf_to_neox(str(src), tmp_path / "converted", iteration=5, progress=False)
    (tmp_path / "train.yml").write_text(TRAIN_YAML)
    assert "no_load_optim=true no_load_rng=true" in Path(summary["config"]).read_text()
    code = train([Path(summary["config"]), tmp_path / "train.yml"], tmp_path, corpus, "train_iters=6",
                 f"load={tmp_path / 'converted'}", "no_load_optim=true", "no_load_rng=true")
    assert code == 0 and train_steps(tmp_path) == [6]


def test_reshard_cli_refuses_bad_input_in_one_line(trained, tmp_path, capsys):
    sys.path.insert(0, str(TOOLS))
    import reshard as tool

    _, _, save = trained
    assert tool.main([f"ckpt={save}", f"output={tmp_path / 'x'}", "tp=3", "no_progress=true"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["reshard: error: the model at TP 3, PP 1: model_parallel_size 3 must divide num_attention_heads 4 "
                   "and hidden_size 64"], err
    assert not (tmp_path / "x").exists()
    assert tool.main([f"ckpt={save}", f"output={save}", "tp=2"]) == 1
    assert "is the checkpoint's own save directory" in capsys.readouterr().err
