"""Prompt masks from character spans, vectorized over a whole batch of tokens.

A token is supervised when its character range is non-empty and lies inside one supervised span
of its row. A token that merges across a span boundary carries prompt text, so it stays masked:
the boundary is never taken from a token count.
"""
from __future__ import annotations

import numpy as np

from .base import Encoded

_ROW = np.int64(1) << np.int64(40)  # row key stride: longer than any text (1 TB of characters)


def tokens_in_spans(tok_row, tok_start, tok_end, span_row, span_start, span_end) -> np.ndarray:
    """Bool per token: [tok_start, tok_end) is non-empty and inside a span of the same row."""
    tok_row, tok_start, tok_end = (np.asarray(a, dtype=np.int64) for a in (tok_row, tok_start, tok_end))
    span_row, span_start, span_end = (np.asarray(a, dtype=np.int64) for a in (span_row, span_start, span_end))
    if len(span_row) == 0:
        return np.zeros(len(tok_row), dtype=bool)
    if _one_span_per_row(span_row, tok_row):  # alpaca rows: span i belongs to row i
        return (tok_start >= span_start[tok_row]) & (tok_end <= span_end[tok_row]) & (tok_end > tok_start)
    key = span_row * _ROW + span_start
    order = np.argsort(key, kind="stable")
    key, s_row, s_end = key[order], span_row[order], span_end[order]
    k = np.searchsorted(key, tok_row * _ROW + tok_start, side="right") - 1
    ok = k >= 0
    k = np.where(ok, k, 0)
    return ok & (s_row[k] == tok_row) & (tok_end <= s_end[k]) & (tok_end > tok_start)


def _one_span_per_row(span_row: np.ndarray, tok_row: np.ndarray) -> bool:
    n = len(span_row)
    return bool(span_row[0] == 0 and span_row[-1] == n - 1 and np.all(np.diff(span_row) == 1)
                and (len(tok_row) == 0 or tok_row[-1] < n))


def misplaced(tok_row, tok_start, tok_end, supervised, span_row, span_start, span_end) -> np.ndarray:
    """Indices of supervised tokens that are not inside a span: the check run on every batch.

    It looks the span up by its end (not its start, as ``tokens_in_spans`` does), so a slip in
    one formulation is caught by the other.
    """
    idx = np.flatnonzero(supervised)
    if len(idx) == 0:
        return idx
    if len(span_row) == 0:
        return idx
    r, s, e = (np.asarray(a, dtype=np.int64)[idx] for a in (tok_row, tok_start, tok_end))
    key = np.asarray(span_row, np.int64) * _ROW + np.asarray(span_end, np.int64)
    order = np.argsort(key, kind="stable")
    key = key[order]
    s_row = np.asarray(span_row, np.int64)[order]
    s_start = np.asarray(span_start, np.int64)[order]
    k = np.searchsorted(key, r * _ROW + e, side="left")
    found = k < len(key)
    k = np.where(found, k, 0)
    good = found & (s_row[k] == r) & (s_start[k] <= s) & (e > s)
    return idx[~good]


def mark(enc: Encoded, spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[int]]:
    """Supervised tokens of ``enc`` (its ``offsets``, in the units of ``spans``), and the rows
    whose marks fail the independent check (empty unless something is wrong)."""
    tok_row = np.repeat(np.arange(len(spans)), enc.lengths)
    span_row = np.array([i for i, row in enumerate(spans) for _ in row], dtype=np.int64)
    span_start = np.array([a for row in spans for a, _ in row], dtype=np.int64)
    span_end = np.array([b for row in spans for _, b in row], dtype=np.int64)
    off = enc.offsets
    sup = tokens_in_spans(tok_row, off[:, 0], off[:, 1], span_row, span_start, span_end)
    bad = misplaced(tok_row, off[:, 0], off[:, 1], sup, span_row, span_start, span_end)
    return sup, sorted({int(tok_row[b]) for b in bad})
