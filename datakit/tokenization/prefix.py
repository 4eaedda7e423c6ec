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

Added tokens (``<s>``, ``<|im_start|>`` ...) split the text before BPE sees it, so the start of an
added token is always an exact cut: a chat row, whose markup is added tokens, is cut before the
first markup token past where the cutoff is expected to land, and grown from there one stretch of
markup and text at a time by the tokenizer itself (the continuation tokenizer, which has no
added tokens, only ever sees text before the first one). The text of a tokenizer whose rules
this module cannot vouch for is never cut: dropout, ``ignore_merges``, subword prefixes, fused unknown characters
or other pre-tokenizers. Those rows are tokenized whole.
"""
from __future__ import annotations

import itertools
import re

from .state import SPACE_MARK, component, space_rules

_SPACE = " "


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
        added = [t.content for t in backend.get_added_tokens_decoder().values()]
        if any(_SPACE in a or (meta and meta in a) for a in added):
            return None
        if vocab is None:
            vocab = backend.get_vocab(with_added_tokens=True)
        crossing = {t[i:i + 2] for t in vocab if len(t) > 1 for i in range(len(t) - 1)}
        return cls(backend, _continuation(backend, pre, replaces=pre is None and meta is not None),
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
        for rnd in itertools.count():  # from the third round on, each takes all that is left
            last = rnd >= 2
            short = [i for i, (t, e) in enumerate(zip(texts, ends)) if e < len(t) and len(rows[i]) - extra < need]
            if not short:
                break
            grow = []
            for i in short:
                t, e, have = texts[i], ends[i], len(rows[i]) - extra
                limit = self.limit(t)
                # the row's own density so far says how far the missing tokens reach, plus a margin
                reach = len(t) if last else e + int((need - have) * e / max(have, 1) * 1.25) + 8
                if e < limit:  # up to a barrier, or to the first added token (text alone: the continuation)
                    nxt = self.barrier(t, reach, limit) if reach < limit else None
                    grow.append(limit if nxt is None else nxt)
                else:  # from an added token to the next one at or past reach (markup and text: the tokenizer)
                    grow.append(self.next_added(t, max(reach, e + 1)))
            plain = [(i, nxt) for i, nxt in zip(short, grow) if ends[i] < self.limit(texts[i])]
            marked = [(i, nxt) for i, nxt in zip(short, grow) if ends[i] >= self.limit(texts[i])]
            for group, encoder in ((plain, self.continuation), (marked, self.backend)):
                pieces = encoder.encode_batch_fast([texts[i][ends[i]:nxt] for i, nxt in group],
                                                   add_special_tokens=False)
                for (i, nxt), enc in zip(group, pieces):
                    row = rows[i]
                    rows[i] = row[:len(row) - n_post] + enc.ids + row[len(row) - n_post:]
                    ends[i] = nxt
        return rows, ends

    def _first_cut(self, text: str, need: int) -> int:
        """A barrier where ``need`` tokens are expected to end, from a density guess: ASCII text
        runs about 4 characters a token, other scripts about one."""
        n = len(text)
        if n <= need:  # too short for a cut to save anything
            return n
        wide = 0 if text.isascii() else (len(text.encode("utf-8")) - n) / 2
        tokens_per_char = ((n - wide) * 0.25 + wide) / n
        reach = int(need / tokens_per_char)
        if reach >= n:
            return n
        limit = self.limit(text)
        if reach >= limit:  # past the first added token (a chat row's markup): cut before the next one
            return self.next_added(text, reach)
        cut = self.barrier(text, reach, limit)
        return limit if cut is None else cut
