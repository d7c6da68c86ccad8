"""`neox config check/show`: exit codes, one-line errors for broken configs, YAML output, and the
DeepSpeed config accepted by DeepSpeed itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from neox.cli.main import main
from neox.config import ConfigError, from_dict, load

FIX = "tests/unit/configs"
BROKEN = [
    ("typo", "key 'hiden_size' is not a GPT-NeoX config key; did you mean 'hidden_size'?"),
    ("wrong_type", "key 'train_iters' is 'many' (str) but must be an integer"),
    ("bad_choice", "key 'lr_decay_style' is 'cosin' (str) but must be one of constant, linear, cosine, exponential"),
    ("batch_triad", "train_batch_size 1024 is not micro_batch 16 x grad_accum 1 x data-parallel 48 = 768; change one of them"),
    ("moe", "key 'moe_num_experts' = 8 is an upstream GPT-NeoX feature neox does not implement (mixture of experts; "
            "train a dense model); remove it or set it to its default 1"),
    ("alibi", "pos_emb 'alibi' is an upstream GPT-NeoX option neox does not implement; use rotary, learned or none"),
    ("optimizer", "optimizer.type 'Lion' is an upstream GPT-NeoX optimizer neox does not implement; use Adam, AdamW"),
    ("save", "save is set but neither checkpoint_factor nor extra_save_iters is; add checkpoint_factor"),
    ("min_lr", "min_lr 0.001 is larger than the peak lr 0.0001 (optimizer.params.lr); lower min_lr"),
    ("zero3_pipe", "zero_optimization.stage 3 needs pipe_parallel_size <= 1 and model_parallel_size 1 (got pipe 2, tensor 1)"),
    ("data_paths", "train/valid/test_data_paths must be given together; add valid_data_paths, test_data_paths"),
    ("precision", "fp16.enabled is true but precision is 'bfloat16'; set precision: fp16 or disable the fp16 block"),
    ("extra_args", "deepspeed_extra_args.gradient_clipping repeats the top-level key gradient_clipping set in"),
    ("attention", "attention_config gives 3 layer types but num_layers is 2; make the repeats add up to 2"),
    ("no_optimizer_params", "the optimizer block needs a 'params' key"),
    ("fp16_block", "fp16.loss_scaling is not a DeepSpeed fp16 setting; use enabled, auto_cast, loss_scale"),
    ("renamed", "key 'save_interval' is not a GPT-NeoX config key; upstream renamed it to checkpoint_factor"),
    ("heads", "hidden_size 100 is not divisible by num_attention_heads 12; use a multiple of 12 (e.g. 108)"),
    ("seq", "seq_length 64 is larger than max_position_embeddings 32; raise max_position_embeddings to at least 64"),
    ("kv_heads", "num_kv_heads 3 does not divide num_attention_heads 4; use a divisor of 4"),
    ("missing", "num_layers is required but not set; add num_layers: number of transformer blocks L"),
    ("mlp", "upstream's rule gives linear1 5462 outputs but linear2 2730 inputs (upstream fails at run time)"),
]


@pytest.fixture(autouse=True)
def _in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def run(capsys, *argv):
    rc = main(["config", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_broken_set_is_complete(repo):
    shipped = {p.stem for p in (repo / FIX / "broken").glob("*.yml")}
    assert shipped == {name for name, _ in BROKEN}


@pytest.mark.parametrize("name, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_check_rejects_broken_configs_with_one_line(capsys, name, message):
    path = f"{FIX}/broken/{name}.yml"
    rc, out, err = run(capsys, "check", path, "--world-size", "48")
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.startswith(f"neox: error: {path}")
    assert message in err


def test_check_accepts_the_shipped_config_set(capsys):
    for files in (["configs/neox-tiny.yml"], ["configs/llama-1b.yml", "configs/local-setup.yml", "configs/slurm.yml"]):
        rc, out, err = run(capsys, "check", *files)
        assert rc == 0 and err == ""
        assert out.startswith(f"ok: {' '.join(files)}\n")
    rc, out, _ = run(capsys, "check", "configs/neox-tiny.yml")
    assert "4L h256 4h, s128, vocab 2048, world 1 = dp 1 x pp 1 x tp 1, batch 8 = 8 x 1 x 1, fp32, zero 1" in out
    rc, out, _ = run(capsys, "check", "configs/pythia-160m.yml", "configs/local-setup.yml", "--world-size", "32")
    assert "batch 1024 = 32 x 1 x 32" in out
    assert "note: padded_vocab_size is unknown here (vocab_file data/tokenizers/20B_tokenizer.json does not exist" in out


def test_duplicate_across_files_and_overrides_on_the_command_line(capsys):
    rc, _, err = run(capsys, "check", f"{FIX}/good/flow.yml", f"{FIX}/other/dashes.yml")
    assert rc == 1 and f"{FIX}/other/dashes.yml:2: key 'train_iters' is already set in {FIX}/good/flow.yml:21" in err
    rc, out, _ = run(capsys, "check", "configs/neox-tiny.yml", "train_iters=7", "--world-size", "2", "seed=3")
    assert rc == 0 and "world 2 = dp 2" in out
    rc, _, err = run(capsys, "check")
    assert rc == 1 and "no config file given" in err


def test_show_prints_merged_and_derived_yaml_then_the_plan(capsys):
    rc, out, err = run(capsys, "show", "configs/neox-tiny.yml", "train_iters=10", "--world-size", "4")
    assert rc == 0 and err == ""
    merged, derived = yaml.safe_load_all(out)
    assert merged["train_iters"] == 10 and merged["hidden_size"] == 256 and "seed" not in merged
    assert merged["train_batch_size"] == 32 and merged["padded_vocab_size"] == 2048
    assert derived["data_parallel_size"] == 4 and derived["ffn_dim"] == 1024 and derived["rotary_ndims"] == 16
    assert derived["attention_types"] == ["global"] * 4
    assert "#   parameters      4,208,128 total" in out
    assert "#   layout          world 4 = data 4 x pipe 1 x tensor 1" in out
    # the merged config loads back to the same values
    again = from_dict(merged, world_size=4)
    assert again.to_dict(derived=False) | {"config_files": None} == load(
        ["configs/neox-tiny.yml"], ["train_iters=10"], world_size=4).to_dict(derived=False) | {"config_files": None}


def test_show_all_plan_only_and_doc(capsys):
    rc, out, _ = run(capsys, "show", "configs/neox-tiny.yml", "--all")
    assert rc == 0 and "seed: 1234" in out and "moe_num_experts: 1" in out
    rc, out, _ = run(capsys, "show", "configs/pythia-1.4b.yml", "padded_vocab_size=50304", "--world-size", "256", "--plan-only")
    assert rc == 0 and out.startswith("parameters      1,414,647,808 total")
    assert "causal 8.47 G" in out and "data-parallel 256" in out
    rc, out, _ = run(capsys, "show", "configs/pythia-1.4b.yml", "--plan-only")
    assert rc == 0 and out.startswith("dry run unavailable: padded_vocab_size is unknown")
    rc, out, _ = run(capsys, "show", "--doc", "rotary-pct")
    assert out.splitlines()[:4] == [
        "rotary_pct  [model]",
        "  fraction of each head's dims that rotary rotates (0 < pct <= 1)",
        "  type: a number",
        "  default: 1.0",
    ]
    rc, out, _ = run(capsys, "show", "--doc", "use_mup")
    assert "status: upstream feature neox does not implement (muP; use the standard parametrisation)" in out
    rc, out, _ = run(capsys, "show", "--doc")
    assert out.startswith("[model]\n  num_layers = None: number of transformer blocks L")
    rc, _, err = run(capsys, "show", "--doc", "hiden_size")
    assert rc == 1 and "did you mean 'hidden_size'?" in err


def test_config_help_and_entry_point_without_torch(repo):
    help_text = subprocess.run(
        [sys.executable, "-m", "neox.cli.main", "config", "--help"], capture_output=True, text=True, cwd=repo, check=True
    ).stdout
    assert "neox config check configs/pythia-160m.yml configs/local-setup.yml" in help_text
    code = (
        "import sys; from neox.cli.main import main; rc = main(['config', 'check', 'configs/neox-tiny.yml']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'config check imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, capture_output=True)


def test_deepspeed_config_is_accepted_by_deepspeed():
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = load(["configs/pythia-160m.yml"], ["padded_vocab_size=50304"], world_size=1)
    ds = cfg.deepspeed_config()
    assert ds["gradient_clipping"] == 1.0  # upstream drops 1.0 (issue #1432); we always pass it
    assert "optimizer" not in ds and "scheduler" not in ds
    assert ds["fp16"]["enabled"] is True and "fp16" not in ds["fp16"]  # Pythia's legacy key dropped
    parsed = DeepSpeedConfig(ds)
    assert parsed.gradient_clipping == 1.0
    assert parsed.float16_config.enabled and parsed.float16_config.initial_scale_power == 12
    assert parsed.zero_optimization_stage == 1 and parsed.train_batch_size == 32

    bf16 = load(["configs/llama-1b.yml"], ["padded_vocab_size=50304",
                                           "deepspeed_extra_args={zero_allow_untested_optimizer: true}"], world_size=1)
    ds = bf16.deepspeed_config()
    assert ds["bf16"] == {"enabled": True} and ds["data_types"] == {"grad_accum_dtype": "fp32"}
    assert ds["zero_allow_untested_optimizer"] is True and ds["fp32_allreduce"] is True
    parsed = DeepSpeedConfig(ds)
    assert parsed.bfloat16_config.enabled and parsed.gradient_accumulation_steps == 1


def test_deepspeed_extra_args_clash():
    values = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 32,
              "tokenizer_type": "CharLevelTokenizer", "train_micro_batch_size_per_gpu": 2}
    assert from_dict({**values, "deepspeed_extra_args": {"steps_per_print": 5}}).deepspeed_config()["steps_per_print"] == 5
    with pytest.raises(ConfigError, match=r"deepspeed_extra_args.train_batch_size repeats the top-level key "
                                          r"train_batch_size \(derived\); set it in one place"):
        from_dict({**values, "deepspeed_extra_args": {"train_batch_size": 4}})
