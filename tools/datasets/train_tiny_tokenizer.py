#!/usr/bin/env python3
"""Train the small byte-level BPE tokenizer shipped as configs/tokenizers/neox-tiny.json.

It is trained offline on English text that ships with every CPython (the ``pydoc`` topic
help), so the demo and the tests need no download. Deterministic for a given ``tokenizers``
version; the committed file is what the tests and the demo use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def corpus() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--output", default="configs/tokenizers/neox-tiny.json")
    args = parser.parse_args()

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=None) + "\n")
    print(json.dumps({"output": str(out), "vocab_size": tok.get_vocab_size()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
