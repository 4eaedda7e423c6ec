"""``dedup``: exact (normalized-text hash) or near (MinHash LSH) duplicates, across all sources.

The step keeps its index across batches and sources, so the first occurrence of a row wins
wherever it comes from. ``action: drop`` removes the later copies (counted as
``rows_dropped.exact_duplicate`` / ``near_duplicate``); ``action: group`` keeps them but gives
them the split group of the first occurrence, so they all land on the same side of the split.

Near duplicates: MinHash signatures come from ``rensa`` (Rust). Shingles are word n-grams; a
CJK character counts as a word of its own, so text without spaces gets character shingles.
Candidates come from LSH banding (band and row counts chosen for the threshold as datasketch
does) and are confirmed by their estimated Jaccard similarity.
"""
from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
import pyarrow as pa

from ..errors import DatakitError
from ..recipe import DedupOptions
from .base import BaseStep

DEFAULT_FIELDS = {
    "text": ["text"],
    "alpaca": ["instruction", "input", "output"],
    "prompt_completion": ["prompt", "completion"],
    "messages": ["messages"],
    "sharegpt": ["messages"],
}
_SEED = 1729
_ROW_SEP = 0  # code point used between rows when a batch is shingled in one pass


def default_fields(batch: pa.RecordBatch) -> list[str]:
    """The fields that hold a row's text, by the canonical columns the batch has."""
    for fmt in ("text", "alpaca", "prompt_completion", "messages"):
        if DEFAULT_FIELDS[fmt][0] in batch.schema.names:
            return DEFAULT_FIELDS[fmt]
    raise DatakitError("dedup/filter: rows have no text fields (text, instruction, prompt or messages)")


def row_texts(batch: pa.RecordBatch, fields: list[str] | None) -> list[str]:
    """The chosen fields of each row joined by newlines (messages: their contents); by default
    the row's whole text: text, instruction+input+output, prompt+completion or message contents."""
    fields = fields or default_fields(batch)
    cols = []
    for f in fields:
        if f not in batch.schema.names:
            raise DatakitError(f"dedup/filter: field '{f}' is not a column of these rows "
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


def _is_cjk(c: np.ndarray) -> np.ndarray:
    return (((c >= 0x3040) & (c <= 0x30FF)) | ((c >= 0x3400) & (c <= 0x4DBF)) | ((c >= 0x4E00) & (c <= 0x9FFF))
            | ((c >= 0xAC00) & (c <= 0xD7AF)) | ((c >= 0xF900) & (c <= 0xFAFF)) | ((c >= 0xFF00) & (c <= 0xFFEF)))


_R = np.random.default_rng(_SEED).integers(1, 2**63, size=(2, 64), dtype=np.uint64) | np.uint64(1)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads sums of hashes over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint64 shingle hashes, row offsets) for ``texts``, vectorized over the whole batch."""
    joined = ("\x00".join(texts) + "\x00").lower()
    c = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    space = (c <= 32) | (c == 0xA0) | (c == 0x3000) | ((c >= 0x2000) & (c <= 0x200B))
    cjk = _is_cjk(c)
    starts = ~space
    starts[1:] &= space[:-1] | cjk[1:] | cjk[:-1]  # a word starts after a space, and at every CJK character
    chars = np.flatnonzero(~space)
    wstart = np.flatnonzero(starts[chars])  # word starts, as indices into chars
    wlen = np.diff(np.append(wstart, len(chars)))
    pos = np.arange(len(chars)) - np.repeat(wstart, wlen)
    with np.errstate(over="ignore"):
        contrib = c[chars].astype(np.uint64) * _R[0][pos & 63]
        wh = _mix64(np.add.reduceat(contrib, wstart)) if len(chars) else np.zeros(0, np.uint64)
    w_row = np.searchsorted(np.flatnonzero(c == _ROW_SEP), chars[wstart])  # separators before the word
    n_rows = len(texts)
    per_row = np.bincount(w_row, minlength=n_rows)
    # n-grams inside one row; a row shorter than n words is one shingle of all its words
    hashes, rows = [], []
    if len(wh) >= n:
        idx = np.arange(len(wh) - n + 1)
        ok = w_row[idx] == w_row[idx + n - 1]
        with np.errstate(over="ignore"):
            acc = np.zeros(len(idx), np.uint64)
            for k in range(n):
                acc = acc + wh[idx + k] * _R[1][k]
        hashes.append(_mix64(acc[ok]))
        rows.append(w_row[idx[ok]])
    short = np.flatnonzero(per_row < n)
    if len(short):
        in_short = np.isin(w_row, short)
        k_in_row = np.arange(len(wh)) - np.concatenate([[0], np.cumsum(per_row)[:-1]])[w_row]
        with np.errstate(over="ignore"):
            weighted = wh[in_short] * _R[1][k_in_row[in_short] % 64]
        sums = np.zeros(n_rows, np.uint64)
        np.add.at(sums, w_row[in_short], weighted)
        hashes.append(_mix64(sums[short] + np.uint64(per_row[short].astype(np.uint64))))
        rows.append(short)
    flat_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    flat = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    order = np.argsort(flat_rows, kind="stable")
    counts = np.bincount(flat_rows, minlength=n_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
    return flat[order], offsets


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimizing false positives + false negatives, as datasketch picks them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


class NearIndex:
    """LSH over MinHash signatures; ``add`` returns the key of an earlier near duplicate, or -1."""

    def __init__(self, threshold: float, num_perm: int):
        self.threshold = threshold
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self.tables: list[dict[bytes, int]] = [dict() for _ in range(self.bands)]
        self.signatures: list[np.ndarray] = []
        self._keys: list[int] = []

    def add(self, sig: np.ndarray, key: int) -> int:
        r = self.rows
        keys = [sig[b * r:(b + 1) * r].tobytes() for b in range(self.bands)]
        seen = set()
        for b, k in enumerate(keys):
            hit = self.tables[b].get(k)
            if hit is not None and hit not in seen:
                seen.add(hit)
                if np.count_nonzero(self.signatures[hit] == sig) >= self.threshold * len(sig):
                    return hit
        idx = len(self.signatures)
        self.signatures.append(sig)
        for b, k in enumerate(keys):
            self.tables[b].setdefault(k, idx)
        self._keys.append(key)
        return -1

    def key(self, idx: int) -> int:
        return self._keys[idx]


class Dedup(BaseStep):
    def __init__(self, options: DedupOptions):
        super().__init__()
        self.options = options
        self.fields = list(options.fields) if options.fields else None
        self.exact: dict[bytes, int] = {}
        self.near = NearIndex(options.threshold, options.num_perm) if options.mode == "near" else None
        if self.near is not None:
            import rensa  # noqa: F401 - checked when the step is built, not at import

    def _exact(self, texts: list[str], groups: np.ndarray) -> np.ndarray:
        match = np.full(len(texts), -1, dtype=np.int64)
        # In near mode the shingles already ignore case and white space, so only byte-identical
        # rows are told apart here (as exact duplicates), without the cost of normalizing.
        norm = normalize if self.near is None else (lambda t: t)
        for i, t in enumerate(texts):
            h = hashlib.blake2b(norm(t).encode("utf-8"), digest_size=16).digest()
            first = self.exact.setdefault(h, int(groups[i]))
            if first != groups[i]:
                match[i] = first
        return match

    def _near(self, texts: list[str], groups: np.ndarray) -> np.ndarray:
        from rensa import RMinHash

        flat, offsets = shingle_hashes(texts, self.options.ngram)
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, self.options.num_perm, _SEED)
        sigs = np.asarray(matrix.to_rows(), dtype=np.uint32)
        match = np.full(len(texts), -1, dtype=np.int64)
        for i, sig in enumerate(sigs):
            hit = self.near.add(sig, int(groups[i]))
            if hit >= 0:
                match[i] = self.near.key(hit)
        return match

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        texts = row_texts(batch, self.fields)
        groups = batch.column("_group").to_numpy()
        match = self._exact(texts, groups)
        reason = np.where(match >= 0, 1, 0)
        if self.near is not None:
            rest = np.flatnonzero(match < 0)
            near = self._near([texts[i] for i in rest], groups[rest])
            match[rest] = near
            reason[rest[near >= 0]] = 2
        dup = match >= 0
        self.stats["dedup_exact"] += int((reason == 1).sum())
        self.stats["dedup_near"] += int((reason == 2).sum())
        if self.options.action == "group":
            new_groups = np.where(dup, match, groups)
            idx = batch.schema.get_field_index("_group")
            return [batch.set_column(idx, "_group", pa.array(new_groups, pa.int64()))]
        self.stats["rows_dropped.exact_duplicate"] += int((reason == 1).sum())
        self.stats["rows_dropped.near_duplicate"] += int((reason == 2).sum())
        return [batch.filter(pa.array(~dup))] if dup.any() else [batch]
