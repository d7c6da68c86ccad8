"""HF -> NeoX -> HF round trips through the converters, checked by logits (CPU, fp32).

Tiny random HF models are built locally (``GPTNeoXConfig``/``LlamaConfig`` + ``save_pretrained``,
the tiny preset's tokenizer beside them; nothing is downloaded). Every parameter, biases and norm
weights included, is randomised, so a mapping or TP rule that drops, swaps or rescales a tensor
cannot hide behind HF's zero/one initialisation. For each variant:

1. ``hf_to_neox`` writes a NeoX save directory at the variant's TP, layout and names;
2. the engine (``neox.checkpoint.load_model``: shards merged, ``neox.model`` forward) must give the
   original HF model's logits within 1e-5;
3. ``neox_to_hf`` writes an HF directory from that checkpoint; ``transformers`` loads it and must
   give the original logits within 1e-5.

Matrix (each axis value appears at least once): rotary_pct 0.25/1.0, parallel residual on/off,
tied/untied, TP 1/2/4, sequential (pp 0) and layer-file (pp 1, 2) layouts, current/legacy/TE names,
Llama-style MHA and GQA, safetensors/.bin, fp32/bf16 files.

Run: pytest -q tests/integration/test_convert_round_trip.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from transformers import PreTrainedTokenizerFast

from neox.checkpoint import convert, load_model, resolve
from neox.checkpoint.model_config import config_for_checkpoint, in_precision
from neox.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "configs" / "tokenizers" / "neox-tiny.json"  # 2048 tokens, <|endoftext|> = 0
VOCAB = 2048
SEQ = 32
CLASSES = {"neox": transformers.GPTNeoXForCausalLM, "llama": transformers.LlamaForCausalLM}


def hf_config(arch: str, *, rotary_pct=0.25, parallel=True, tied=False, kv_heads=None, vocab=VOCAB):
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    if arch == "neox":
        return transformers.GPTNeoXConfig(
            **common, intermediate_size=256, rotary_pct=rotary_pct, use_parallel_residual=parallel, hidden_act="gelu"
        )
    return transformers.LlamaConfig(
        **common, intermediate_size=96, num_key_value_heads=kv_heads or 4, rope_theta=500000.0, rms_norm_eps=1e-6
    )


def randomise(model: torch.nn.Module, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm_weight = ("norm" in name) and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if is_norm_weight else 0.05 * noise)


def make_hf_dir(path: Path, arch: str = "neox", *, fmt="safetensors", dtype=torch.float32, **config) -> Path:
    """A tiny random HF model directory with the tiny tokenizer; returns ``path``."""
    model = CLASSES[arch]._from_config(hf_config(arch, **config), attn_implementation="eager").eval()
    randomise(model)
    model.to(dtype)
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(path)
    else:  # a Pythia-era pytorch_model.bin, with the buffers old HF files carry
        model.config.save_pretrained(path)
        sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
        if arch == "neox":
            sd["embed_out.weight"] = sd.pop("lm_head.weight", sd["gpt_neox.embed_in.weight"])
            for i in range(model.config.num_hidden_layers):
                sd[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
                sd[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        torch.save(sd, path / "pytorch_model.bin")
    PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER)).save_pretrained(path)
    return path


def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(7))


@torch.no_grad()
def hf_logits(path: Path) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model.eval()(ids()).logits


@torch.no_grad()
def engine_logits(ckpt: Path) -> torch.Tensor:
    """The engine's logits in fp32 (built in fp32: a bf16 model rounds its rotary tables as upstream)."""
    cfg = in_precision(config_for_checkpoint(resolve(ckpt)), "fp32")
    return load_model(ckpt, config=cfg)(ids())


def assert_close(ours: torch.Tensor, ref: torch.Tensor, vocab: int = VOCAB) -> None:
    assert ref.abs().max() > 0.1  # not two near-zero tensors
    torch.testing.assert_close(ours[..., :vocab], ref[..., :vocab], atol=1e-5, rtol=0)


VARIANTS = {
    "neox-rot0.25-par-untied-tp1-seq-current": dict(arch="neox", rotary_pct=0.25, parallel=True, tied=False, tp=1, pp=0, naming="current"),
    "neox-rot1.0-seqres-tied-tp2-pipe-legacy": dict(arch="neox", rotary_pct=1.0, parallel=False, tied=True, tp=2, pp=1, naming="legacy"),
    "neox-rot0.25-par-tied-tp4-pp2-te": dict(arch="neox", rotary_pct=0.25, parallel=True, tied=True, tp=4, pp=2, naming="te"),
    "neox-rot1.0-par-untied-tp2-seq-te": dict(arch="neox", rotary_pct=1.0, parallel=True, tied=False, tp=2, pp=0, naming="te"),
    "neox-rot0.25-seqres-untied-tp4-seq-current": dict(arch="neox", rotary_pct=0.25, parallel=False, tied=False, tp=4, pp=0, naming="current"),
    "neox-bin-bf16-tp2-pipe": dict(arch="neox", fmt="bin", dtype=torch.bfloat16, tp=2, pp=1, naming="current"),
    "llama-mha-untied-tp2-pipe-current": dict(arch="llama", tied=False, tp=2, pp=1, naming="current"),
    "llama-mha-tied-tp4-seq-legacy": dict(arch="llama", tied=True, tp=4, pp=0, naming="legacy"),
    "llama-gqa2-untied-tp2-seq-te": dict(arch="llama", kv_heads=2, tied=False, tp=2, pp=0, naming="te"),
    "llama-gqa1-tied-tp1-pipe-current": dict(arch="llama", kv_heads=1, tied=True, tp=1, pp=1, naming="current"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_round_trip_hf_neox_hf_logits(name, tmp_path):
    v = dict(VARIANTS[name])
    tp, pp, naming = v.pop("tp"), v.pop("pp"), v.pop("naming")
    src = make_hf_dir(tmp_path / "hf", **v)
    original = hf_logits(src)

    summary = convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=tp, pp=pp, naming=naming, progress=False)
    ckpt = tmp_path / "neox" / "global_step0"
    names = sorted(p.name for p in ckpt.iterdir())
    if pp == 0:
        assert [n for n in names if n.startswith("mp_rank")] == [f"mp_rank_{r:02d}_model_states.pt" for r in range(tp)]
        assert not any(n.startswith("layer_") for n in names)
    else:
        assert f"layer_02-model_{tp - 1:02d}-model_states.pt" in names
        assert len([n for n in names if n.startswith("mp_rank")]) == pp * tp
    module = _any_layer_state(ckpt, pp)
    marker = {"current": "mlp.linear1.weight", "legacy": "mlp.dense_h_to_4h.weight", "te": "mlp.fc1_weight"}[naming]
    assert any(k.endswith(marker) for k in module), (naming, sorted(module))
    assert (tmp_path / "neox" / "latest").read_text() == "global_step0"
    assert summary["tp"] == tp and summary["naming"] == naming

    assert_close(engine_logits(tmp_path / "neox"), original)

    back = convert.neox_to_hf(ckpt, tmp_path / "back", progress=False)
    assert back["tp"] == tp and back["naming"] == naming
    assert_close(hf_logits(tmp_path / "back"), original)


def _any_layer_state(ckpt: Path, pp: int) -> dict:
    if pp == 0:
        return torch.load(ckpt / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    return torch.load(ckpt / "layer_02-model_00-model_states.pt", weights_only=False)


def test_generated_config_reproduces_the_architecture(tmp_path):
    src = make_hf_dir(tmp_path / "pythia-tiny", "neox", rotary_pct=0.25, parallel=True)
    summary = convert.hf_to_neox(str(src), tmp_path / "out", tp_size=2, iteration=500, progress=False)
    from neox.config import load

    cfg = load([summary["config"]], {"train_micro_batch_size_per_gpu": 1})
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 4)
    assert (cfg.rotary_pct, cfg.gpt_j_residual, cfg.no_weight_tying, cfg.norm) == (0.25, True, True, "layernorm")
    assert (cfg.model_parallel_size, cfg.pipe_parallel_size, cfg.padded_vocab_size) == (2, 0, VOCAB)
    assert cfg.vocab_file == str(tmp_path / "out" / "tokenizer" / "tokenizer.json")
    assert Path(cfg.vocab_file).is_file()
    assert summary["config"] == str(tmp_path / "out" / "configs" / "pythia-tiny.yml")
    assert (tmp_path / "out" / "latest").read_text() == "global_step500"
    states = torch.load(tmp_path / "out" / "global_step500" / "mp_rank_01_model_states.pt", weights_only=False)
    assert states["iteration"] == 500 and states["mp_world_size"] == 2 and states["optimizer"] is None
    assert states["args"]["model_parallel_size"] == 2 and states["args"]["padded_vocab_size"] == VOCAB


def test_vocab_that_tp_does_not_divide_is_padded_with_zero_rows(tmp_path):
    src = make_hf_dir(tmp_path / "hf", "neox", vocab=2050)
    summary = convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=4, progress=False)
    assert summary["padded_vocab_size"] == 2052 and summary["hf_vocab_size"] == 2050
    model = load_model(tmp_path / "neox")
    assert model.embedding.word_embeddings.weight.shape[0] == 2052
    assert torch.equal(model.embedding.word_embeddings.weight[2050:], torch.zeros(2, 64))
    assert_close(engine_logits(tmp_path / "neox"), hf_logits(src), vocab=2050)


def test_make_vocab_size_divisible_by_reproduces_hf_vocab():
    assert convert.vocab_padding(50304, 50277, 1) == (50304, 128)  # Pythia
    assert convert.vocab_padding(32000, 32000, 2) == (32000, 128)  # Llama 2
    assert convert.vocab_padding(32000, 32000, 8) == (32000, 32)  # 128 x 8 does not divide 32000
    assert convert.vocab_padding(50277, 50277, 1) == (50277, 1)  # an unpadded matrix stays unpadded
    assert convert.vocab_padding(2050, 2048, 4) == (2052, 513)  # only 513 x 4 pads 2048 tokens to 2052


def test_bf16_files_stay_bf16_and_precision_auto_exports_bf16(tmp_path):
    src = make_hf_dir(tmp_path / "hf", "llama", kv_heads=2, dtype=torch.bfloat16)
    summary = convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=2, verify_logits=True, progress=False)
    assert summary["dtype"] == "bfloat16" and summary["verify"]["ok"]
    sd = torch.load(tmp_path / "neox" / "global_step0" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert {v.dtype for v in sd.values()} == {torch.bfloat16}
    assert "precision: bfloat16" in Path(summary["config"]).read_text()
    back = convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", progress=False)
    assert back["dtype"] == "bfloat16"  # upstream's auto would fall back to fp32 for a bf16 config
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"
    forced = convert.neox_to_hf(tmp_path / "neox", tmp_path / "fp32", precision="fp32", progress=False)
    assert forced["dtype"] == "float32"


def test_verify_prints_max_difference_and_refuses_above_tolerance(tmp_path):
    src = make_hf_dir(tmp_path / "hf", "neox")
    lines = []
    summary = convert.hf_to_neox(str(src), tmp_path / "ok", tp_size=2, verify_logits=True, progress=False, log=lines.append)
    assert summary["verify"]["ok"] and summary["verify"]["max_abs_diff"] < 1e-5
    assert any(line.startswith("verify: max |Δlogits| = ") and line.endswith(": ok") for line in lines)
    with pytest.raises(CheckpointError, match=r"verification failed: .* nothing was written"):
        convert.hf_to_neox(str(src), tmp_path / "strict", verify_logits=True, tolerance=1e-12, progress=False, log=lines.append)
    assert not (tmp_path / "strict").exists()
    assert not list(tmp_path.glob(".strict.tmp-*"))
    back = convert.neox_to_hf(tmp_path / "ok", tmp_path / "back", verify_logits=True, progress=False, log=lines.append)
    assert back["verify"]["ok"]


def test_config_json_is_readable_by_transformers_4_57_keys(tmp_path):
    """5.x writes rope settings only in rope_parameters; 4.57 reads rotary_pct / rope_theta."""
    src = make_hf_dir(tmp_path / "hf", "neox", rotary_pct=0.25)
    convert.hf_to_neox(str(src), tmp_path / "neox", progress=False)
    convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", progress=False)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["rotary_pct"] == 0.25 and config["rotary_emb_base"] == 10000
    assert config["architectures"] == ["GPTNeoXForCausalLM"] and config["eos_token_id"] == 0
    tok = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and tok["eos_token"] == "<|endoftext|>"
    llama = make_hf_dir(tmp_path / "llama", "llama")
    convert.hf_to_neox(str(llama), tmp_path / "lneox", progress=False)
    convert.neox_to_hf(tmp_path / "lneox", tmp_path / "lback", progress=False)
    assert json.loads((tmp_path / "lback" / "config.json").read_text())["rope_theta"] == 500000.0


# ---------------------------------------------------------------- refusals


def _rewrite_config(ckpt: Path, **changes) -> None:
    import yaml

    f = next((ckpt / "configs").glob("hf.yml"))
    values = yaml.safe_load(f.read_text())
    values.update(changes)
    f.write_text(yaml.safe_dump(values))


def test_rmsnorm_checkpoint_with_layernorm_config_is_refused(tmp_path):
    convert.hf_to_neox(str(make_hf_dir(tmp_path / "hf", "llama")), tmp_path / "neox", tp_size=2, progress=False)
    _rewrite_config(tmp_path / "neox" / "global_step0", norm="layernorm")
    for arch in ("auto", "neox"):
        with pytest.raises(CheckpointError, match=r"has RMSNorm weights \(\*\.scale\) but the config says norm: layernorm"):
            convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", architecture=arch, progress=False)
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_layers=3), r"has 2 transformer layers but the config says num_layers: 3"),
        (dict(no_weight_tying=False), r"has separate LM head \(final_linear\) but the config says no_weight_tying: false"),
        (dict(intermediate_size=128), r"mlp.linear1.weight is \[256, 64\] but the config implies \[128, 64\]; check the MLP width"),
    ],
)
def test_checkpoint_that_does_not_fit_its_config_is_refused(tmp_path, changes, message):
    convert.hf_to_neox(str(make_hf_dir(tmp_path / "hf", "neox")), tmp_path / "neox", tp_size=2, progress=False)
    _rewrite_config(tmp_path / "neox" / "global_step0", **changes)
    with pytest.raises(CheckpointError, match=message):
        convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", progress=False)


def test_llama_architecture_for_a_layernorm_model_is_refused(tmp_path):
    convert.hf_to_neox(str(make_hf_dir(tmp_path / "hf", "neox")), tmp_path / "neox", progress=False)
    with pytest.raises(ConfigError, match=r"HF llama cannot express this model: norm 'layernorm'"):
        convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", architecture="llama", progress=False)


def test_unsupported_model_type_and_bad_tp_are_refused(tmp_path):
    gpt2 = tmp_path / "gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt2)
    with pytest.raises(CheckpointError, match=r"HF model_type 'gpt2' is not supported"):
        convert.hf_to_neox(str(gpt2), tmp_path / "x", progress=False)
    src = make_hf_dir(tmp_path / "hf", "llama", kv_heads=2)
    with pytest.raises(ConfigError, match=r"num_kv_heads 2 is not divisible by model_parallel_size 4"):
        convert.hf_to_neox(str(src), tmp_path / "y", tp_size=4, progress=False)
    assert not (tmp_path / "y").exists()


def test_existing_output_is_not_overwritten_without_overwrite(tmp_path):
    src = make_hf_dir(tmp_path / "hf", "neox")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"already exists and is not empty; .* --overwrite"):
        convert.hf_to_neox(str(src), tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    convert.hf_to_neox(str(src), tmp_path / "out", overwrite=True, progress=False)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "latest").is_file()


def test_missing_source_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist \(neither a local directory nor a Hub name"):
        convert.hf_to_neox(str(tmp_path / "no" / "such" / "dir"), tmp_path / "x", progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize("verify_dtype", ["fp32", "bf16"])
def test_verify_on_the_gpu_both_directions(tmp_path, verify_dtype):
    """--verify on a GPU node: both models on CUDA, in fp32 (1e-5) or bf16 (5e-2 of the logit scale)."""
    from neox.checkpoint import verify

    assert verify.device().type == "cuda"
    src = make_hf_dir(tmp_path / "hf", "llama", kv_heads=2, dtype=torch.bfloat16)
    there = convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=2, pp=1, verify_logits=True,
                               verify_dtype=verify_dtype, progress=False)
    back = convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", verify_logits=True, verify_dtype=verify_dtype,
                              progress=False)
    for summary in (there, back):
        assert summary["verify"]["ok"] and summary["verify"]["dtype"] == verify_dtype, summary["verify"]
        if verify_dtype == "fp32":
            assert summary["verify"]["max_abs_diff"] < 1e-5


def test_a_model_only_upstream_style_config_file_converts(tmp_path):
    """Upstream's converter reads one YAML with just the model keys; that works here too (--config_file)."""
    src = make_hf_dir(tmp_path / "hf", "neox", rotary_pct=0.25, parallel=True)
    convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=2, progress=False)
    model_keys = {
        "num-layers": 2, "hidden-size": 64, "num-attention-heads": 4, "seq-length": 64, "max-position-embeddings": 64,
        "pos-emb": "rotary", "rotary-pct": 0.25, "no-weight-tying": True, "gpt-j-residual": True, "norm": "layernorm",
        "model-parallel-size": 2, "tokenizer-type": "HFTokenizer", "vocab-file": str(TOKENIZER),
    }
    (tmp_path / "model.yml").write_text(json.dumps(model_keys))  # JSON is YAML: upstream's flow-mapping style
    convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", config_files=[str(tmp_path / "model.yml")], progress=False)
    assert_close(hf_logits(tmp_path / "back"), hf_logits(src))
