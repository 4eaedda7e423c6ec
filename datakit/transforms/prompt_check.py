"""Training sees what inference feeds the model: the ids before a conversation's last assistant turn
must equal the ids of ``messages[:last]`` rendered with the generation prompt.

The template step already compared the texts (``prompt_ok``). Equal texts can still give other
ids: a token of the full row may straddle the turn's start (it is then trained, and inference,
which stops at the prompt's end, would tokenize that text differently), or BPE may merge
differently at the end of the shorter text. So for each row:
- the ids before the turn's first supervised token must spell exactly the prompt's bytes (no
  token straddles the start; checked on the bytes each id spells);
- and the prompt's own tokenization must be those ids. That holds without tokenizing when the
  prompt ends with a markup token (added tokens split the text before BPE sees it) or at a
  barrier that no merge crosses (tokenization/prefix.py); other rows' prompts are tokenized and
  compared.
Rows cut at ``cutoff_len`` before their last turn are compared on their text only.
"""
from __future__ import annotations

import weakref

import numpy as np


def _last_run_starts(sup: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per row, the index (within the row) where its last run of supervised tokens starts; -1 if none."""
    n = len(starts) - 1
    out = np.full(n, -1, dtype=np.int64)
    prev = np.concatenate([[False], sup[:-1]])
    prev[starts[:-1][starts[:-1] < len(sup)]] = False  # a row's first token has no previous in-row token
    begins = np.flatnonzero(sup & ~prev)
    rows = np.searchsorted(starts, begins, side="right") - 1
    np.maximum.at(out, rows, begins - starts[rows])
    return out


_MARKUP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its markup strings


def _markup_ends(tokenizer):
    ends = _MARKUP.get(tokenizer)
    if ends is None:  # reading the added tokens takes ~1 ms: once per tokenizer, not per batch
        from .chat import markup_tokens

        ends = _MARKUP[tokenizer] = tuple(t for t in markup_tokens(tokenizer) if t)
    return ends


def _spelled_before(surfaces, enc, first: np.ndarray, n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the bytes its ids spell (without the post-processor's tokens), and the bytes its
    ids before token ``first[r]`` spell."""
    starts = enc.starts
    surf = surfaces.lengths[enc.ids].astype(np.int64)
    if n_pre or n_post:
        pos = np.arange(len(surf)) - np.repeat(starts[:-1], enc.lengths)
        surf[(pos < n_pre) | (pos >= np.repeat(enc.lengths - n_post, enc.lengths))] = 0
    cum = np.zeros(len(surf) + 1, dtype=np.int64)
    np.cumsum(surf, out=cum[1:])
    total = cum[starts[1:]] - cum[starts[:-1]]
    before = cum[starts[:-1] + np.maximum(first, 0)] - cum[starts[:-1]]
    return total, before


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def inference_mismatch(tokenizer, texts: list[str], starts: list[int | None], prompt_ok: list[bool], enc, sup,
                       *, special) -> list[int]:
    """Rows whose ids before the last assistant turn (starting at char ``starts[r]``) are not the
    inference prompt's ids."""
    row_starts = enc.starts
    first = _last_run_starts(sup, row_starts)
    n = len(texts)
    has = np.fromiter((s is not None for s in starts), dtype=bool, count=n)
    ok = np.fromiter(prompt_ok, dtype=bool, count=n)
    wrong = has & ~ok
    todo = has & ok & (first >= 0)
    if enc.cut is not None:
        todo &= ~enc.cut
    retokenize = []
    if enc.spelled is not None:
        straddles, rest = _straddles(enc.spelled, todo, first, starts)
        wrong[straddles] = True
    elif tokenizer.surfaces() is not None:
        straddles, rest, retokenize = _straddles_by_row(tokenizer, enc, todo, first, texts, starts, special)
        wrong[straddles] = True
    else:
        rest, retokenize = [], np.flatnonzero(todo).tolist()
    markup = _markup_ends(tokenizer)
    prefix = tokenizer._prefix_encoder() if hasattr(tokenizer, "_prefix_encoder") else None
    for r in rest:
        text, start = texts[r], starts[r]
        if text.endswith(markup, 0, start) or (prefix is not None and start < len(text)
                                               and prefix.barrier(text, start, start + 1) == start):
            continue
        retokenize.append(r)
    if retokenize:
        got = tokenizer.encode([texts[r][:starts[r]] for r in retokenize], add_special_tokens=special,
                               parse_special=True)
        for j, r in enumerate(retokenize):
            lo = int(row_starts[r])
            if not np.array_equal(got.row(j), enc.ids[lo:lo + int(first[r])]):
                wrong[r] = True
    return np.flatnonzero(wrong).tolist()


def _straddles(spelled, todo: np.ndarray, first: np.ndarray, starts) -> tuple[np.ndarray, list[int]]:
    """Rows of ``todo`` where a token straddles the turn's start (its first supervised token
    starts elsewhere in the byte stream than the turn's text), and the others."""
    rows = np.flatnonzero(todo)
    turn = spelled.bytes_of(rows, np.fromiter((starts[r] for r in rows), dtype=np.int64, count=len(rows)))
    k = spelled.row_start[rows] + first[rows]
    at = spelled.end[k] - spelled.surf[k]  # where the token starts, before any clipping
    return rows[at != turn], rows[at == turn].tolist()


def _straddles_by_row(tokenizer, enc, todo, first, texts, starts, special):
    """``_straddles`` for an encoding made without a byte stream: the bytes each row's ids spell."""
    n_pre, n_post = tokenizer.added_around(special is not False)
    total, before = _spelled_before(tokenizer.surfaces(), enc, first, n_pre, n_post)
    straddles, rest, retokenize = [], [], []
    for r in np.flatnonzero(todo).tolist():
        text, start = texts[r], starts[r]
        extra = int(total[r]) - _utf8_len(text)  # the leading space Metaspace may add
        if extra not in (0, 1):
            retokenize.append(r)  # the ids do not spell the text (an <unk>...)
        elif int(before[r]) != _utf8_len(text[:start]) + extra:
            straddles.append(r)
        else:
            rest.append(r)
    return np.array(straddles, dtype=np.int64), rest, retokenize
