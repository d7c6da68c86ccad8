"""An exact fast path for GPT-2-style byte-level BPE tokenizers on ASCII documents.

Hugging Face ``tokenizers`` spends most of its time on such tokenizers in the byte-level
pre-tokenizer (a Unicode regex over the text plus per-piece bookkeeping), not in BPE: words repeat
(Zipf's law), so the merges of one distinct word are cheap next to splitting the whole text. On
ASCII text the GPT-2 split rule is a plain ASCII regex that Python's ``re`` runs fast, and each
distinct word needs BPE once. So this splits with ``re``, looks every word up in a cache, and
asks the tokenizer's *own* BPE model (``Tokenizer.model.tokenize``) only for words it has not
seen. The ids come from the same model doing the same merges on the same pieces, so the output
equals ``Tokenizer.encode(text, add_special_tokens=False)`` exactly whenever the fast path
applies (tests/unit/test_bytelevel_bpe.py checks every ASCII character class against it):

- the pre-tokenizer is ``ByteLevel(add_prefix_space=False, use_regex=True)`` alone;
- the normalizer is none or a Unicode normal form (the identity on ASCII);
- the model is BPE without dropout;
- the document holds no added token's text (``tokenizers`` splits those out before pre-tokenizing,
  and some absorb the whitespace around them; such documents go through ``tokenizers`` whole).

A document with non-ASCII characters is cut where both tokenizations must cut: before an ASCII
whitespace character that follows a printable ASCII one. There the current piece (letters,
digits, punctuation or a contraction) ends in either, the next match starts afresh (the rule has
no look-behind), and the Unicode normal forms cannot compose across the cut. The stretches with
non-ASCII characters go through ``tokenizers``; the ASCII ones take the fast path.

Upstream GPT-NeoX calls ``encode`` once per document; this is what makes ``preprocess_data.py``
several times faster per core on English corpora.
"""

from __future__ import annotations

import itertools
import json
import re

# HF's byte-level split rule, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
# restricted to ASCII: \p{L} = letters, \p{N} = digits, and \s = Unicode White_Space, which in ASCII is
# tab, line feed, vertical tab, form feed, carriage return and space (not the \x1c-\x1f separators
# that Python's own \s would also match).
_WS = r"\t\n\x0b\x0c\r "
ASCII_SPLIT = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)

# Where a document may be cut (see the module docstring): before ASCII whitespace that follows a
# printable ASCII character.
CUT = re.compile(rf"(?<=[!-~])(?=[{_WS}])")

# Drop the word cache when it grows past this many entries (bounded memory on huge corpora; the
# frequent words come back within a few documents).
CACHE_LIMIT = 1 << 20

_NORMAL_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (for the ASCII bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return {b: mapping[b] for b in range(128)}


_TRANSLATE = str.maketrans(_byte_to_unicode())


class ByteLevelBPE:
    """``encode_batch`` for one ``tokenizers.Tokenizer``; see the module docstring."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.model = tokenizer.model
        spec = json.loads(tokenizer.to_str())
        contents = sorted({t["content"] for t in spec.get("added_tokens") or []}, key=len, reverse=True)
        self.added = re.compile("|".join(map(re.escape, contents))) if contents else None
        self.cache: dict[str, list[int]] = {}

    @staticmethod
    def applies(tokenizer) -> bool:
        """Can the fast path reproduce this tokenizer exactly (on ASCII documents)?"""
        spec = json.loads(tokenizer.to_str())
        pre, norm, model = spec.get("pre_tokenizer") or {}, spec.get("normalizer"), spec.get("model") or {}
        return (
            pre.get("type") == "ByteLevel"
            and not pre.get("add_prefix_space", True)
            and pre.get("use_regex", True)
            and (norm is None or norm.get("type") in _NORMAL_FORMS)
            and model.get("type") == "BPE"
            and not model.get("dropout")
        )

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # Each document is a list of parts: id lists (fast path) or indices into `slow` (texts that
        # `tokenizers` encodes, all in one batch call).
        parts: list[list[list[int] | int]] = []
        slow: list[str] = []
        for text in texts:
            if text.isascii() and not (self.added and self.added.search(text)):
                parts.append([self._encode_ascii(text)])
            elif self.added and self.added.search(text):
                parts.append([len(slow)])
                slow.append(text)
            else:
                doc: list[list[int] | int] = []
                for ascii_run, group in itertools.groupby(CUT.split(text), key=str.isascii):
                    stretch = "".join(group)
                    if ascii_run:
                        doc.append(self._encode_ascii(stretch))
                    else:
                        doc.append(len(slow))
                        slow.append(stretch)
                parts.append(doc)
        if slow:
            batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
            encoded = [e.ids for e in batch(slow, add_special_tokens=False)]
        out = []
        for doc in parts:
            if len(doc) == 1:
                out.append(doc[0] if isinstance(doc[0], list) else encoded[doc[0]])
            else:
                ids: list[int] = []
                for part in doc:
                    ids.extend(part if isinstance(part, list) else encoded[part])
                out.append(ids)
        return out

    def _encode_ascii(self, text: str) -> list[int]:
        cache, ids = self.cache, []
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        get, extend = cache.get, ids.extend
        for word in ASCII_SPLIT.findall(text):
            pieces = get(word)
            if pieces is None:
                pieces = [t.id for t in self.model.tokenize(word.translate(_TRANSLATE))]
                cache[word] = pieces
            extend(pieces)
        return ids
