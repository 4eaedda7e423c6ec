"""Which tokens are supervised, from the character spans a template marks, for a whole batch at once.

The rule (the same on every backend and strategy, see spans.py):

- A token is supervised when its range of the text overlaps a supervised span of its row. A token
  that straddles a span's start belongs to the span, because the model must generate it to emit
  the span's first characters: Mistral's first answer token ``▁Hello`` holds the space before the
  answer, and a byte-level token may hold a space and the first bytes of an emoji.
- A token that spells no text of its own (zero width) takes the label of the next token of its row
  that does: SentencePiece's bare dummy-prefix ``▁`` before an answer that starts with a digit,
  CJK, an emoji or a newline is what the model emits first.
- Special tokens that spell no text (the BOS/EOS a post-processor adds) are never supervised.

Ranges are in whatever unit the caller gives both in (bytes on the spelled path, characters on
the offsets path). Spans of one row must not overlap; empty spans mark nothing.
"""
from __future__ import annotations

import numpy as np

from .base import Encoded

_ROW = np.int64(1) << np.int64(40)  # row key stride: longer than any text (1 TB of characters)


def tokens_in_spans(tok_row, tok_start, tok_end, span_row, span_start, span_end) -> np.ndarray:
    """Bool per token: [tok_start, tok_end) is non-empty and overlaps a span of the same row."""
    tok_row, tok_start, tok_end = (np.asarray(a, dtype=np.int64) for a in (tok_row, tok_start, tok_end))
    span_row, span_start, span_end = _nonempty(span_row, span_start, span_end)
    if len(span_row) == 0:
        return np.zeros(len(tok_row), dtype=bool)
    if _one_span_per_row(span_row, tok_row):  # alpaca rows: span i belongs to row i
        return (tok_start < span_end[tok_row]) & (tok_end > span_start[tok_row]) & (tok_end > tok_start)
    # the last span of the row that starts before the token ends; an earlier one ends before it starts
    key = span_row * _ROW + span_start
    order = np.argsort(key, kind="stable")
    key, s_row, s_end = key[order], span_row[order], span_end[order]
    k = np.searchsorted(key, tok_row * _ROW + tok_end, side="left") - 1
    ok = k >= 0
    k = np.where(ok, k, 0)
    return ok & (s_row[k] == tok_row) & (s_end[k] > tok_start) & (tok_end > tok_start)


def _nonempty(span_row, span_start, span_end):
    span_row, span_start, span_end = (np.asarray(a, dtype=np.int64) for a in (span_row, span_start, span_end))
    keep = span_end > span_start
    if keep.all():
        return span_row, span_start, span_end
    return span_row[keep], span_start[keep], span_end[keep]


def _one_span_per_row(span_row: np.ndarray, tok_row: np.ndarray) -> bool:
    n = len(span_row)
    return bool(span_row[0] == 0 and span_row[-1] == n - 1 and np.all(np.diff(span_row) == 1)
                and (len(tok_row) == 0 or tok_row[-1] < n))


def follow_next(tok_row, tok_start, tok_end, supervised, special) -> np.ndarray:
    """``supervised`` with each zero-width, non-special token given the label of the next token of
    its row that spells text (none: unsupervised)."""
    tok_row = np.asarray(tok_row, dtype=np.int64)
    empty = np.asarray(tok_end) == np.asarray(tok_start)
    zero = empty & ~special
    if not zero.any():
        return supervised
    n = len(tok_row)
    pos = np.arange(n)
    # the index of the next token that spells text, by a running minimum from the end
    nxt = np.minimum.accumulate(np.where(empty, n, pos)[::-1])[::-1]
    idx = np.flatnonzero(zero)
    target = nxt[idx]
    ok = target < n
    target = np.where(ok, target, 0)
    out = supervised.copy()
    out[idx] = ok & (tok_row[target] == tok_row[idx]) & supervised[target]
    return out


def misplaced(tok_row, tok_start, tok_end, supervised, span_row, span_start, span_end) -> np.ndarray:
    """Indices of supervised tokens that break the rule: the check run on every batch.

    A token that spells text is looked up by the first span ending after it starts (not by the
    last span starting before it ends, as ``tokens_in_spans`` does), so a slip in one formulation
    is caught by the other. A zero-width one must be followed by a supervised token of its row.
    """
    idx = np.flatnonzero(supervised)
    if len(idx) == 0:
        return idx
    span_row, span_start, span_end = _nonempty(span_row, span_start, span_end)
    if len(span_row) == 0:
        return idx
    tok_row = np.asarray(tok_row, np.int64)
    r, s, e = (np.asarray(a, dtype=np.int64)[idx] for a in (tok_row, tok_start, tok_end))
    key = span_row * _ROW + span_end
    order = np.argsort(key, kind="stable")
    key, s_row, s_start = key[order], span_row[order], span_start[order]
    k = np.searchsorted(key, r * _ROW + s, side="right")
    found = k < len(key)
    k = np.where(found, k, 0)
    good = found & (s_row[k] == r) & (s_start[k] < e) & (e > s)
    zero = e == s
    if zero.any():  # followed, in its row, by a supervised token (or another zero-width one)
        after = np.minimum(idx[zero] + 1, len(tok_row) - 1)
        spells = np.asarray(tok_end)[after] > np.asarray(tok_start)[after]
        good[zero] = (after > idx[zero]) & (tok_row[after] == r[zero]) & (np.asarray(supervised)[after] | ~spells)
    return idx[~good]


def mark(enc: Encoded, spans: list[list[tuple[int, int]]], special_ids=()) -> tuple[np.ndarray, list[int]]:
    """Supervised tokens of ``enc`` (its ``offsets``, in the units of ``spans``), and the rows
    whose marks fail the independent check (empty unless something is wrong). ``special_ids``:
    the tokenizer's special ids, which take no label from the token after them."""
    tok_row = np.repeat(np.arange(len(spans)), enc.lengths)
    span_row = np.array([i for i, row in enumerate(spans) for _ in row], dtype=np.int64)
    span_start = np.array([a for row in spans for a, _ in row], dtype=np.int64)
    span_end = np.array([b for row in spans for _, b in row], dtype=np.int64)
    off = enc.offsets
    sup = tokens_in_spans(tok_row, off[:, 0], off[:, 1], span_row, span_start, span_end)
    special = np.isin(enc.ids, np.fromiter(special_ids, dtype=np.int64)) if len(special_ids) else \
        np.zeros(len(enc.ids), dtype=bool)
    sup = follow_next(tok_row, off[:, 0], off[:, 1], sup, special)
    bad = misplaced(tok_row, off[:, 0], off[:, 1], sup, span_row, span_start, span_end)
    return sup, sorted({int(tok_row[b]) for b in bad})
