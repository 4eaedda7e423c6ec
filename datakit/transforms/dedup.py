"""``dedup``: exact (normalized-text hash) or near (MinHash LSH) duplicates, across all sources.

The step keeps its index across batches and sources, so the first occurrence of a row wins
wherever it comes from. ``action: drop`` removes the later copies (counted as
``rows_dropped.exact_duplicate`` / ``near_duplicate``); ``action: group`` keeps them but gives
them the split group of the first occurrence, so they all land on the same side of the split.

Near duplicates (``near.py``): rows whose word-shingle sets have a Jaccard similarity at or
above ``threshold``. MinHash LSH with bands tuned for recall proposes candidate pairs, and each
pair is decided by its true Jaccard, so a pair at or above the threshold is caught (LSH misses
one with a chance below 1e-6) and never straddles the split: with ``action: drop`` the later row
is gone; with ``action: group`` every row joins the groups of all the rows it matches.
"""
from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
import pyarrow as pa

from ..errors import StepError
from ..recipe import DedupOptions
from .base import BaseStep
from .near import NearIndex

DEFAULT_FIELDS = {
    "text": ["text"],
    "alpaca": ["instruction", "input", "output"],
    "prompt_completion": ["prompt", "completion"],
    "messages": ["messages"],
    "sharegpt": ["messages"],
}


def default_fields(batch: pa.RecordBatch) -> list[str]:
    """The fields that hold a row's text, by the canonical columns the batch has."""
    for fmt in ("text", "alpaca", "prompt_completion", "messages"):
        if DEFAULT_FIELDS[fmt][0] in batch.schema.names:
            return DEFAULT_FIELDS[fmt]
    raise StepError("dedup/filter: rows have no text fields (text, instruction, prompt or messages)")


def row_texts(batch: pa.RecordBatch, fields: list[str] | None) -> list[str]:
    """The chosen fields of each row joined by newlines (messages: their contents); by default
    the row's whole text: text, instruction+input+output, prompt+completion or message contents."""
    fields = fields or default_fields(batch)
    cols = []
    for f in fields:
        if f not in batch.schema.names:
            raise StepError(f"dedup/filter: field '{f}' is not a column of these rows "
                               f"(columns: {', '.join(n for n in batch.schema.names if not n.startswith('_'))})")
        values = batch.column(f).to_pylist()
        if f == "messages":
            values = ["\n".join(m["content"] for m in conv) for conv in values]
        cols.append(["" if v is None else str(v) for v in values])
    return ["\n".join(parts) for parts in zip(*cols)]


def normalize(text: str) -> str:
    """Case, white space and Unicode compatibility forms (full-width letters...) do not make a row new."""
    if not text.isascii() and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.lower().split())


class Dedup(BaseStep):
    scope = "build"  # the first copy of a row in the whole build is the one kept

    def __init__(self, options: DedupOptions):
        super().__init__()
        self.options = options
        self.fields = list(options.fields) if options.fields else None
        self.group = options.action == "group"
        self.exact: dict[bytes, int] = {}  # digest -> the group its first row went out with
        self.near = None
        if options.mode == "near":
            import rensa  # noqa: F401 - checked when the step is built, not at import

            self.near = NearIndex(threshold=options.threshold, num_perm=options.num_perm, ngram=options.ngram,
                                  keep_all=self.group)

    def _digests(self, texts: list[str]) -> list[bytes]:
        # In near mode the shingles already ignore case and white space, so only byte-identical
        # rows are told apart here (as exact duplicates), without the cost of normalizing.
        norm = normalize if self.near is None else (lambda t: t)
        return [hashlib.blake2b(norm(t).encode("utf-8"), digest_size=16).digest() for t in texts]

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        texts = row_texts(batch, self.fields)
        digests = self._digests(texts)
        out = batch.column("_group").to_numpy().astype(np.int64)
        first_here: dict[bytes, int] = {}
        copy_of = np.full(len(texts), -1, dtype=np.int64)  # an earlier row of this batch it copies
        exact = np.zeros(len(texts), dtype=bool)
        for i, h in enumerate(digests):
            if h in self.exact:
                exact[i] = True
                out[i] = self.near.merges.find(self.exact[h]) if self.near is not None else self.exact[h]
            elif h in first_here:
                exact[i], copy_of[i] = True, first_here[h]
            else:
                first_here[h] = i
        near = np.zeros(len(texts), dtype=bool)
        if self.near is not None:
            new = np.flatnonzero(~exact)
            found, groups = self.near.add([texts[i] for i in new], out[new])
            near[new], out[new] = found, groups
        here = np.flatnonzero(copy_of >= 0)
        out[here] = out[copy_of[here]]
        for h, i in first_here.items():
            self.exact[h] = int(out[i])
        counted = "rows_grouped" if self.group else "rows_dropped"
        self.stats.add(counted, int(exact.sum()), reason="exact_duplicate")
        self.stats.add(counted, int(near.sum()), reason="near_duplicate")
        if self.group:
            idx = batch.schema.get_field_index("_group")
            return [batch.set_column(idx, "_group", pa.array(out, pa.int64()))]
        dup = exact | near
        return [batch.filter(pa.array(~dup))] if dup.any() else [batch]

    def group_merges(self) -> np.ndarray:
        """(k, 2) int64 pairs (group, the group it joined): near duplicates that link rows which
        went out in different groups (``action: group``). The split plan applies them."""
        if self.near is None:
            return np.zeros((0, 2), dtype=np.int64)
        return self.near.merges.pairs()
