"""Hugging Face model directories on disk: finding, reading and writing them for the converters.

- Sources are a local directory or a Hub name (``org/name`` with an optional revision), fetched
  with ``huggingface_hub.snapshot_download``: configs, tokenizer files and one weight format
  (safetensors if the repo has it, else ``pytorch_model*.bin``).
- Weights are read as stored (names and dtypes), from single or sharded files, without building
  the ``transformers`` model.
- Written directories load in ``transformers`` 4.57 and 5.x alike. 5.x keeps rotary settings in
  ``rope_parameters`` and writes only that; 4.57 reads ``rotary_pct``/``rotary_emb_base``
  (GPT-NeoX) and ``rope_theta`` (Llama) and would silently fall back to its defaults (25 %
  rotary, base 10000) without them. So ``config.json`` carries both spellings, and
  ``torch_dtype`` beside ``dtype``. Tokenizers are saved as ``PreTrainedTokenizerFast``, which
  both read (5.x names its generic class ``TokenizersBackend``, unknown to 4.57).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neox.errors import CheckpointError

EOD_TOKEN = "<|endoftext|>"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_source(model: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local directory holding the HF model ``model`` (a path, or a Hub name to download)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; pass the directory holding config.json and the weights")
        if revision:
            raise CheckpointError(f"revision={revision} applies to Hub names only, not to the local directory {path}")
        return path
    if model.count("/") > 1 or model.startswith((".", "/", "~")):
        raise CheckpointError(f"{model} does not exist (neither a local directory nor a Hub name org/name)")
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(model, revision=revision)
        weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
        local = snapshot_download(
            model,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=["*.json", "tokenizer*", "*.model", "*.txt", *weights],
        )
    except Exception as err:  # hub errors come as many types (offline, 401/404, HTTP)
        raise CheckpointError(
            f"cannot fetch {model}{'@' + revision if revision else ''} from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the name and revision, "
            "set HF_TOKEN for gated models, or pass a local directory"
        ) from None
    return Path(local)


def weight_files(path: Path) -> list[Path]:
    """The weight files of an HF model directory (safetensors preferred), in load order."""
    for index in _WEIGHT_INDEXES:
        if (path / index).is_file():
            weight_map = json.loads((path / index).read_text()).get("weight_map", {})
            return [path / name for name in sorted(set(weight_map.values()))]
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
    raise CheckpointError(
        f"{path} has no model.safetensors, pytorch_model.bin or a sharded index of them; it is not an HF model directory"
    )


def read_weights(path: Path, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the HF model in ``path``, names and dtypes as stored."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    state: dict[str, torch.Tensor] = {}
    files = weight_files(path)
    for f in tqdm(files, desc="reading HF weights", unit="file", disable=not progress):
        if not f.is_file():
            raise CheckpointError(f"{f} is listed in the weight index but missing; the download is incomplete")
        try:
            part = load_file(f) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"cannot read {f} ({type(err).__name__}: {err}); the file is damaged") from None
        state.update(part)
    return state


def read_config(path: Path):
    """The ``transformers`` config of the model in ``path``."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except Exception as err:
        raise CheckpointError(f"cannot read {path / 'config.json'} ({type(err).__name__}: {err})") from None


def config_dict(hf_cfg, dtype: torch.dtype) -> dict:
    """``config.json`` content readable by transformers 4.57 and 5.x (module docstring)."""
    d = hf_cfg.to_dict()
    d["torch_dtype"] = d["dtype"] = DTYPE_NAMES[dtype]
    rope = d.get("rope_parameters") or {}
    if d.get("model_type") == "gpt_neox":
        d.setdefault("rotary_pct", rope.get("partial_rotary_factor", getattr(hf_cfg, "rotary_pct", 1.0)))
        d.setdefault("rotary_emb_base", rope.get("rope_theta", getattr(hf_cfg, "rotary_emb_base", 10000)))
    else:
        d.setdefault("rope_theta", rope.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0)))
    return d


def write_config(hf_cfg, out: Path, dtype: torch.dtype) -> None:
    (out / "config.json").write_text(json.dumps(config_dict(hf_cfg, dtype), indent=2, sort_keys=True) + "\n")


def write_weights(state: dict[str, torch.Tensor], out: Path, max_shard_size: str = "5GB") -> list[str]:
    """Safetensors files (sharded with an index above ``max_shard_size``); returns their names."""
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict(state, out, max_shard_size=max_shard_size)
    return sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")


# ---------------------------------------------------------------- tokenizers


def portable_tokenizer_config(out: Path, *, eos_token: str | None = None, pad_token_id: int | None = None) -> None:
    """Make ``tokenizer_config.json`` in ``out`` loadable by transformers 4.57 and 5.x."""
    f = out / "tokenizer_config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg.pop("backend", None)
    if eos_token and not cfg.get("eos_token"):
        cfg["eos_token"] = eos_token
        cfg.setdefault("bos_token", eos_token)
    if pad_token_id is not None:
        vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
        names = {i: t for t, i in vocab.items()} if isinstance(vocab, dict) else {}
        if pad_token_id not in names:
            raise CheckpointError(f"pad token id {pad_token_id} is not in the tokenizer's vocabulary")
        cfg["pad_token"] = names[pad_token_id]
    f.write_text(json.dumps(cfg, indent=2) + "\n")


def save_hf_tokenizer(source: str | Path, out: Path, *, pad_token_id: int | None = None) -> Path:
    """Save the tokenizer of an HF directory/Hub name into ``out``; returns its ``tokenizer.json``."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as err:
        raise CheckpointError(
            f"cannot load a tokenizer from {source} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "pass --tokenizer <dir or hub name>"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    if not (out / "tokenizer.json").is_file():
        raise CheckpointError(
            f"the tokenizer of {source} is not a fast (tokenizers) tokenizer, so it has no tokenizer.json for "
            "NeoX's HFTokenizer; install sentencepiece/protobuf so transformers can convert it, or pass --tokenizer"
        )
    vocab = tok.get_vocab()
    portable_tokenizer_config(out, eos_token=EOD_TOKEN if EOD_TOKEN in vocab else None, pad_token_id=pad_token_id)
    return out / "tokenizer.json"


def save_neox_tokenizer(cfg, out: Path, *, vocab_is_hf_tokenizer: bool = False, pad_token_id: int | None = None) -> None:
    """Save the tokenizer a NeoX config names (``tokenizer_type``/``vocab_file``) as an HF tokenizer."""
    kind, vocab_file = cfg.tokenizer_type, cfg.vocab_file
    vocab_path = Path(vocab_file).expanduser() if vocab_file else None
    hint = "; pass --no_save_tokenizer to skip it"
    if kind in ("HFTokenizer", "GPT2BPETokenizer", "SPMTokenizer") and (vocab_path is None or not vocab_path.is_file()):
        raise CheckpointError(f"the config's vocab_file {vocab_file} does not exist, so the tokenizer cannot be saved{hint}")
    if vocab_is_hf_tokenizer or (kind == "HFTokenizer" and (vocab_path.parent / "tokenizer_config.json").is_file()):
        save_hf_tokenizer(vocab_path.parent, out, pad_token_id=pad_token_id)
        return
    from transformers import PreTrainedTokenizerFast

    if kind == "HFTokenizer":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(vocab_path))
    elif kind == "GPT2BPETokenizer":
        from transformers import GPT2TokenizerFast

        tok = GPT2TokenizerFast(vocab_file=str(vocab_path), merges_file=str(cfg.merge_file))
    elif kind == "HFGPT2Tokenizer":
        save_hf_tokenizer(vocab_file or "gpt2", out, pad_token_id=pad_token_id)
        return
    else:
        raise CheckpointError(f"saving a {kind} tokenizer as an HF tokenizer is not supported{hint}")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    portable_tokenizer_config(
        out, eos_token=EOD_TOKEN if EOD_TOKEN in tok.get_vocab() else None, pad_token_id=pad_token_id
    )
