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


def _markup_ends(tokenizer):
    from .chat import markup_tokens

    return tuple(t for t in markup_tokens(tokenizer) if t)


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
    cut = enc.cut if enc.cut is not None else np.zeros(len(texts), dtype=bool)
    wrong, retokenize = [], []
    surfaces = tokenizer.surfaces()
    n_pre, n_post = tokenizer.added_around(special is not False)
    if surfaces is not None:
        total, before = _spelled_before(surfaces, enc, first, n_pre, n_post)
    markup = _markup_ends(tokenizer)
    prefix = tokenizer._prefix_encoder() if hasattr(tokenizer, "_prefix_encoder") else None
    for r, (text, start, ok) in enumerate(zip(texts, starts, prompt_ok)):
        if start is None:
            continue
        if not ok:
            wrong.append(r)
            continue
        k = int(first[r])
        if cut[r] or k < 0:
            continue
        lo = int(row_starts[r])
        if surfaces is not None:
            extra = int(total[r]) - _utf8_len(text)  # the leading space Metaspace may add
            if extra not in (0, 1):
                retokenize.append((r, lo, k))  # the ids do not spell the text (an <unk>...)
                continue
            if int(before[r]) != _utf8_len(text[:start]) + extra:
                wrong.append(r)  # a token straddles the turn's start
                continue
            if text.endswith(markup, 0, start) or (prefix is not None and start < len(text)
                                                   and prefix.barrier(text, start, start + 1) == start):
                continue
        retokenize.append((r, lo, k))
    if retokenize:
        got = tokenizer.encode([texts[r][:starts[r]] for r, _, _ in retokenize], add_special_tokens=special,
                               parse_special=True)
        for j, (r, lo, k) in enumerate(retokenize):
            if not np.array_equal(got.row(j), enc.ids[lo:lo + k]):
                wrong.append(r)
    return sorted(wrong)
