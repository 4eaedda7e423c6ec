"""The spelled path's marks, computed on one batch's texts laid end to end, in bytes.

``surface.py`` knows the bytes each id spells. Laying a batch's rows end to end, token k covers
``[start[k], end[k])`` of one byte stream (a running sum of those byte lengths), and row r's text
starts at ``base[r]`` (after the one leading space a tokenizer may add). A supervised span is then
a range of the same stream, and because both tokens and spans are sorted along it, the tokens a
span covers are found by two binary searches per span, not one per token. The marks follow the
rule of mask.py exactly: a token that spells text is supervised when it overlaps a span; a
zero-width one (the post-processor's BOS/EOS, a bare leading ``▁``) takes the label of the next
token of its row that spells text, unless it is a special token.

The check is independent of that search: it marks the stream's bytes that lie in a span (a
running count over the bytes), and every token that spells text must be supervised exactly when
one of its bytes is marked. A supervised zero-width token must be followed in its row by a
supervised token.

On 20,000 ChatML conversations (12.5M tokens) this takes a small fraction of the per-token
search it replaces (``mask.mark``, which the offsets path still uses).
"""
from __future__ import annotations

import numpy as np

from ..columns import row_offsets


class Spelled:
    """Token and row positions in the batch's byte stream (see the module docstring)."""

    __slots__ = ("start", "end", "surf", "row_start", "base", "wide")

    def __init__(self, start, end, surf, row_start, base, wide):
        self.start, self.end, self.surf = start, end, surf  # per token (start clipped to its row's base)
        self.row_start = row_start  # where each row's tokens start (n + 1)
        self.base = base  # where each row's text starts in the stream
        self.wide = wide  # _Wide: the rows outside ASCII, or None for an ASCII batch

    @classmethod
    def of(cls, surfaces, ids: np.ndarray, lengths: np.ndarray, texts: list[str], *, n_pre: int, n_post: int
           ) -> "Spelled | None":
        """The positions, or None when the ids do not spell the texts byte for byte (one leading
        space added by the tokenizer allowed)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        row_start = row_offsets(lengths)
        surf = surfaces.lengths[ids].astype(np.int64)
        if n_pre or n_post:
            _zero_added(surf, row_start, lengths, n_pre, n_post)
        end = np.cumsum(surf)
        start = end - surf
        before = np.zeros(len(lengths) + 1, dtype=np.int64)
        before[1:] = np.concatenate([[0], end])[row_start[1:]]
        spelled = np.diff(before)
        joined = "".join(texts)
        raw = joined.encode("utf-8")
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        wide = None
        if len(raw) != len(joined):
            wide = _Wide(texts)
            sizes[wide.rows] = wide.sizes
        text_start = row_offsets(sizes)
        extra = spelled - np.diff(text_start)
        if np.any((extra != 0) & (extra != 1)):
            return None
        if not _spells(surfaces, ids, start, surf, raw, text_start, extra):
            return None
        base = before[:-1] + extra
        out = cls(start, end, surf, row_start, base, wide)
        spaced = np.flatnonzero(extra)
        if len(spaced):  # the token spelling the added space starts where the text does
            first = np.searchsorted(end, before[spaced], side="right")
            start[first] = base[spaced]
        return out

    def bytes_of(self, rows: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """Stream positions of character offsets ``chars`` in the texts of ``rows``."""
        out = self.base[rows] + chars
        if self.wide is not None:
            k = self.wide.index[rows]
            sel = np.flatnonzero(k >= 0)
            out[sel] = self.base[rows[sel]] + self.wide.bytes_before(k[sel], chars[sel])
        return out

    def offsets(self) -> np.ndarray:
        """(n_tokens, 2) byte offsets into each row's text (zero-width tokens at (0, 0))."""
        row = np.repeat(np.arange(len(self.base)), np.diff(self.row_start))
        out = np.stack([self.start, self.end], axis=1) - self.base[row][:, None]
        np.maximum(out, 0, out=out)
        out[self.start == self.end] = 0
        return out

    def span_bytes(self, spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
        """The stream ranges [a, b) of each row's non-empty character ``spans``."""
        counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
        flat = np.array([x for row in spans for ab in row for x in ab], dtype=np.int64).reshape(-1, 2)
        span_row = np.repeat(np.arange(len(spans)), counts)
        keep = flat[:, 1] > flat[:, 0]
        span_row, flat = span_row[keep], flat[keep]
        return self.bytes_of(span_row, flat[:, 0]), self.bytes_of(span_row, flat[:, 1])

    def mark(self, spans: list[list[tuple[int, int]]], special_ids, ids: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Supervised tokens for each row's character ``spans``, and the rows whose marks fail
        the independent check (empty unless something is wrong)."""
        n = len(self.start)
        a, b = self.span_bytes(spans)
        # tokens that end after a span starts and start before it ends: a contiguous run
        first = np.searchsorted(self.end, a, side="right")
        stop = np.searchsorted(self.start, b, side="left")
        ok = first < stop
        delta = np.bincount(first[ok], minlength=n + 1)[:n + 1] - np.bincount(stop[ok], minlength=n + 1)[:n + 1]
        sup = np.cumsum(delta[:n]) > 0
        zero = np.flatnonzero(self.start == self.end)
        if len(zero):
            nxt, same_row = self._next_spelled(zero)
            special = np.isin(ids[zero], np.fromiter(special_ids, dtype=np.int64))
            sup[zero] = ~special & same_row & sup[np.minimum(nxt, n - 1)]
        return sup, self.check(sup, a, b)

    def _next_spelled(self, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For zero-width tokens: the next token that spells text, and whether it is in the same row."""
        n = len(self.start)
        width = self.end - self.start
        nxt = zero + 1
        for _ in range(16):  # runs of zero-width tokens are short (BOS, EOS, a bare leading ▁)
            more = nxt < n
            more[more] = width[nxt[more]] == 0
            if not more.any():
                break
            nxt[more] += 1
        else:  # a long run: the next spelled token by a running minimum from the end
            pos = np.where(width > 0, np.arange(n), n)
            nxt = np.minimum.accumulate(pos[::-1])[::-1][zero]
        rows = np.searchsorted(self.row_start, zero, side="right") - 1
        same = (nxt < n) & (nxt < self.row_start[rows + 1])
        return nxt, same

    def check(self, sup: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[int]:
        """Rows where the marks ``sup`` break the rule for the stream ranges [a, b), by a lookup
        over the stream's bytes: a token that spells text is supervised exactly when one of its
        bytes lies in a range, and a supervised zero-width token is followed in its row by a
        supervised token."""
        total = int(max(self.end[-1] if len(self.end) else 0, b.max() if len(b) else 0))
        depth = np.zeros(total + 1, dtype=np.int32)
        np.add.at(depth, a, 1)
        np.add.at(depth, b, -1)
        inside = np.zeros(total + 1, dtype=np.int32)  # span bytes before each position
        np.cumsum(depth[:total], out=depth[:total])  # spans over each byte
        np.cumsum(depth[:total] > 0, out=inside[1:], dtype=np.int32)
        spells = self.end > self.start
        wrong = np.flatnonzero(spells & ((inside[self.end] > inside[self.start]) != sup))
        zero = np.flatnonzero(~spells & sup)
        if len(zero):
            nxt, same_row = self._next_spelled(zero)
            followed = same_row & sup[np.minimum(nxt, len(sup) - 1)]
            wrong = np.concatenate([wrong, zero[~followed]])
        if not len(wrong):
            return []
        return sorted(set((np.searchsorted(self.row_start, wrong, side="right") - 1).tolist()))


class _Wide:
    """UTF-8 offsets in the rows that hold characters outside ASCII, from their code points."""

    def __init__(self, texts: list[str]):
        self.rows = np.flatnonzero(np.fromiter((not t.isascii() for t in texts), dtype=bool, count=len(texts)))
        picked = [texts[r] for r in self.rows.tolist()]
        points = np.frombuffer("".join(picked).encode("utf-32-le"), dtype=np.uint32)
        width = np.ones(len(points), dtype=np.uint8)  # UTF-8 bytes of each character (bytes: a third of int64's time)
        width += points >= 0x80
        width += points >= 0x800
        width += points >= 0x10000
        dtype = np.int32 if len(points) < 2**29 else np.int64  # 4 bytes a character at most
        self.byte_at = np.zeros(len(points) + 1, dtype=dtype)  # UTF-8 bytes before each character
        np.cumsum(width, out=self.byte_at[1:], dtype=dtype)
        self.char_base = row_offsets(np.fromiter(map(len, picked), dtype=np.int64, count=len(picked)))
        self.sizes = np.diff(self.byte_at[self.char_base])
        self.index = np.full(len(texts), -1, dtype=np.int64)  # row -> its place among these rows
        self.index[self.rows] = np.arange(len(self.rows))

    def bytes_before(self, k: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """UTF-8 bytes of the first ``chars`` characters of the ``k``-th of these rows."""
        base = self.char_base[k]
        return self.byte_at[base + chars] - self.byte_at[base]


def _zero_added(surf: np.ndarray, row_start: np.ndarray, lengths: np.ndarray, n_pre: int, n_post: int) -> None:
    """The post-processor's tokens (``n_pre`` first and ``n_post`` last of each row) spell nothing."""
    for i in range(n_pre):
        surf[row_start[:-1][lengths > i] + i] = 0
    for i in range(n_post):
        surf[row_start[1:][lengths > n_pre + i] - 1 - i] = 0


def _spells(surfaces, ids, start, surf, raw: bytes, text_start: np.ndarray, extra: np.ndarray) -> bool:
    """Whether the bytes the ids spell, row after row, are the texts' bytes (with the one leading
    space a tokenizer may add where ``extra``)."""
    total = int(surf.sum())
    idx = np.int32 if total < 2**31 else np.int64
    gather = np.repeat(surfaces.starts[ids].astype(idx) - start.astype(idx), surf)
    gather += np.arange(total, dtype=idx)
    stream = surfaces.flat[gather]
    text = np.frombuffer(raw, dtype=np.uint8)
    spaced = np.flatnonzero(extra)
    if len(spaced):
        text = np.insert(text, text_start[spaced], 32)
    return len(stream) == len(text) and np.array_equal(stream, text)
