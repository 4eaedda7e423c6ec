"""Text from the data is text: special-token strings become control tokens only in the markup.

A template's own markup (``<|im_start|>``, ``[INST]``, the BOS it writes) must become control
tokens. The same string inside a document, an instruction or a message is ordinary text
(nanoGPT's ``encode_ordinary``; transformers' ``split_special_tokens=True``): a user message holding
``<|im_end|>`` must not end its turn. The template step says which characters came from the data
(``data`` ranges per row); a special-token match that overlaps them is text.

Rows whose data holds no special-token string (nearly all) are encoded as before. The others are
encoded the way the tokenizer itself treats its added tokens: the text is split at the markup
tokens, and each piece in between is encoded on its own with special tokens read as text
(Hugging Face runs its normalizer and pre-tokenizer on each piece separately as well; Metaspace's
``prepend_scheme: first`` prepends only to the piece at the start of the text, and an added
token's ``lstrip``/``rstrip`` takes the white space next to it).
"""
from __future__ import annotations

import re

import numpy as np

Ranges = list[tuple[int, int]]


_FIRSTS: dict[re.Pattern, tuple[str, int]] = {}  # pattern -> (first characters of its strings, longest)


def special_pattern(strings) -> re.Pattern | None:
    """Leftmost-longest matching of the given strings, as the tokenizers' added vocabulary does."""
    strings = sorted({s for s in strings if s}, key=len, reverse=True)
    if not strings:
        return None
    pattern = re.compile("|".join(map(re.escape, strings)))
    _FIRSTS[pattern] = ("".join(sorted({s[0] for s in strings})), len(strings[0]))
    return pattern


def _may_hold(text: str, ranges: Ranges, firsts: str, longest: int) -> bool:
    """Whether a special-token string could overlap a range: one that does starts less than
    ``longest`` characters before the range's start, or inside it, with one of ``firsts``."""
    return any(text.find(f, max(0, a - longest + 1), b) >= 0 for a, b in ranges if b > a for f in firsts)


def _overlaps(a: int, b: int, ranges: Ranges) -> bool:
    return any(a < e and b > s for s, e in ranges)


def markup_matches(text: str, pattern: re.Pattern | None, data: Ranges | None) -> list[re.Match]:
    """The special-token matches in ``text`` that lie outside its data ranges."""
    if pattern is None:
        return []
    found = list(pattern.finditer(text))
    return found if not data else [m for m in found if not _overlaps(m.start(), m.end(), data)]


def rows_with_data_specials(texts: list[str], pattern: re.Pattern | None, data: list[Ranges] | None) -> list[int]:
    """Rows where a special-token string lies (in part) inside the data: they need ``encode_pieces``.

    One regex pass over the batch's texts joined by a character no special-token string holds
    (a match never spans two rows), then every match against the data ranges at once: the
    last range starting before a match ends must end after the match starts (~10x faster than
    a Python test per match; a chat batch holds ~10 markup matches per row)."""
    if pattern is None or data is None or not any(data):
        return []
    if pattern in _FIRSTS:  # most rows cannot hold one: search only the others (str.find is memchr)
        firsts, longest = _FIRSTS[pattern]
        keep = [r for r, (text, ranges) in enumerate(zip(texts, data)) if _may_hold(text, ranges, firsts, longest)]
        found = _search([texts[r] for r in keep], pattern, [data[r] for r in keep]) if keep else []
        return [keep[r] for r in found]
    return _search(texts, pattern, data)


def _search(texts: list[str], pattern: re.Pattern, data: list[Ranges]) -> list[int]:
    sep = next((c for c in "\x00\x01\x02\x03\x04" if not pattern.search(c) and c not in pattern.pattern), None)
    if sep is None:  # every candidate separator is part of a special string: test row by row
        return [r for r, (text, ranges) in enumerate(zip(texts, data))
                if ranges and any(_overlaps(m.start(), m.end(), ranges) for m in pattern.finditer(text))]
    spans = np.array([m.span() for m in pattern.finditer(sep.join(texts))], dtype=np.int64).reshape(-1, 2)
    if not len(spans):
        return []
    base = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1, out=base[1:])
    counts = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    flat = np.array([x for ranges in data for a, b in ranges for x in (a, b)], dtype=np.int64).reshape(-1, 2)
    flat += np.repeat(base[:-1], counts)[:, None]
    flat = flat[flat[:, 1] > flat[:, 0]]
    if not len(flat):
        return []
    flat = flat[np.argsort(flat[:, 0], kind="stable")]
    reach = np.maximum.accumulate(flat[:, 1])  # the furthest end of the ranges starting so far
    k = np.searchsorted(flat[:, 0], spans[:, 1], side="left") - 1  # ranges starting before the match ends
    hit = (k >= 0) & (reach[np.maximum(k, 0)] > spans[:, 0])
    rows = np.searchsorted(base, spans[hit, 0], side="right") - 1
    return sorted(set(rows.tolist()))


class PieceEncoder:
    """Encodes a text split at its markup tokens, each piece with special tokens read as text.

    ``first``/``later``: ``tokenizers`` backends with ``encode_special_tokens`` set, for the piece at
    the start of the text and for the others (Metaspace ``prepend_scheme: never`` when the backend's
    is ``first``). ``strip``: per special string, whether it takes the white space to its left/right.
    """

    def __init__(self, backend, first, later, pattern: re.Pattern, strip: dict[str, tuple[bool, bool]]):
        self.backend, self.first, self.later, self.pattern, self.strip = backend, first, later, pattern, strip

    @classmethod
    def for_backend(cls, backend, ordinary) -> "PieceEncoder | None":
        from tokenizers import Tokenizer as RustTokenizer, pre_tokenizers

        from .state import component

        specials = {t.content: t for t in backend.get_added_tokens_decoder().values() if t.special}
        pattern = special_pattern(specials)
        if pattern is None:
            return None
        later = ordinary
        pre = component(backend.pre_tokenizer)
        if pre is not None and pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "first":
            later = RustTokenizer.from_str(ordinary.to_str())
            later.encode_special_tokens = True
            later.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre.get("replacement", "▁"),
                                                           prepend_scheme="never", split=pre.get("split", True))
        strip = {s: (bool(t.lstrip), bool(t.rstrip)) for s, t in specials.items()}
        return cls(backend, ordinary, later, pattern, strip)

    def encode(self, text: str, data: Ranges, *, special: bool, n_pre: int, n_post: int
               ) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and char offsets of ``text`` (BOS/EOS of the post-processor at (0, 0))."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        pos = 0
        matches = markup_matches(text, self.pattern, data)
        for k, m in enumerate(matches + [None]):
            end = m.start() if m is not None else len(text)
            start = pos
            if m is not None and self.strip[m.group()][0]:
                end = len(text[start:end].rstrip()) + start
            if end > start:
                enc = (self.first if start == 0 else self.later).encode(text[start:end], add_special_tokens=False)
                ids += enc.ids
                offsets += [(a + start, b + start) for a, b in enc.offsets]
            if m is None:
                break
            ids.append(self.backend.token_to_id(m.group()))
            offsets.append((m.start(), m.end()))
            pos = m.end()
            if self.strip[m.group()][1]:
                pos = len(text) - len(text[pos:].lstrip())
        if special and (n_pre or n_post):
            around = self.backend.encode("", add_special_tokens=True).ids
            ids = around[:n_pre] + ids + around[len(around) - n_post:]
            offsets = [(0, 0)] * n_pre + offsets + [(0, 0)] * n_post
        return ids, offsets
