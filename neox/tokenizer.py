"""Tokenizers named by upstream GPT-NeoX's ``tokenizer_type``.

Matches ``megatron/tokenizer/tokenizer.py`` in what matters for compatibility: the unpadded
``vocab_size`` (from which ``padded_vocab_size`` is derived) and the end-of-document id
(``<|endoftext|>`` for the BPE/HF types, the EOS id for HFGPT2, 0 for CharLevel, the EOT token
for tiktoken). Everything is loaded from local files; nothing is downloaded except a hub name
given explicitly to ``HFGPT2Tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from neox.errors import ConfigError

TOKENIZER_TYPES = (
    "GPT2BPETokenizer",
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
    "TiktokenTokenizer",
)

EOD_TOKEN = "<|endoftext|>"


@dataclass
class Tokenizer:
    """A loaded tokenizer with the interface the engine and tools use."""

    kind: str
    vocab_size: int
    eod: int | None
    _impl: object
    # The exact ASCII fast path of byte-level BPE tokenizers (neox.bytelevel_bpe), where it applies.
    _fast: object | None = None

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._fast is not None:
            return self._fast.encode_batch(texts)
        return _encode(self.kind, self._impl, texts)

    def decode(self, ids: list[int]) -> str:
        impl = self._impl
        if self.kind == "CharLevelTokenizer":
            return "".join(chr(max(i, 32)) for i in ids)
        if self.kind in ("GPT2BPETokenizer", "HFTokenizer"):
            return impl.decode(list(ids), skip_special_tokens=False)
        if self.kind == "SPMTokenizer":
            return impl.decode(list(ids))
        return impl.decode(list(ids))

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the vocabulary, recorded in data manifests."""
        import hashlib

        h = hashlib.sha256(f"{self.kind}:{self.vocab_size}:{self.eod}".encode())
        for text in ("Hello world", " the quick brown fox", "\n\t1234"):
            h.update(str(self.encode(text)).encode())
        return h.hexdigest()[:16]


def _encode(kind: str, impl, texts: list[str]) -> list[list[int]]:
    if kind == "CharLevelTokenizer":
        return [[min(ord(c), 511) for c in t] for t in texts]
    if kind in ("GPT2BPETokenizer", "HFTokenizer"):
        # encode_batch_fast (tokenizers >= 0.20) skips character offsets, which nothing here uses.
        batch = getattr(impl, "encode_batch_fast", impl.encode_batch)
        return [e.ids for e in batch(texts, add_special_tokens=False)]
    if kind == "HFGPT2Tokenizer":
        return impl(texts, add_special_tokens=False)["input_ids"]
    if kind == "SPMTokenizer":
        return [impl.encode(t) for t in texts]
    return [impl.encode(t, allowed_special="all") for t in texts]  # tiktoken


def build_tokenizer(tokenizer_type: str, vocab_file: str | None = None, merge_file: str | None = None) -> Tokenizer:
    """Load the tokenizer upstream GPT-NeoX would build for these config values."""
    if tokenizer_type not in TOKENIZER_TYPES:
        raise ConfigError(
            f"tokenizer_type {tokenizer_type!r} is not known; use one of {', '.join(TOKENIZER_TYPES)}"
        )
    if tokenizer_type == "CharLevelTokenizer":
        return Tokenizer(tokenizer_type, 512, 0, None)
    if tokenizer_type == "TiktokenTokenizer":
        try:
            import tiktoken
        except ImportError:
            raise ConfigError("tokenizer_type TiktokenTokenizer needs the 'tiktoken' package: pip install tiktoken") from None
        enc = tiktoken.get_encoding(vocab_file or "cl100k_base")
        return Tokenizer(tokenizer_type, enc.n_vocab, enc.eot_token, enc)
    if tokenizer_type == "HFGPT2Tokenizer":
        from transformers import GPT2TokenizerFast

        tok = GPT2TokenizerFast.from_pretrained(vocab_file or "gpt2")
        return Tokenizer(tokenizer_type, len(tok), tok.eos_token_id, tok)

    path = _require_file("vocab_file", vocab_file, tokenizer_type)
    if tokenizer_type == "SPMTokenizer":
        try:
            import sentencepiece
        except ImportError:
            raise ConfigError("tokenizer_type SPMTokenizer needs the 'sentencepiece' package: pip install sentencepiece") from None
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        eod = sp.piece_to_id(EOD_TOKEN)
        return Tokenizer(tokenizer_type, sp.vocab_size(), eod if eod != sp.unk_id() else sp.eos_id(), sp)

    from tokenizers import Tokenizer as HFTok

    if tokenizer_type == "HFTokenizer":
        try:
            tok = HFTok.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise ConfigError(f"vocab_file {path} is not a tokenizers JSON file ({err}); HFTokenizer needs a tokenizer.json") from None
    else:  # GPT2BPETokenizer: vocab.json + merges.txt
        merges = _require_file("merge_file", merge_file, tokenizer_type)
        from tokenizers import decoders, models, pre_tokenizers

        tok = HFTok(models.BPE.from_file(str(path), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    from neox.bytelevel_bpe import ByteLevelBPE

    eod = tok.token_to_id(EOD_TOKEN)
    fast = ByteLevelBPE(tok) if ByteLevelBPE.applies(tok) else None
    return Tokenizer(tokenizer_type, tok.get_vocab_size(), eod, tok, fast)


def _require_file(key: str, value: str | None, tokenizer_type: str) -> Path:
    if not value:
        raise ConfigError(f"tokenizer_type {tokenizer_type} needs {key}; set {key} to the tokenizer file")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key} {value} does not exist; point {key} at the tokenizer file")
    return path


def from_config(cfg) -> Tokenizer:
    """Build the tokenizer named by a :class:`neox.config.Config`."""
    return build_tokenizer(cfg.tokenizer_type, cfg.vocab_file, cfg.merge_file)
