#!/usr/bin/env python3
"""Convert a Hugging Face GPT-NeoX or Llama-style model into a NeoX checkpoint to train from.

    python tools/ckpts/convert_hf_to_neox.py --model EleutherAI/pythia-160m --revision step143000 --tp 2
    just convert-hf model=meta-llama/Llama-3.2-1B tp=2 te=true verify=true

Input: a Hub name (downloaded with huggingface_hub; HF_TOKEN for gated models) or a local
directory with config.json, safetensors or pytorch_model*.bin (single or sharded, fp32/bf16/fp16)
and a tokenizer. Output (default: $NEOX_CKPT_ROOT/<model name>[-<revision>]):

    <output>/global_step<iteration>/   weights for the requested TP: mp_rank_TT_model_states.pt
                                       (--pp 0) or layer_LL-model_TT files (--pp >= 1); configs/
    <output>/latest                    "global_step<iteration>"
    <output>/configs/<name>.yml        NeoX config of the architecture, tokenizer, TP/PP and precision
    <output>/tokenizer/                the HF tokenizer; its tokenizer.json is the config's vocab_file

Train from it with your data/batch YAML:  neox train <output>/configs/<name>.yml yours.yml
load=<output> finetune=true. --verify compares the engine's logits on the converted weights
with transformers' on the original ones and fails above the tolerance. Nothing is written
unless the whole conversion (and the verification) succeeds. Ends with a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import checkpoint_root, flags_from_key_values, log, run  # noqa: E402

SWITCHES = ("te", "overwrite", "verify", "test", "no-progress")
ALIASES = {"output": "output-dir", "model-path": "output-dir", "hf-model-name": "model"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="convert_hf_to_neox.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", "--hf-model-name", required=True, help="Hub name (org/name) or local HF model directory")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (e.g. step143000 for Pythia)")
    p.add_argument("--output-dir", "--output", "--model_path", dest="output_dir", default=None,
                   help="save directory to create (default: $NEOX_CKPT_ROOT/<model>[-<revision>])")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree of the checkpoint (model_parallel_size)")
    p.add_argument("--pp", type=int, default=0,
                   help="pipe_parallel_size: 0 writes the sequential layout (weights in mp_rank files), "
                        ">= 1 layer files (default 0)")
    p.add_argument("--iteration", type=int, default=0, help="step number of the checkpoint (global_step<N>)")
    p.add_argument("--te", action="store_true", help="Transformer Engine parameter names (same as --naming te)")
    p.add_argument("--naming", choices=("current", "legacy", "te"), default="current",
                   help="parameter names: current (mlp.linear1), legacy (mlp.dense_h_to_4h) or te")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="dtype of the written weights; auto keeps the HF files' dtype")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory or Hub name (default: the model's own)")
    p.add_argument("--cache-dir", default=None, help="Hub download cache (default: huggingface_hub's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    p.add_argument("--verify", "--test", dest="verify", action="store_true",
                   help="compare engine and transformers logits on sample tokens; fail above --tolerance")
    p.add_argument("--verify-dtype", choices=("fp32", "bf16"), default="fp32", help="dtype the comparison runs in")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max |Δlogits| allowed, times max(1, max |logits|) (default 1e-5 fp32, 5e-2 bf16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(flags_from_key_values(argv, SWITCHES, ALIASES))
    if args.te:
        args.naming = "te"
    return args


def default_output(model: str, revision: str | None) -> Path:
    from neox.errors import ConfigError

    root = checkpoint_root()
    if not root:
        raise ConfigError(
            "no output directory: pass --output-dir (output=), or set NEOX_CKPT_ROOT (in the environment or "
            "in your site profile, slurm/sites/<site>.env)"
        )
    name = Path(model.rstrip("/")).name + (f"-{revision}" if revision else "")
    return Path(root).expanduser() / name


def convert(args: argparse.Namespace) -> dict:
    from neox.checkpoint.convert import hf_to_neox

    output = args.output_dir or default_output(args.model, args.revision)
    return hf_to_neox(
        args.model,
        output,
        revision=args.revision,
        tp_size=args.tp,
        pp=args.pp,
        iteration=args.iteration,
        naming=args.naming,
        precision=args.precision,
        tokenizer=args.tokenizer,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        verify_logits=args.verify,
        verify_dtype=args.verify_dtype,
        tolerance=args.tolerance,
        progress=not args.no_progress,
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run("convert_hf_to_neox", lambda: convert(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
