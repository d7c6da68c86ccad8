#!/usr/bin/env python3
"""Convert a NeoX checkpoint (any TP/PP layout, current, legacy or TE names) to a Hugging Face model.

    python tools/ckpts/convert_neox_to_hf.py --input_dir runs/x/checkpoints/global_step1000 \\
        --output_dir hf/x-1000 [--config_file my.yml] [--precision auto] [--architecture auto] [--verify]
    just convert-neox ckpt=runs/x/checkpoints/global_step1000 output=hf/x-1000 verify=true

The flags are upstream GPT-NeoX's (``--input_dir``, ``--config_file``, ``--output_dir``,
``--precision``, ``--architecture``, ``--no_save_tokenizer``, ``--vocab-is-hf-tokenizer``,
``--pad-token-id``). Differences from upstream:

- the config defaults to the checkpoint's own ``configs/`` (several files, with the run's
  command-line overrides); the layout (sequential or layer files), the TP degree and the
  parameter names are read from the files, not from the config;
- ``--precision auto`` writes the precision the model trained in, bf16 included (upstream falls
  back to fp32 unless fp16 is enabled);
- ``--architecture auto`` picks ``neox`` (GPTNeoXForCausalLM) for LayerNorm models and ``llama``
  for RMSNorm + SwiGLU; a checkpoint that does not match its config (an RMSNorm checkpoint with a
  layernorm config, another layer count, tied vs untied head, ...) is refused, never converted;
- with ``gpt_j_residual: false`` the row-parallel biases are taken once, not summed over TP ranks.

The output (config.json, model*.safetensors, tokenizer) loads in transformers 4.57 and 5.x.
--verify compares the engine's logits with transformers' on the written files. Nothing is
written unless the whole conversion (and the verification) succeeds. Ends with a JSON summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import flags_from_key_values, log, run  # noqa: E402

SWITCHES = ("no-save-tokenizer", "vocab-is-hf-tokenizer", "overwrite", "verify", "no-progress")
ALIASES = {"ckpt": "input-dir", "config": "config-file", "output": "output-dir"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="convert_neox_to_hf.py",
        description=__doc__.splitlines()[1],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input_dir", "--input-dir", "--ckpt", dest="input_dir", required=True,
                   help="the checkpoint: .../global_stepN, or a save directory (its 'latest')")
    p.add_argument("--config_file", "--config-file", "--config", dest="config_file", nargs="+", default=None,
                   help="config file(s) the model was trained with (default: the checkpoint's configs/)")
    p.add_argument("--output_dir", "--output-dir", "--output", dest="output_dir", required=True,
                   help="HF model directory to create")
    p.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="dtype of the written weights; auto: the config's precision (default)")
    p.add_argument("--architecture", choices=("auto", "neox", "llama"), default="auto",
                   help="HF class: neox = GPTNeoXForCausalLM, llama = LlamaForCausalLM (default: from the config)")
    p.add_argument("--no_save_tokenizer", "--no-save-tokenizer", dest="no_save_tokenizer", action="store_true",
                   help="do not save the tokenizer beside the model")
    p.add_argument("--vocab-is-hf-tokenizer", "--vocab_is_hf_tokenizer", dest="vocab_is_hf_tokenizer",
                   action="store_true", help="vocab_file lies in an HF tokenizer directory: save that tokenizer")
    p.add_argument("--pad-token-id", "--pad_token_id", dest="pad_token_id", type=int, default=None,
                   help="pad token id to set in the tokenizer and config")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    p.add_argument("--verify", action="store_true",
                   help="compare engine and transformers logits on sample tokens; fail above --tolerance")
    p.add_argument("--verify-dtype", choices=("fp32", "bf16"), default="fp32", help="dtype the comparison runs in")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max |Δlogits| allowed, times max(1, max |logits|) (default 1e-5 fp32, 5e-2 bf16)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file before sharding (default 5GB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(flags_from_key_values(argv, SWITCHES, ALIASES))


def convert(args: argparse.Namespace) -> dict:
    from neox.checkpoint.convert import neox_to_hf

    return neox_to_hf(
        args.input_dir,
        args.output_dir,
        config_files=args.config_file,
        architecture=args.architecture,
        precision=args.precision,
        save_tokenizer=not args.no_save_tokenizer,
        vocab_is_hf_tokenizer=args.vocab_is_hf_tokenizer,
        pad_token_id=args.pad_token_id,
        overwrite=args.overwrite,
        verify_logits=args.verify,
        verify_dtype=args.verify_dtype,
        tolerance=args.tolerance,
        max_shard_size=args.max_shard_size,
        progress=not args.no_progress,
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run("convert_neox_to_hf", lambda: convert(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
