"""Tokenizing a text only as far as ``cutoff_len`` keeps it, with exactly the ids of the whole text.

A row longer than ``cutoff_len`` keeps its first ``cutoff_len`` tokens. For BPE tokenizers of the
SentencePiece kind (Metaspace pieces, or Llama's ``▁`` normalizer) the text past that point need
not be tokenized at all, and nothing changes:

BPE starts from characters (byte pieces for a character outside the vocabulary) and only ever
joins two neighbouring symbols into a token of its vocabulary. Take two neighbouring characters
x, y that no token of the vocabulary holds side by side. No merge can join across them, so the
merges on either side are the ones BPE would make on that side alone. Therefore
``tokens(text[:p])`` is exactly the first part of ``tokens(text)``: p is a *barrier*. In Llama's
vocabulary ``▁`` only starts a token or follows another ``▁``, so every space that follows a
non-space is a barrier, and so is either side of a character that falls back to bytes (CJK text
is mostly barriers).

A long row is tokenized up to a barrier a little past where the cutoff is expected to land. If
that gives too few tokens, the text from that barrier on to a later barrier is tokenized and
appended, which is as exact. Pieces are tokenized by the same model behind a pre-tokenizer (or
normalizer) that puts no ``▁`` before a text, as the middle of a text has none. The caller
checks the result anyway: the ids must spell the tokenized part of the text, byte for byte
(surface.py).

Added tokens (``<s>``, ``<|im_start|>`` ...) split the text before BPE sees it, and each run of
text between them is tokenized on its own, so the start of an added token is always an exact cut,
and so is a barrier inside a run of text (the run's start gets the same treatment, a ``▁`` or
not, either way). A chat row, whose markup is added tokens, is cut at the first barrier or added
token past where the cutoff is expected to land, and grown from there a stretch at a time: text up
to the next added token by the continuation tokenizer (which has no added tokens), markup and
text from an added token on by the tokenizer itself. The first cut guesses dense text (1.5
characters a token; Llama 2 spells English chat at ~2.3), because a row that falls short costs
one more short round while a cut too far costs tokens that are thrown away; a row's own density
then says how far each later round goes. Added tokens that take the white space beside them
(``lstrip``/``rstrip``) or need word bounds (``single_word``) make no cut sure: such a tokenizer's
texts are tokenized whole. The text of a tokenizer whose rules
this module cannot vouch for is never cut: dropout, ``ignore_merges``, subword prefixes, fused unknown characters
or other pre-tokenizers. Those rows are tokenized whole.
"""
from __future__ import annotations

import itertools
import re

from .state import SPACE_MARK, component, space_rules

_SPACE = " "
_LEADING_SPACE = re.compile(r"\s*")  # \s is what str.isspace() calls white space


def _continuation(backend, pre: dict | None, replaces: bool):
    """A tokenizer sharing ``backend``'s model that puts nothing before a text: the normalizer
    without ``Prepend``, Metaspace with ``prepend_scheme: never``, no post-processor and no added
    tokens (pieces never reach an added token)."""
    from tokenizers import Tokenizer as RustTokenizer, normalizers, pre_tokenizers

    cont = RustTokenizer(backend.model)
    if pre is not None:
        cont.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre.get("replacement", "▁"),
                                                      prepend_scheme="never", split=pre.get("split", True))
    if replaces:
        cont.normalizer = normalizers.Replace(_SPACE, "▁")
    return cont


def find_barrier(text: str, p: int, limit: int, crossing: set[str], meta: str | None) -> int | None:
    """The first barrier at or after ``p`` and before ``limit`` (None if there is none): a position
    whose two neighbouring characters (a space read as ``meta``) no token holds side by side."""
    p = max(p, 1)
    while p < limit:
        a, b = text[p - 1], text[p]
        if meta:
            a, b = (meta if a == _SPACE else a), (meta if b == _SPACE else b)
        if a + b not in crossing:
            return p
        p += 1
    return None


class PrefixEncoder:
    """Encodes texts up to a barrier past ``need`` tokens; see the module docstring."""

    def __init__(self, backend, continuation, *, crossing: set[str], meta: str | None, added: list[str]):
        self.backend = backend
        self.continuation = continuation  # the same model with nothing put before a text
        self.crossing = crossing  # "xy": some token of the vocabulary holds x and y side by side
        self.meta = meta  # what a space becomes before BPE sees it ("▁"), or None
        self._added = re.compile("|".join(map(re.escape, sorted(added, key=len, reverse=True)))) if added else None

    @classmethod
    def for_backend(cls, backend, vocab: dict[str, int] | None = None) -> "PrefixEncoder | None":
        """The encoder for ``backend`` (``vocab``: its get_vocab(), if at hand), or None when
        this module cannot vouch for cutting its texts."""
        model = backend.model
        if type(model).__name__ != "BPE":
            return None
        if model.dropout or model.ignore_merges or model.continuing_subword_prefix or model.end_of_word_suffix:
            return None
        if model.fuse_unk and not model.byte_fallback:
            return None  # unknown neighbours would fuse across any barrier
        replaces = space_rules(component(backend.normalizer))
        pre = component(backend.pre_tokenizer)
        if replaces is None:
            return None
        meta = SPACE_MARK if replaces else None
        if pre is not None:
            if pre.get("type") != "Metaspace" or meta is not None:
                return None
            meta = pre.get("replacement", "▁")
        tokens = list(backend.get_added_tokens_decoder().values())
        added = [t.content for t in tokens]
        if any(_SPACE in a or (meta and meta in a) for a in added):
            return None
        if any(t.lstrip or t.rstrip or t.single_word for t in tokens):
            return None  # such a token takes white space (or needs word bounds) beside it: no cut there is sure
        if vocab is None:
            vocab = backend.get_vocab(with_added_tokens=True)
        crossing = {t[i:i + 2] for t in vocab if len(t) > 1 for i in range(len(t) - 1)}
        from .metaspace import PreSpaced

        continuation = _continuation(backend, pre, replaces=pre is None and meta is not None)
        return cls(PreSpaced.of(backend) or backend, PreSpaced.of(continuation) or continuation,
                   crossing=crossing, meta=meta, added=added)

    def barrier(self, text: str, p: int, limit: int) -> int | None:
        """The first barrier at or after ``p`` and before ``limit``, or None."""
        return find_barrier(text, p, limit, self.crossing, self.meta)

    def limit(self, text: str) -> int:
        """Where cutting must stop: the first added token in ``text`` (or its end)."""
        if self._added is None:
            return len(text)
        m = self._added.search(text)
        return m.start() if m else len(text)

    def next_added(self, text: str, p: int) -> int:
        """Where the first added token at or after ``p`` starts (or the text's end): always a cut
        that changes no id, because added tokens split the text before BPE sees it."""
        m = self._added.search(text, p) if self._added is not None else None
        return m.start() if m else len(text)

    def encode(self, texts: list[str], need: int, *, add_special_tokens: bool, n_pre: int, n_post: int
               ) -> tuple[list[list[int]], list[int]]:
        """Ids for each text and how many of its characters they cover (``len(text)`` when all).

        A text covered only in part holds at least ``need`` tokens besides the ``n_pre``/``n_post``
        ones the post-processor adds, and its ids are the first ids of the whole text.
        """
        ends = [self._first_cut(t, need) for t in texts]
        encs = self.backend.encode_batch_fast([t[:e] for t, e in zip(texts, ends)],
                                              add_special_tokens=add_special_tokens)
        rows = [e.ids for e in encs]
        extra = n_pre + n_post
        for rnd in itertools.count():  # from round ROUNDS on, each takes all that is left
            short = [i for i, (t, e) in enumerate(zip(texts, ends)) if e < len(t) and len(rows[i]) - extra < need]
            if not short:
                break
            plain, marked = [], []
            for i in short:
                t, e, have = texts[i], ends[i], len(rows[i]) - extra
                # the row's own density so far says how far the missing tokens reach, plus a margin
                reach = len(t) if rnd >= self.ROUNDS else e + int((need - have) * e / max(have, 1) * self.MARGIN) + 8
                added = self.next_added(t, e)
                if e < added:  # inside a run of text: on to a barrier, or to the added token (the continuation)
                    nxt = self._text_cut(t, e, max(reach, e + 1), added)
                    plain.append((i, added if nxt is None else nxt))
                else:  # at an added token: markup and text, the tokenizer itself, to the next cut past reach
                    marked.append((i, self._cut(t, max(reach, e + 1))))
            for group, encoder in ((plain, self.continuation), (marked, self.backend)):
                pieces = encoder.encode_batch_fast([texts[i][ends[i]:nxt] for i, nxt in group],
                                                   add_special_tokens=False)
                for (i, nxt), enc in zip(group, pieces):
                    row = rows[i]
                    rows[i] = row[:len(row) - n_post] + enc.ids + row[len(row) - n_post:]
                    ends[i] = nxt
        return rows, ends

    # The first cut's guess of characters per token for ASCII text (other scripts: one a token),
    # the margin over a row's own density in later rounds, and the round from which a row takes
    # all that is left. Each encode call has a cost of its own, so a generous first guess pays:
    # with the Llama 2 tokenizer, on 20,000 alpaca rows (cutoff 256) and 20,000 ChatML
    # conversations (cutoff 1024), these make 140 and 200 calls over 10.59M and 28.19M characters;
    # (1.5, 1.1, round 4) made 278 and 400 calls over 10.48M and 28.07M characters, and spent 16%
    # more time in the tokenizer on the alpaca rows.
    ASCII_CHARS_PER_TOKEN = 4.0
    MARGIN = 1.25
    ROUNDS = 2

    def _first_cut(self, text: str, need: int) -> int:
        """An exact cut where ``need`` tokens are expected to end, from a density guess."""
        n = len(text)
        if n <= need:  # too short for a cut to save anything
            return n
        wide = 0 if text.isascii() else (len(text.encode("utf-8")) - n) / 2
        tokens_per_char = ((n - wide) / self.ASCII_CHARS_PER_TOKEN + wide) / n
        reach = int(need / tokens_per_char)
        return n if reach >= n else self._cut(text, reach)

    def _cut(self, text: str, p: int) -> int:
        """The first exact cut at or after ``p``: a barrier inside a run of text (between added
        tokens), or the start of an added token, or the end of the text."""
        if p >= len(text):
            return len(text)
        if self._added is None:
            return self._text_cut(text, 0, p, len(text)) or len(text)
        prev = 0  # where the run of text holding p starts
        for m in self._added.finditer(text):
            if m.start() >= p:
                return self._text_cut(text, prev, p, m.start()) or m.start()
            prev, p = m.end(), max(p, m.end())  # p inside an added token: the run after it
        return self._text_cut(text, prev, p, len(text)) or len(text)

    def _text_cut(self, text: str, start: int, p: int, end: int) -> int | None:
        """A barrier at or after ``p`` inside the run of text ``text[start:end]``, with something
        besides white space on both sides of it (an added token that strips the white space next
        to it then never sees a cut there), or None."""
        lo = _LEADING_SPACE.match(text, start, end).end()  # the run's first character that is not white space
        hi = end
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        lo = max(p, lo + 1)
        return self.barrier(text, lo, hi) if lo < hi else None
