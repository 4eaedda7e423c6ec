"""Near duplicates by their true Jaccard similarity, found through MinHash LSH.

A row's **shingles** are its word n-grams (lower case; a CJK character is a word of its own, so
text without spaces gets character n-grams), hashed to 64 bits; a row shorter than n words is one
shingle. Two rows are near duplicates when the Jaccard similarity of their shingle sets,
|A & B| / |A | B|, is at or above the threshold.

**Candidates** come from MinHash signatures (``rensa``, in Rust) cut into bands: two rows are
compared when their signatures agree on a whole band. Each candidate pair is then **decided by
its true Jaccard** on the shingle sets, never by the MinHash estimate, so a false candidate costs
one set intersection and nothing else, and the bands can be tuned for recall alone (``band_plan``).

Memory: the index keeps each indexed row's shingle set (8 bytes a shingle, about one per word) and
12 bytes per band (the band's key and the row's number).
"""
from __future__ import annotations

import numpy as np

MISS = 1e-6  # the largest chance that LSH never proposes a pair whose Jaccard is at the threshold
_SEED = 1729
_ROW_SEP = 0  # code point used between rows when a batch is shingled in one pass
_R = np.random.default_rng(_SEED).integers(1, 2**63, size=(3, 64), dtype=np.uint64) | np.uint64(1)


def band_plan(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) for candidates with high recall at and above ``threshold``.

    Two rows of Jaccard J agree on one MinHash value with probability J, on a band of r values with
    J**r, and become candidates when any of b bands agrees: P(J) = 1 - (1 - J**r)**b, the S-curve.
    datasketch balances its false positives against its false negatives, which puts P(threshold)
    near 50%: half of the pairs at the threshold are never seen. Candidates here are confirmed
    exactly, so this takes the largest r (the fewest candidates) whose miss chance at the
    threshold, (1 - t**r)**b with b = num_perm // r, is at most MISS (1e-6); pairs above the
    threshold are missed even less often. For t = 0.8 and 128 permutations: r = 4, b = 32,
    P(0.8) = 1 - 4.6e-8, P(0.5) = 0.87, P(0.3) = 0.23, P(0.1) = 0.003. When no r reaches MISS
    (a very low threshold with few permutations), r = 1: every shared MinHash value is a candidate.
    """
    best = (num_perm, 1)
    for r in range(2, num_perm + 1):
        b = num_perm // r
        if (1.0 - threshold ** r) ** b <= MISS:
            best = (b, r)
    return best


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads sums of hashes over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _is_cjk(c: np.ndarray) -> np.ndarray:
    return (((c >= 0x3040) & (c <= 0x30FF)) | ((c >= 0x3400) & (c <= 0x4DBF)) | ((c >= 0x4E00) & (c <= 0x9FFF))
            | ((c >= 0xAC00) & (c <= 0xD7AF)) | ((c >= 0xF900) & (c <= 0xFAFF)) | ((c >= 0xFF00) & (c <= 0xFFEF)))


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


def shingle_sets(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``shingle_hashes`` as sets: each row's hashes sorted and distinct. Returns (flat, offsets)."""
    flat, offsets = shingle_hashes(texts, n)
    rows = np.repeat(np.arange(len(texts), dtype=np.int32), np.diff(offsets.astype(np.int64)))
    by_hash = np.argsort(flat)
    order = by_hash[np.argsort(rows[by_hash], kind="stable")]  # by row, then by hash (a radix sort)
    flat, rows = flat[order], rows[order]
    keep = np.ones(len(flat), dtype=bool)
    keep[1:] = (flat[1:] != flat[:-1]) | (rows[1:] != rows[:-1])
    counts = np.bincount(rows[keep], minlength=len(texts))
    return flat[keep], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two sorted arrays of distinct values."""
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 1.0 if not len(b) else 0.0
    at = np.searchsorted(b, a)
    at[at == len(b)] = 0
    inter = int(np.count_nonzero(b[at] == a))
    return inter / (len(a) + len(b) - inter)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one key per band of each signature, distinct across bands."""
    n = len(signatures)
    cut = signatures[:, :bands * rows].astype(np.uint64).reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        acc = np.broadcast_to(_R[2][np.arange(bands) % 64] + np.uint64(bands), (n, bands)).copy()
        for k in range(rows):
            acc = _mix64(acc ^ (cut[:, :, k] * _R[1][k % 64]))
    return acc


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + c) for each (s, c)."""
    total = int(counts.sum())
    before = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(before - starts, counts)


class BandTable:
    """(band key -> row number) pairs in a few sorted runs, merged as they grow (each run is at
    least twice the next), so adding n rows costs O(n log n) and a lookup O(log n) per run."""

    def __init__(self):
        self.keys: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys.append(keys[order])
        self.ids.append(ids[order])
        while len(self.keys) > 1 and len(self.keys[-2]) <= 2 * len(self.keys[-1]):
            k, i = np.concatenate(self.keys[-2:]), np.concatenate(self.ids[-2:])
            order = np.argsort(k, kind="stable")
            self.keys[-2:], self.ids[-2:] = [k[order]], [i[order]]

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``query``, row number) for every stored pair whose key equals a query key."""
        qs, found = [], []
        by_key = np.argsort(query)
        sorted_query = query[by_key]  # sorted queries walk each run once (searchsorted keeps its place)
        for keys, ids in zip(self.keys, self.ids):
            lo = np.searchsorted(keys, sorted_query, "left")
            counts = np.searchsorted(keys, sorted_query, "right") - lo
            hit = np.flatnonzero(counts)
            qs.append(np.repeat(by_key[hit], counts[hit]))
            found.append(ids[_ranges(lo[hit], counts[hit])])
        if not qs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(qs), np.concatenate(found)


class ShingleStore:
    """Shingle sets of indexed rows, in one growing buffer: ``get(i)`` is row i's sorted set."""

    def __init__(self):
        self.flat = np.zeros(1 << 16, np.uint64)
        self.offsets = [0]

    def add(self, flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> None:
        for r in rows.tolist():
            part = flat[offsets[r]:offsets[r + 1]]
            end = self.offsets[-1] + len(part)
            if end > len(self.flat):
                self.flat = np.resize(self.flat, max(end, 2 * len(self.flat)))
            self.flat[self.offsets[-1]:end] = part
            self.offsets.append(end)

    def get(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


class GroupMerges:
    """Split groups joined by near duplicates (a union-find over group ids). A row can match rows
    of two groups that were kept apart when they went out; ``pairs()`` tells the split plan to
    treat them as one group."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, g: int) -> int:
        root = g
        while root in self.parent:
            root = self.parent[root]
        while g != root:  # path compression
            self.parent[g], g = root, self.parent[g]
        return root

    def join(self, groups: list[int]) -> int:
        """Join ``groups`` into one; returns its id (the smallest root)."""
        roots = {self.find(g) for g in groups}
        target = min(roots)
        for r in roots - {target}:
            self.parent[r] = target
        return target

    def pairs(self) -> np.ndarray:
        """(k, 2) int64: each joined group and the group it now belongs to."""
        return np.array([(g, self.find(g)) for g in sorted(self.parent)], dtype=np.int64).reshape(-1, 2)


class NearIndex:
    """The rows seen so far, for near-duplicate lookups across batches and sources.

    ``keep_all=False`` (``action: drop``): a row that matches an earlier indexed row is a
    duplicate and is not indexed, so every row that is kept was compared with every earlier kept
    row. ``keep_all=True`` (``action: group``): every row is indexed and joins the groups of all
    the rows it matches (``merges``)."""

    def __init__(self, *, threshold: float, num_perm: int, ngram: int, keep_all: bool):
        self.threshold, self.num_perm, self.ngram, self.keep_all = threshold, num_perm, ngram, keep_all
        self.bands, self.rows = band_plan(threshold, num_perm)
        self.table = BandTable()
        self.sets = ShingleStore()
        self.groups: list[int] = []  # group of each indexed row, as it went out
        self.merges = GroupMerges()
        self.pairs_checked = 0

    def _candidates(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, candidate) pairs, sorted, distinct: candidates below len(self.sets) are indexed
        rows, the others are ``len(self.sets) + j`` for an earlier row j of this batch."""
        n, b = keys.shape
        known = len(self.sets)
        flat_keys = keys.ravel()
        q, c = self.table.lookup(flat_keys)
        here = BandTable()
        here.add(flat_keys, np.repeat(np.arange(n), b))
        q2, j = here.lookup(flat_keys)
        earlier = j < q2 // b
        rows = np.concatenate([q // b, q2[earlier] // b]).astype(np.int64)
        cands = np.concatenate([c, known + j[earlier]]).astype(np.int64)
        pair = np.unique(rows * (known + n) + cands)
        return pair // (known + n), pair % (known + n)

    def add(self, texts: list[str], groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Match ``texts`` (rows in order) against the index and each other, then index them.
        Returns (is a near duplicate, the group each row goes out with)."""
        from rensa import RMinHash

        if not texts:
            return np.zeros(0, dtype=bool), np.array(groups, dtype=np.int64)
        flat, offsets = shingle_sets(texts, self.ngram)
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64), self.num_perm, _SEED)
        keys = band_keys(np.asarray(matrix.to_rows(), dtype=np.uint32), self.bands, self.rows)
        rows, cands = self._candidates(keys)
        known = len(self.sets)
        near = np.zeros(len(texts), dtype=bool)
        out = np.array(groups, dtype=np.int64)
        bounds = np.searchsorted(rows, np.arange(len(texts) + 1))
        for i in np.unique(rows).tolist():
            mine = flat[offsets[i]:offsets[i + 1]]
            hits = []
            for c in cands[bounds[i]:bounds[i + 1]].tolist():
                if c >= known:
                    j = c - known
                    if near[j] and not self.keep_all:
                        continue  # dropped: not a row anything is compared with
                    other, group = flat[offsets[j]:offsets[j + 1]], int(out[j])
                else:
                    other, group = self.sets.get(c), self.groups[c]
                self.pairs_checked += 1
                if jaccard(mine, other) >= self.threshold:
                    hits.append(group)
                    if not self.keep_all:
                        break  # the first, earliest kept match decides
            if hits:
                near[i] = True
                if self.keep_all:
                    out[i] = self.merges.join(hits)
        indexed = np.arange(len(texts)) if self.keep_all else np.flatnonzero(~near)
        self.table.add(keys[indexed].ravel(), np.repeat(known + np.arange(len(indexed)), self.bands))
        self.sets.add(flat, offsets, indexed)
        self.groups.extend(out[indexed].tolist())
        return near, out
