"""The tokenizer interface datakit needs, and the flat ``Encoded`` batch it returns.

Ids come back flat (one int32 array plus row lengths), which is what Arrow's list arrays are
made of, so no step ever holds a Python list per token.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import TokenizerError

THREADS = max(1, os.cpu_count() or 1)
_UNSET = object()
_SURFACE_LOCK = threading.Lock()


class Encoded:
    """A batch of token rows: ``ids`` (flat int32), ``lengths`` and, when asked, char ``offsets`` (flat, n x 2).

    ``cut`` (bool per row, or None when no row was): rows tokenized only in part because they
    hold more than the ``max_tokens`` asked for; their ids are the first ids of the whole text.
    """

    __slots__ = ("ids", "lengths", "offsets", "cut")

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, offsets: np.ndarray | None = None,
                 cut: np.ndarray | None = None):
        self.ids, self.lengths, self.offsets, self.cut = ids, lengths, offsets, cut

    @property
    def starts(self) -> np.ndarray:
        out = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    def row(self, i: int) -> np.ndarray:
        s = self.starts
        return self.ids[s[i]:s[i + 1]]


def _flatten(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return ids, lengths


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class Tokenizer:
    """What datakit needs from a tokenizer. Subclasses fill the ids and the methods."""

    kind = "base"
    source: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    bos_token: str | None
    eos_token: str | None
    chat_template: str | None = None
    fingerprint: str = ""
    files: list[str]

    def encode(self, texts: list[str], *, add_special_tokens: bool | None = None) -> Encoded:
        raise NotImplementedError

    def encode_with_offsets(self, texts: list[str], *, add_special_tokens: bool | None = None,
                            parse_special: bool = False) -> Encoded:
        raise NotImplementedError

    def encode_with_spans(self, texts: list[str], spans: list[list[tuple[int, int]]], *,
                          add_special_tokens: bool | None = None, parse_special: bool = False,
                          max_tokens: int | None = None) -> tuple[Encoded, np.ndarray, list[int]]:
        """Encode once and mark the tokens that lie inside each row's character spans.

        Returns the encoding, a bool per token (supervised), and the rows whose marks failed the
        independent check (empty unless something is wrong). With ``max_tokens`` a tokenizer may
        stop early in a row that holds more than that many tokens (``Encoded.cut``).
        """
        enc = self.encode_with_offsets(texts, add_special_tokens=add_special_tokens, parse_special=parse_special)
        return self._mask_from_offsets(enc, spans)

    def _build_surfaces(self):
        """The byte each id spells (surface.Surfaces), or None when this tokenizer's ids cannot spell text."""
        return None

    def _surfaces(self):
        cache = self.__dict__.get("_surface_cache", _UNSET)
        if cache is _UNSET:
            with _SURFACE_LOCK:  # two batches may ask at once; build the table once
                cache = self.__dict__.get("_surface_cache", _UNSET)
                if cache is _UNSET:
                    cache = self._surface_cache = self._build_surfaces()
        return cache

    def _mask_from_spelled(self, surfaces, ids, lengths, texts, spans, *, n_pre: int, n_post: int = 0):
        """Marks from byte offsets the ids spell (see surface.py), or None when they do not spell
        the texts; spans are compared in bytes, which keeps every character whole."""
        offsets = surfaces.byte_offsets(ids, lengths, [t.encode("utf-8") for t in texts], n_pre=n_pre, n_post=n_post) \
            if surfaces is not None else None
        if offsets is None:
            return None
        byte_spans = [row if t.isascii() else [(len(t[:a].encode()), len(t[:b].encode())) for a, b in row]
                      for t, row in zip(texts, spans)]
        return self._mask_from_offsets(Encoded(ids, lengths, offsets), byte_spans)

    def _mask_from_offsets(self, enc: Encoded, spans):
        """Supervised tokens from char offsets, and the rows whose marks fail the independent check."""
        from ..transforms.mask import misplaced, tokens_in_spans

        tok_row = np.repeat(np.arange(len(spans)), enc.lengths)
        span_row = np.array([i for i, row in enumerate(spans) for _ in row], dtype=np.int64)
        span_start = np.array([a for row in spans for a, _ in row], dtype=np.int64)
        span_end = np.array([b for row in spans for _, b in row], dtype=np.int64)
        off = enc.offsets
        sup = tokens_in_spans(tok_row, off[:, 0], off[:, 1], span_row, span_start, span_end)
        bad = misplaced(tok_row, off[:, 0], off[:, 1], sup, span_row, span_start, span_end)
        return enc, sup, sorted({int(tok_row[b]) for b in bad})

    def id_to_piece(self, token_id: int) -> str:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def special_ids(self) -> set[int]:
        raise NotImplementedError

    def require_eos(self, why: str) -> int:
        if self.eos_id is None:
            raise TokenizerError(f"tokenizer {self.source} has no EOS token, which {why} needs")
        return self.eos_id

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
                "fingerprint": self.fingerprint, "files": self.files}


