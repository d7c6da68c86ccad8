"""The byte-level BPE fast path gives exactly the ids of `tokenizers` itself."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer

from neox import bytelevel_bpe
from neox.bytelevel_bpe import ByteLevelBPE
from neox.tokenizer import build_tokenizer

TINY = "configs/tokenizers/neox-tiny.json"

WORDS = ["the", "The", "quick", "brown", "fox", "don't", "it's", "we're", "I'm", "you'll", "they'd",
         "'S", "x1", "2024", "3.14", "a_b", "--", "...", "(x)", "[1]", "{k: v}", "#!", "@home", "~/", "é",
         "naïve", "café", "Straße", "中文", "日本語", "🙂", "👍🏽", "مرحبا", "Привет", "e\u0301", "’", "—",
         "“q”", "\u200d", "x\u0301y", "<|endoftext|>", "<|padding|>", "<|endoftext", "|>"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0",
          "\u2028", "\u0085", "\u3000", " \u00a0 ", "\x00", "\x7f", ""]


def _hf(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _texts(seed: int, n: int, ascii_only: bool) -> list[str]:
    rng = random.Random(seed)
    words = [w for w in WORDS if w.isascii()] if ascii_only else WORDS
    spaces = [s for s in SPACES if s.isascii()] if ascii_only else SPACES
    out = []
    for _ in range(n):
        pieces = []
        for _ in range(rng.randint(0, 12)):
            pieces.append(rng.choice(spaces))
            pieces.append(rng.choice(words) if rng.random() < 0.8 else chr(rng.randrange(128)))
        if rng.random() < 0.3:
            pieces.append(rng.choice(spaces))
        out.append("".join(pieces))
    # every ASCII character alone, doubled and between letters
    out += [chr(c) for c in range(128)] + [chr(c) * 2 for c in range(128)] + [f"a{chr(c)} b" for c in range(128)]
    return out


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_file(TINY)


def test_the_tiny_tokenizer_takes_the_fast_path():
    tok = build_tokenizer("HFTokenizer", TINY)
    assert isinstance(tok._fast, ByteLevelBPE)
    assert tok.encode("Hello world") == tok._impl.encode("Hello world", add_special_tokens=False).ids


@pytest.mark.parametrize("ascii_only", [True, False], ids=["ascii", "unicode"])
def test_ids_equal_tokenizers(tiny, ascii_only):
    texts = _texts(1234 if ascii_only else 99, 1500, ascii_only)
    assert ByteLevelBPE(tiny).encode_batch(texts) == _hf(tiny, texts)


def test_documents_with_added_tokens_and_empty_ones(tiny):
    texts = ["a<|endoftext|>b", "<|endoftext|>", "", " ", "x <|padding|> y é", "no special"]
    got = ByteLevelBPE(tiny).encode_batch(texts)
    assert got == _hf(tiny, texts)
    assert 0 in got[0]  # the special token's own id, as tokenizers gives it


def test_cut_points_split_unicode_documents_exactly(tiny):
    # Non-ASCII stretches sit between ASCII text; the cut rule must not change any piece.
    doc = "The café’s menu:\n  – naïve  \u00a0 ideas\u2028next line, 中文 text\t\tend. e\u0301 x\u0301y"
    assert ByteLevelBPE(tiny).encode_batch([doc, doc * 3]) == _hf(tiny, [doc, doc * 3])
    assert bytelevel_bpe.CUT.split("ab  c\nd") == ["ab", "  c", "\nd"]


def test_a_normal_form_normalizer_is_reproduced(tiny, tmp_path):
    spec = json.loads(tiny.to_str())
    spec["normalizer"] = {"type": "NFC"}
    path = tmp_path / "nfc.json"
    path.write_text(json.dumps(spec))
    tok = Tokenizer.from_file(str(path))
    assert ByteLevelBPE.applies(tok)
    texts = ["e\u0301 cafe\u0301 x", "Å A\u030a", *_texts(5, 300, False)]
    assert ByteLevelBPE(tok).encode_batch(texts) == _hf(tok, texts)


@pytest.mark.parametrize(
    "change",
    [
        {"normalizer": {"type": "Lowercase"}},
        {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}},
        {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}},
        {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}]}},
    ],
    ids=["lowercase", "prefix-space", "no-regex", "sequence"],
)
def test_other_tokenizers_keep_the_slow_path(tiny, tmp_path, change):
    spec = json.loads(tiny.to_str())
    spec.update(change)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(spec))
    assert not ByteLevelBPE.applies(Tokenizer.from_file(str(path)))
    tok = build_tokenizer("HFTokenizer", str(path))
    assert tok._fast is None
    assert tok.encode_batch(["Hello World"]) == _hf(tok._impl, ["Hello World"])


def test_bpe_dropout_keeps_the_slow_path(tiny, tmp_path):
    spec = json.loads(tiny.to_str())
    spec["model"]["dropout"] = 0.1
    path = tmp_path / "dropout.json"
    path.write_text(json.dumps(spec))
    assert not ByteLevelBPE.applies(Tokenizer.from_file(str(path)))


def test_a_full_cache_is_dropped_and_ids_stay_exact(tiny, monkeypatch):
    monkeypatch.setattr(bytelevel_bpe, "CACHE_LIMIT", 8)
    fast = ByteLevelBPE(tiny)
    texts = _texts(7, 200, True)
    assert fast.encode_batch(texts) == _hf(tiny, texts)
    assert len(fast.cache) <= 8 + 64  # cleared at the start of a document once over the limit
