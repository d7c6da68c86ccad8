"""neox.config: loading and merging upstream YAML, overrides, schema and derived values."""

from __future__ import annotations

import shutil

import pytest

import neox.config
from neox.config import ConfigError, from_dict, load
from neox.config.derived import expand_attention, mlp_widths, pad_vocab
from neox.config.schema import KEYS, SECTIONS
from neox.errors import ConfigError as BaseConfigError

FIX = "tests/unit/configs"
SMALL = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "seq_length": 32,
    "max_position_embeddings": 32,
    "train_micro_batch_size_per_gpu": 2,
    "tokenizer_type": "CharLevelTokenizer",
}


@pytest.fixture(autouse=True)
def _in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def small(world_size=None, **overrides):
    return from_dict({**SMALL, **overrides}, world_size=world_size)


# -- loading -------------------------------------------------------------------------------------


def test_config_error_is_the_shared_type():
    assert neox.config.ConfigError is BaseConfigError


def test_flow_mapping_with_comments_true_trailing_commas_and_dashes():
    cfg = load([f"{FIX}/good/flow.yml", f"{FIX}/good/tokenizer.yml"])
    assert (cfg.num_layers, cfg.hidden_size, cfg.seq_length) == (2, 64, 32)
    assert cfg.no_weight_tying is True and cfg.gpt_j_residual is True
    assert cfg.train_iters == 100  # written train-iters
    assert cfg.lr == 6e-4 and isinstance(cfg.lr, float)  # "6e-4" is a float, not YAML 1.1's string
    assert cfg.optimizer["params"]["eps"] == 1.0e-8
    assert cfg.lr_decay_style == "cosine" and cfg.warmup == 0.1  # from the second file, block YAML
    assert cfg.files == [f"{FIX}/good/flow.yml", f"{FIX}/good/tokenizer.yml"]
    assert cfg.source("train_iters") == f"{FIX}/good/flow.yml:21"
    assert cfg.source("warmup") == f"{FIX}/good/tokenizer.yml:4"
    assert cfg.source("seed") is None
    assert set(cfg.config_files) == {"flow.yml", "tokenizer.yml"}
    assert cfg.config_files["tokenizer.yml"].startswith("# The second file")


def test_name_without_suffix_gets_yml_and_json_loads():
    cfg = load([f"{FIX}/good/flow", f"{FIX}/good/tokenizer"])
    assert cfg.files[0].endswith("flow.yml")
    assert load(f"{FIX}/good/model.json").hidden_size == 64


def test_missing_file():
    with pytest.raises(ConfigError, match=r"configs/nope\.yml: config file does not exist"):
        load(["configs/nope"])


@pytest.mark.parametrize("order", [("flow", "dashes"), ("dashes", "flow")])
def test_key_repeated_across_files_is_an_error_in_both_orders(order):
    paths = {"flow": f"{FIX}/good/flow.yml", "dashes": f"{FIX}/other/dashes.yml"}
    first, second = (paths[o] for o in order)
    with pytest.raises(ConfigError) as err:
        load([first, second, f"{FIX}/good/tokenizer.yml"])
    msg = str(err.value)
    assert msg.startswith(f"{second}:")
    assert f"is already set in {first}:" in msg and "a key may appear in only one config file" in msg
    assert "\n" not in msg


def test_key_repeated_in_one_file():
    with pytest.raises(ConfigError, match=r"dup_in_file\.yml:4: key 'train-iters' is the same key as 'train_iters' "
                                          r"\(dashes and underscores are equal\), also on line 3; keep one"):
        load([f"{FIX}/other/dup_in_file.yml"])
    with pytest.raises(ConfigError, match=r"dup_nested\.yml:2: key 'lr' is written twice in one mapping"):
        load([f"{FIX}/other/dup_nested.yml"])


def test_same_basename_twice():
    with pytest.raises(ConfigError, match=r"another config file has the same name .*rename one"):
        load([f"{FIX}/good/flow.yml", f"{FIX}/other/flow.yml"])


def test_yaml_syntax_error_is_one_line_with_position():
    with pytest.raises(ConfigError) as err:
        load([f"{FIX}/other/not_yaml.yml"])
    assert str(err.value).startswith(f"{FIX}/other/not_yaml.yml:4:1: not valid YAML (")
    assert "\n" not in str(err.value)


def test_plain_yaml_mapping_required(tmp_path):
    path = tmp_path / "list.yml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load([path])


# -- overrides -----------------------------------------------------------------------------------


def test_overrides_are_yaml_typed_and_dotted():
    cfg = load(
        [f"{FIX}/good/flow.yml", f"{FIX}/good/tokenizer.yml"],
        [
            "train-iters=10",
            "use_wandb=true",
            "optimizer.params.lr=3e-4",
            "min_lr=1e-5",
            "zero_optimization.stage=2",
            "wandb_group=run 1",
            "attention_config=[[[flash], 2]]",
        ],
    )
    assert cfg.train_iters == 10 and type(cfg.train_iters) is int
    assert cfg.use_wandb is True
    assert cfg.lr == 3e-4 and cfg.optimizer["params"]["betas"] == [0.9, 0.95]  # the rest of the block stays
    assert cfg.min_lr == 1e-5
    assert cfg.zero_stage == 2 and cfg.zero_optimization == {"stage": 2}
    assert cfg.wandb_group == "run 1"
    assert cfg.attention_types == ["flash", "flash"]
    assert cfg.source("train_iters").startswith("command line")
    assert load([f"{FIX}/good/model.json"], {"optimizer.type": "Adam", "optimizer.params.lr": 0.01}).lr == 0.01


def test_override_errors():
    files = [f"{FIX}/good/flow.yml", f"{FIX}/good/tokenizer.yml"]
    with pytest.raises(ConfigError, match=r"override 'train_iters' is not key=value"):
        load(files, ["train_iters"])
    with pytest.raises(ConfigError, match=r"override 'seed.x' reaches into 'seed', but seed is 1234, not a mapping"):
        load(files, ["seed=1234", "seed.x=1"])
    with pytest.raises(ConfigError, match=r"key 'global_batch_size' is not a GPT-NeoX config key; the GPT-NeoX key is train_batch_size"):
        load(files, ["global_batch_size=8"])
    with pytest.raises(ConfigError, match=r"command line \(hiden_size=\.\.\.\): key 'hiden_size' is not a GPT-NeoX "
                                          r"config key; did you mean 'hidden_size'\?"):
        load(files, ["hiden_size=3"])


# -- schema and types ----------------------------------------------------------------------------

UPSTREAM_SAMPLE = """num_layers hidden_size num_attention_heads num_kv_heads seq_length max_position_embeddings
intermediate_size expansion_factor mlp_multiple_of norm layernorm_epsilon rms_norm_epsilon pos_emb rotary_pct
rotary_emb_base rotary_save_freqs_buffer no_weight_tying gpt_j_residual gpt_j_tied use_bias_in_norms
use_bias_in_attn_linear use_bias_in_mlp use_qk_layernorm make_vocab_size_divisible_by activation init_method
output_layer_init_method attention_config sparsity_config sliding_window_width scaled_upper_triang_masked_softmax_fusion
bias_gelu_fusion rope_fusion layernorm_fusion rmsnorm_fusion use_flashattn_swiglu te_columnparallel te_rowparallel
te_layernorm_mlp te_mha te_fp8_format te_fp8_wgrad te_fp8_amax_history_len te_fp8_amax_compute_algo te_fp8_margin
te_fp8_mha pipe_parallel_size model_parallel_size sequence_parallel pipe_partition_method train_batch_size
train_micro_batch_size_per_gpu gradient_accumulation_steps optimizer use_bnb_optimizer lr_decay_style lr_decay_iters
lr_decay_fraction min_lr warmup override_lr_scheduler use_checkpoint_lr_scheduler zero_optimization precision fp16
bf16 data_types fp32_allreduce gradient_clipping checkpoint_activations checkpoint_num_layers partition_activations
contiguous_checkpointing checkpoint_in_cpu synchronize_each_layer train_iters train_epochs eval_interval eval_iters
log_interval steps_per_print wall_clock_breakdown seed exit_interval clip_grad weight_decay eod_mask_loss
peak_theoretical_tflops log_grad_norm use_wandb wandb_project wandb_group wandb_run_name wandb_team wandb_host
tensorboard_dir log_dir use_comet save load checkpoint_factor checkpoint_scale extra_save_iters keep_last_n_checkpoints
no_save_optim no_load_optim finetune iteration s3_path data_path split train_data_paths valid_data_paths
test_data_paths train_data_weights weight_by_num_documents train_label_data_paths pos_train_data_paths
neg_train_label_data_paths data_impl dataset_impl pack_impl allow_chopped mmap_warmup use_shared_fs num_workers
tokenizer_type vocab_file merge_file padded_vocab_size train_impl dpo_beta dpo_fp32 dpo_reference_free kto_beta
z_loss kl_impl kl_div_beta precompute_model_name text_gen_type hostfile include exclude num_nodes num_gpus master_port
master_addr launcher force_multi no_ssh_check comment account deepspeed_slurm deepspeed_mpi distributed_backend
deepspeed_extra_args scheduler amp flops_profiler autotuning activation_checkpointing sparse_attention
data_efficiency tensorboard wandb csv_monitor elasticity comms_logger compression_training checkpoint
curriculum_learning moe_num_experts use_mup world_size is_pipe_parallel dynamic_loss_scale lr optimizer_type zero_stage
loss_scale hysteresis min_scale fp16_lm_cross_entropy opt_pos_emb_offset""".split()


def test_schema_covers_upstream_keys_and_documents_every_key():
    missing = [k for k in UPSTREAM_SAMPLE if k not in KEYS]
    assert not missing
    assert len(KEYS) > 330
    for info in KEYS.values():
        assert info.doc and "\n" not in info.doc, info.name
        assert info.implemented or info.hint, info.name
    assert [s for s, _ in SECTIONS][0] == "model" and len(SECTIONS) == 23
    assert KEYS["pos_emb"].choices == ("learned", "rotary", "sinusoidal", "rpe", "alibi", "none")
    assert KEYS["pos_emb"].unimplemented_values == ("sinusoidal", "rpe", "alibi")
    assert KEYS["gradient_accumulation_steps"].default == 1
    assert not KEYS["use_mup"].implemented and KEYS["te_mha"].implemented


def test_upstream_defaults_when_unset():
    cfg = small()
    assert (cfg.pos_emb, cfg.norm, cfg.activation, cfg.init_method) == ("learned", "layernorm", "gelu", "normal")
    assert (cfg.layernorm_epsilon, cfg.rms_norm_epsilon, cfg.make_vocab_size_divisible_by) == (1e-5, 1e-8, 128)
    assert (cfg.lr_decay_style, cfg.warmup, cfg.min_lr, cfg.weight_decay, cfg.seed) == ("linear", 0.01, 0.0, 0.1, 1234)
    assert (cfg.split, cfg.data_impl, cfg.pack_impl, cfg.tokenizer_type) == ("969, 30, 1", "infer", "packed", "CharLevelTokenizer")
    assert cfg.output_layer_parallelism == "column" and cfg.launcher == "pdsh" and cfg.master_port == 29500


def test_literal_choices_are_case_insensitive_and_canonical():
    cfg = small(lr_decay_style="Cosine", precision="BFLOAT16", tokenizer_type="charleveltokenizer")
    assert (cfg.lr_decay_style, cfg.precision, cfg.tokenizer_type) == ("cosine", "bfloat16", "CharLevelTokenizer")


def test_int_accepted_for_float_but_bool_not_for_int():
    assert small(rotary_pct=1, warmup=0).warmup == 0
    with pytest.raises(ConfigError, match=r"key 'train_iters' is True \(bool\) but must be an integer"):
        small(train_iters=True)
    with pytest.raises(ConfigError, match=r"key 'train_iters' is 100000\.0 \(float\) but must be an integer; write 100000"):
        small(train_iters=1e5)
    with pytest.raises(ConfigError, match=r"key 'no_weight_tying' is 'true' \(str\) but must be true/false; write it without quotes"):
        small(no_weight_tying="true")


def test_unimplemented_features_fail_only_when_not_default():
    cfg = small(moe_num_experts=1, use_mup=False, sparsity_config={}, amp={"enabled": False}, use_comet=None)
    assert cfg.moe_num_experts == 1
    with pytest.raises(ConfigError, match=r"key 'use_mup' = True is an upstream GPT-NeoX feature neox does not implement "
                                          r"\(muP; use the standard parametrisation\); remove it or set it to its default False"):
        small(use_mup=True)
    with pytest.raises(ConfigError, match=r"key 's3_path' = 's3://b' .*\(S3 upload\)|upload checkpoints"):
        small(s3_path="s3://b")
    with pytest.raises(ConfigError, match=r"train_impl 'reinforce' is an upstream GPT-NeoX option neox does not implement"):
        small(train_impl="reinforce")
    with pytest.raises(ConfigError, match=r"attention type 'sparse_fixed' is an upstream GPT-NeoX feature neox does not"):
        small(attention_config=[[["sparse_fixed"], 2]])
    assert small(gas=1).gradient_accumulation_steps == 1  # Pythia's configs carry "gas": 1
    with pytest.raises(ConfigError, match=r"key 'gas' = 2 is an upstream GPT-NeoX feature .*set gradient_accumulation_steps"):
        small(gas=2)
    with pytest.raises(ConfigError, match=r"mlp_type 'llama' is an upstream GPT-NeoX option neox does not implement; use activation: swiglu"):
        small(mlp_type="llama")


def test_derived_keys_written_in_a_file_must_agree():
    cfg = small(world_size=4, lr=0.001, zero_stage=0, head_dim=16, batch_size=2)
    assert cfg.head_dim == 16
    with pytest.raises(ConfigError, match=r"lr 0\.1 disagrees with the derived value 0\.001 \(it comes from optimizer\.params\.lr\); remove lr"):
        small(lr=0.1)
    with pytest.raises(ConfigError, match=r"head_dim 8 disagrees with the derived value 16"):
        small(head_dim=8)


# -- derived values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, world, expected",
    [
        ({"train_micro_batch_size_per_gpu": 4}, 8, (32, 4, 1)),
        ({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}, 8, (64, 4, 2)),
        ({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4}, 8, (64, 4, 2)),  # GAS derived (upstream: error)
        ({"train_batch_size": 64, "gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": None}, 8, (64, 2, 4)),
        ({"train_batch_size": 64, "train_micro_batch_size_per_gpu": None}, 8, (64, 8, 1)),
        ({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}, 8, (64, 4, 2)),
    ],
)
def test_batch_triad(given, world, expected):
    values = {**SMALL, **given}
    values = {k: v for k, v in values.items() if v is not None}
    cfg = from_dict(values, world_size=world)
    assert (cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu, cfg.gradient_accumulation_steps) == expected
    assert cfg.batch_size == expected[1] and cfg.data_parallel_size == world


def test_batch_triad_errors():
    with pytest.raises(ConfigError, match=r"train_batch_size 1024 is not micro_batch 16 x grad_accum 1 x data-parallel 24 "
                                          r"= 384; change one of them \(data-parallel = world size 48 / \(pipe 2 x tensor 1\)\)"):
        small(world_size=48, train_batch_size=1024, train_micro_batch_size_per_gpu=16, gradient_accumulation_steps=1,
              pipe_parallel_size=2)
    with pytest.raises(ConfigError, match=r"train_batch_size 100 is not divisible by micro_batch 4 x data-parallel 8 = 32"):
        small(world_size=8, train_batch_size=100, train_micro_batch_size_per_gpu=4)
    values = {k: v for k, v in SMALL.items() if k != "train_micro_batch_size_per_gpu"}
    with pytest.raises(ConfigError, match="no batch size is set; set train_micro_batch_size_per_gpu"):
        from_dict(values)


def test_world_size_sources(monkeypatch):
    assert small().world_size == 1 and small().note("world_size").startswith("default: one data-parallel replica")
    assert small(pipe_parallel_size=2, model_parallel_size=2).world_size == 4
    full = {"train_batch_size": 96, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}
    inferred = small(model_parallel_size=2, **full)
    assert (inferred.world_size, inferred.data_parallel_size) == (24, 12)
    assert inferred.note("world_size") == "inferred from the batch sizes"
    assert small(global_num_gpus=16).world_size == 16
    monkeypatch.setenv("WORLD_SIZE", "6")
    assert small().world_size == 6 and small(world_size=3).world_size == 3
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by pipe 4 x tensor 1 = 4; use a multiple of 4 GPUs"):
        small(pipe_parallel_size=4)


def test_padded_vocab_from_tokenizer_with_tensor_parallelism():
    assert small().padded_vocab_size == 512  # CharLevelTokenizer: 512
    tiny = small(tokenizer_type="HFTokenizer", vocab_file="configs/tokenizers/neox-tiny.json")
    assert tiny.padded_vocab_size == 2048
    tp = small(world_size=2, tokenizer_type="HFTokenizer", vocab_file="configs/tokenizers/neox-tiny.json",
               model_parallel_size=2, make_vocab_size_divisible_by=1000)
    assert tp.padded_vocab_size == 4000 == pad_vocab(2048, 1000, 2)
    assert pad_vocab(50277, 128, 1) == 50304 and pad_vocab(50277, 128, 2) == 50432


def test_padded_vocab_never_downloads():
    assert small(tokenizer_type="TiktokenTokenizer").padded_vocab_size == 100352  # cl100k_base: 100277
    hub = small(tokenizer_type="HFGPT2Tokenizer", vocab_file="gpt2")
    assert hub.padded_vocab_size is None and "not loaded at config time" in hub.note("padded_vocab_size")


def test_config_pickles_and_has_a_short_repr():
    import pickle

    cfg = load(["configs/neox-tiny.yml"])
    again = pickle.loads(pickle.dumps(cfg))
    assert again.to_dict() == cfg.to_dict() and again.source("hidden_size") == "configs/neox-tiny.yml:6"
    assert repr(cfg) == f"Config(configs/neox-tiny.yml: {cfg.summary()})"


def test_padded_vocab_without_the_tokenizer_file():
    cfg = small(tokenizer_type="HFTokenizer", vocab_file="data/missing.json")
    assert cfg.padded_vocab_size is None
    assert "vocab_file data/missing.json does not exist" in cfg.note("padded_vocab_size")
    with pytest.raises(ConfigError, match=r"padded_vocab_size is unknown: vocab_file data/missing\.json does not exist"):
        cfg.require_padded_vocab_size()
    assert small(tokenizer_type="HFTokenizer", vocab_file="data/missing.json", padded_vocab_size=50304).padded_vocab_size == 50304
    with pytest.raises(ConfigError, match=r"padded_vocab_size 1024 disagrees with the tokenizer .* which pads to 512"):
        small(padded_vocab_size=1024)
    with pytest.raises(ConfigError, match=r"padded_vocab_size 50300 is not a multiple of .* = 128; use 50304"):
        small(tokenizer_type="HFTokenizer", padded_vocab_size=50300)


def test_decay_iters_and_warmup():
    cfg = small(train_iters=1000, warmup=0.01)
    assert (cfg.lr_decay_iters, cfg.warmup_iters) == (1000, 10.0)
    cfg = small(train_iters=1000, lr_decay_fraction=0.75, warmup=0.1)
    assert (cfg.lr_decay_iters, cfg.warmup_iters) == (750, 75.0)
    assert small(train_iters=1000, lr_decay_iters=400, lr_decay_fraction=0.75).lr_decay_iters == 400
    assert small(train_iters=10, lr_decay_fraction=0.01).lr_decay_iters == 1
    assert small().lr_decay_iters is None and small().warmup_iters is None


def test_precision_rules():
    cfg = small(fp16={"enabled": True, "loss_scale": 0})
    assert (cfg.precision, cfg.params_dtype, cfg.dynamic_loss_scale) == ("fp16", "float16", True)
    assert small(bf16={"enabled": True}).precision == "bfloat16"
    assert (small().precision, small().params_dtype) == ("fp32", "float32")
    assert small(fp16={"enabled": False}).precision == "fp32"
    assert small(precision="bfloat16").deepspeed_config()["bf16"] == {"enabled": True}
    assert small(loss_scale=1024.0).dynamic_loss_scale is False
    with pytest.raises(ConfigError, match=r"bf16\.enabled is true but precision is 'fp16'"):
        small(precision="fp16", bf16={"enabled": True})


def test_mlp_widths_follow_upstream_rule():
    assert mlp_widths(4096, "swiglu", 14336, None, 14336) == (28672, 14336)  # Llama-3-8B example
    assert small().ffn_dim == 256 and small().is_gated_mlp is False
    llama3 = small(hidden_size=4096, num_attention_heads=32, activation="swiglu", intermediate_size=14336,
                   mlp_multiple_of=14336)
    assert (llama3.ffn_dim, llama3.is_gated_mlp) == (14336, True)
    assert small(activation="swiglu", intermediate_size=19584, mlp_multiple_of=128).ffn_dim == 6528
    assert small(activation="geglu").ffn_dim == 85  # 4h = 256 -> int(256·2/3) = 170 = linear1 -> 85 = linear2
    assert small(expansion_factor=3.0).ffn_dim == 192
    with pytest.raises(ConfigError, match="set intermediate_size 100 or expansion_factor 2.0, not both"):
        small(intermediate_size=100, expansion_factor=2.0)


def test_attention_types_and_heads():
    assert expand_attention([[["global", "flash"], 2]], 4) == ["global", "flash", "global", "flash"]
    assert expand_attention([[["flash"], "all"]], 3) == ["flash"] * 3
    assert expand_attention(["global", "flash"], 2) == ["global", "flash"]
    cfg = small(attention_config=[[["flash"], 1], [["global"], 1]], num_kv_heads=2, pos_emb="rotary", rotary_pct=0.25)
    assert cfg.attention_types == ["flash", "global"]
    assert (cfg.kv_heads, cfg.head_dim, cfg.rotary_ndims) == (2, 16, 4)
    assert small().attention_types == ["global", "global"] and small().rotary_ndims == 0
    assert small(pos_emb="rotary").rotary_ndims == 16 and small().kv_heads == 4


def test_zero_optimizer_and_flags():
    cfg = small()
    assert cfg.zero_stage == 0 and cfg.zero_optimization["reduce_bucket_size"] == 500_000_000
    assert (cfg.optimizer_type, cfg.lr) == ("adam", 0.001)  # upstream's default optimizer
    cfg = small(zero_optimization={"stage": 2, "reduce_bucket_size": 5e8}, optimizer={"type": "AdamW", "params": {"lr": 0.01}},
                pipe_parallel_size=1)
    assert (cfg.zero_stage, cfg.zero_reduce_bucket_size, cfg.optimizer_type, cfg.lr) == (2, 500_000_000, "adamw", 0.01)
    assert cfg.is_pipe_parallel and not small().is_pipe_parallel and cfg.clip_grad == 1.0
    assert small(train_data_paths=["a"], valid_data_paths=["b"], test_data_paths=["c"]).train_data_weights == [1.0]


def test_cross_key_rules():
    with pytest.raises(ConfigError, match=r"num_kv_heads 2 is not divisible by model_parallel_size 4"):
        small(world_size=4, num_attention_heads=8, num_kv_heads=2, model_parallel_size=4)
    with pytest.raises(ConfigError, match=r"train_impl dpo does not support pipeline parallelism \(pipe_parallel_size 2\)"):
        small(world_size=2, train_impl="dpo", pipe_parallel_size=2, pos_train_data_paths=["p"], neg_train_data_paths=["n"])
    with pytest.raises(ConfigError, match=r"neg_train_data_paths: .*|pairwise data needs both pos_train_data_paths and neg"):
        small(pos_train_data_paths=["p"])
    with pytest.raises(ConfigError, match=r"train_label_data_paths has 2 entries but train_data_paths has 1"):
        small(train_data_paths=["a"], valid_data_paths=["b"], test_data_paths=["c"], train_label_data_paths=["x", "y"])
    with pytest.raises(ConfigError, match=r"set data_path or train/valid/test_data_paths, not both"):
        small(data_path="d", train_data_paths=["a"], valid_data_paths=["b"], test_data_paths=["c"])
    with pytest.raises(ConfigError, match=r"rotary_pct 0.1 gives 1 rotary dims per head"):
        small(pos_emb="rotary", rotary_pct=0.1)
    with pytest.raises(ConfigError, match=r"fp16_lm_cross_entropy needs precision fp16"):
        small(fp16_lm_cross_entropy=True)
    with pytest.raises(ConfigError, match=r"set train_iters 10 or train_epochs 1, not both"):
        small(train_iters=10, train_epochs=1)


def test_every_shipped_config_loads(repo):
    sets = [
        ["configs/neox-tiny.yml"],
        ["configs/pythia-160m.yml", "configs/local-setup.yml", "configs/slurm.yml"],
        ["configs/pythia-410m.yml", "configs/local-setup.yml"],
        ["configs/pythia-1.4b.yml", "configs/local-setup.yml", "configs/slurm.yml"],
        ["configs/pythia-6.9b.yml", "configs/local-setup.yml"],
        ["configs/llama-1b.yml", "configs/local-setup.yml"],
        ["configs/te-1.3b.yml", "configs/local-setup.yml"],
        ["configs/llama-1b-sft.yml"],
        ["configs/llama-1b-dpo.yml"],
    ]
    covered = {p for s in sets for p in s}
    assert covered >= {str(p.relative_to(repo)) for p in (repo / "configs").glob("*.yml")}
    for paths in sets:
        cfg = load(paths, world_size=64)
        assert cfg.world_size == 64 and cfg.train_batch_size >= 64
    pythia = load(["configs/pythia-160m.yml", "configs/local-setup.yml"], world_size=32)
    assert (pythia.train_batch_size, pythia.rotary_ndims, pythia.ffn_dim, pythia.precision) == (1024, 16, 3072, "fp16")
    dpo = load(["configs/llama-1b-dpo.yml"], world_size=16)
    assert (dpo.train_impl, dpo.dataset_impl, dpo.kv_heads, dpo.ffn_dim) == ("dpo", "pairwise", 4, 6528)


def test_tokenizer_vocab_lookup_is_cached(tmp_path, repo):
    from neox.config import derived

    vocab = tmp_path / "tok.json"
    shutil.copy(repo / "configs/tokenizers/neox-tiny.json", vocab)
    derived._tokenizer_vocab.cache_clear()
    for _ in range(3):
        small(tokenizer_type="HFTokenizer", vocab_file=str(vocab))
    info = derived._tokenizer_vocab.cache_info()
    assert (info.misses, info.hits) == (1, 2)
