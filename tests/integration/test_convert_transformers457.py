"""Converted HF directories load in transformers 4.57 as well as the current release (5.x here).

transformers 4.57 (with the tokenizers and huggingface-hub releases it requires) is installed
with pip into a temporary ``--target`` directory and used from a subprocess on ``PYTHONPATH``,
sharing this environment's torch. Both directions are checked by logits (fp32, 1e-5):

- NeoX -> HF output of this converter (written with 5.x) loads in 4.57 as the right model: a
  GPT-NeoX with rotary_pct 0.25 (4.57 ignores 5.x's ``rope_parameters`` and would rotate 25 % by
  default, so ``rotary_pct`` must be in config.json — this variant uses 1.0 to catch its absence)
  and a Llama with GQA and rope_theta 500000; the tokenizer loads and encodes identically.
- An HF directory written by 4.57 itself (``rotary_pct``/``rotary_emb_base`` keys, 4.x file layout)
  converts to NeoX and the engine reproduces 4.57's logits.

Marked slow: the pip install downloads ~15 MB and takes ~30 s on CI's two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_convert_round_trip import assert_close, engine_logits, hf_logits, ids, make_hf_dir  # noqa: E402

from neox.checkpoint import convert  # noqa: E402

pytestmark = pytest.mark.slow
TOKENIZER = HERE.parents[1] / "configs" / "tokenizers" / "neox-tiny.json"

LOAD = """
import sys, json, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
path, ids_file, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(path)
with torch.no_grad():
    logits = model(torch.load(ids_file)).logits
torch.save(logits, out)
cfg = model.config
print(json.dumps({"version": transformers.__version__, "class": type(model).__name__,
                  "rotary_pct": getattr(cfg, "rotary_pct", None), "rope_theta": getattr(cfg, "rope_theta", None),
                  "encoded": tok("def f(x): return x + 1")["input_ids"], "eos": tok.eos_token_id}))
"""

SAVE = """
import sys, torch, transformers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast
path, ids_file, out, tokenizer = sys.argv[1:5]
torch.manual_seed(0)
cfg = GPTNeoXConfig(vocab_size=2048, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                    max_position_embeddings=64, rotary_pct=0.5, rotary_emb_base=5000, use_parallel_residual=True)
model = GPTNeoXForCausalLM(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():  # every tensor random, norm weights around 1
        p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name and name.endswith("weight") else 0.05 * torch.randn_like(p))
model.save_pretrained(path)
PreTrainedTokenizerFast(tokenizer_file=tokenizer).save_pretrained(path)
with torch.no_grad():
    torch.save(model(torch.load(ids_file)).logits, out)
print(transformers.__version__)
"""


@pytest.fixture(scope="module")
def tf457(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("transformers457")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), "transformers>=4.57,<4.58", "tokenizers>=0.22,<0.23", "huggingface-hub>=0.34,<1.0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip could not install transformers 4.57 (needs PyPI):\n{proc.stderr[-2000:]}"
    return target


def run_457(tf457: Path, script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    env.update(PYTHONPATH=str(tf457), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "arch, spec",
    [("neox", dict(rotary_pct=1.0, parallel=False)), ("llama", dict(kv_heads=2))],
    ids=["gpt-neox-rotary1.0", "llama-gqa"],
)
def test_converted_directory_loads_in_transformers_457(tf457, tmp_path, arch, spec):
    src = make_hf_dir(tmp_path / "hf", arch, **spec)
    convert.hf_to_neox(str(src), tmp_path / "neox", tp_size=2, progress=False)
    convert.neox_to_hf(tmp_path / "neox", tmp_path / "back", progress=False)
    torch.save(ids(), tmp_path / "ids.pt")
    info = json.loads(run_457(tf457, LOAD, str(tmp_path / "back"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")))
    assert info["version"].startswith("4.57.")
    assert info["class"] == {"neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}[arch]
    if arch == "neox":
        assert info["rotary_pct"] == 1.0
    else:
        assert info["rope_theta"] == 500000.0
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(tmp_path / "back")
    assert info["encoded"] == ours("def f(x): return x + 1")["input_ids"] and info["eos"] == 0
    reference = hf_logits(src)
    assert_close(torch.load(tmp_path / "out.pt"), reference)
    assert_close(hf_logits(tmp_path / "back"), reference)


def test_directory_written_by_transformers_457_converts_to_neox(tf457, tmp_path):
    torch.save(ids(), tmp_path / "ids.pt")
    version = run_457(tf457, SAVE, str(tmp_path / "hf"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"), str(TOKENIZER))
    assert version.startswith("4.57.")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["rotary_pct"] == 0.5 and "rope_parameters" not in config  # the 4.x spelling only
    summary = convert.hf_to_neox(str(tmp_path / "hf"), tmp_path / "neox", tp_size=2, pp=1, progress=False)
    assert "rotary_pct: 0.5" in Path(summary["config"]).read_text()
    assert "rotary_emb_base: 5000" in Path(summary["config"]).read_text()
    assert_close(engine_logits(tmp_path / "neox"), torch.load(tmp_path / "out.pt"))
