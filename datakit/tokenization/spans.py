"""One path from texts and supervised character spans to token ids and their marks, on every backend.

Two strategies; the backends supply what each needs:

- ``"spelled"``: ids from the backend's fastest batch encode (``fast_ids``; for a row past
  ``max_tokens`` only as far as that is exact, prefix.py), offsets from the bytes the ids spell
  (``surfaces``, surface.py). Spans are then compared in bytes, which keeps every character whole.
  ``encode_batch_fast`` is ~1.6x faster than an offset-tracking encode.
- ``"offsets"``: the backend's offset-tracking encode (``encode_with_offsets``: the Rust
  tokenizer's char offsets, or SentencePiece's protos), spans compared in characters.

``"auto"`` (the default) takes the spelled path and falls back to the offsets one for a batch
whose ids do not spell its text (an ``<unk>``, a normalizer that rewrites characters).
Both go through ``mask.mark``, which marks the tokens and checks the marks.
"""
from __future__ import annotations

import numpy as np

from ..errors import TokenizerError
from .base import Encoded
from .mask import mark
from .spelled import Spelled

STRATEGIES = ("auto", "spelled", "offsets")


def encode_with_spans(tok, texts: list[str], spans: list[list[tuple[int, int]]], *,
                      add_special_tokens: bool | None = None, parse_special: bool = False, data=None,
                      max_tokens: int | None = None, strategy: str = "auto") -> tuple[Encoded, np.ndarray, list[int]]:
    """Encode ``texts`` once and mark the tokens of each row's character ``spans``.

    Returns the encoding, a bool per token (supervised) and the rows whose marks failed the
    independent check. With ``max_tokens`` a row holding more than that many tokens may be
    tokenized only in part (``Encoded.cut``; its ids are the first ids of the whole text).
    With ``parse_special``, special-token strings become control tokens, except inside the
    ``data`` ranges of each row (the text that came from the data, markup.py).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    texts = list(texts)
    if strategy != "offsets":
        marked = _spelled(tok, texts, spans, special=add_special_tokens is not False,
                          parse_special=parse_special, data=data, max_tokens=max_tokens)
        if marked is not None:
            return marked
        if strategy == "spelled":
            raise TokenizerError(f"tokenizer {tok.source}: its ids do not spell these texts byte for byte")
    enc = tok.encode_with_offsets(texts, add_special_tokens=add_special_tokens, parse_special=parse_special,
                                  data=data)
    return (enc, *mark(enc, spans, tok.special_ids()))


def _spelled(tok, texts, spans, *, special: bool, parse_special: bool, data, max_tokens: int | None):
    surfaces = tok.surfaces()
    if surfaces is None or not tok.spells(texts, parse_special=parse_special):
        return None
    n_pre, n_post = tok.added_around(special)
    ids, lengths, ends = tok.fast_ids(texts, special=special, max_tokens=max_tokens, n_pre=n_pre, n_post=n_post,
                                      parse_special=parse_special, data=data)
    cut = None
    if ends is not None:
        cut = np.fromiter((e < len(t) for t, e in zip(texts, ends)), dtype=bool, count=len(texts))
        if cut.any():
            spans = [row if e == len(t) else [(a, min(b, e)) for a, b in row if a < min(b, e)]
                     for t, row, e in zip(texts, spans, ends)]
            texts = [t[:e] for t, e in zip(texts, ends)]
        else:
            cut = None
    spelled = Spelled.of(surfaces, ids, lengths, texts, n_pre=n_pre, n_post=n_post)
    if spelled is None:
        return None
    sup, bad = spelled.mark(spans, tok.special_ids(), ids)
    return Encoded(ids, lengths, cut=cut, spelled=spelled), sup, bad
