"""Mixing sources: ``weight`` (a share of the final rows) and ``repeat`` (upsampling).

Mixing happens after every step, on finished rows, so deduplication has already run on the
distinct inputs and can never undo an upsampling. A copy keeps the split group of its original,
so all copies of a row land on the same side of the train/validation split.

- ``repeat: r`` -- the source's rows are seen floor(r) times, plus a seeded subset of
  (r - floor(r)) of them once more.
- ``weight: w`` -- the weighted sources together keep their combined row count, shared in
  proportion to their weights; a source that needs more rows than it has is repeated as above, one
  that needs fewer is subsampled (seeded). Sources without weight keep ``repeat`` (default 1).
"""
from __future__ import annotations

import numpy as np

from .recipe import SourceConfig


def _take(n: int, target: int, rng) -> np.ndarray:
    full, rest = divmod(target, n) if n else (0, 0)
    parts = [np.arange(n)] * full
    if rest:
        parts.append(np.sort(rng.choice(n, size=rest, replace=False)))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def targets(sources: list[SourceConfig], counts: list[int]) -> list[int]:
    """Rows each source contributes after mixing."""
    weighted = [i for i, s in enumerate(sources) if s.weight is not None]
    total_w = sum(sources[i].weight for i in weighted)
    pool = sum(counts[i] for i in weighted)
    out = []
    for i, (s, n) in enumerate(zip(sources, counts)):
        if s.weight is not None:
            out.append(int(round(pool * s.weight / total_w)))
        else:
            out.append(int(round(n * (s.repeat if s.repeat is not None else 1))))
    return out


def mix(sources: list[SourceConfig], row_source: np.ndarray, *, seed: int) -> np.ndarray:
    """Row indices (into the built rows, with repeats) in source order, copies after originals."""
    rng = np.random.default_rng([seed, 1])  # its own stream: mixing never shifts the split's draws
    counts = [int((row_source == i).sum()) for i in range(len(sources))]
    plan = []
    for i, target in enumerate(targets(sources, counts)):
        rows = np.flatnonzero(row_source == i)
        plan.append(rows[_take(len(rows), target, rng)])
    return np.concatenate(plan) if plan else np.zeros(0, np.int64)


def split_groups(group: np.ndarray, content_hash: np.ndarray) -> np.ndarray:
    """One group id per row: rows with the same content share the group of the first of them,
    and a row without a group (-1, e.g. a packed block) starts its own."""
    n = len(group)
    group = np.where(group < 0, np.arange(n) + (group.max() + 1 if n else 0), group)
    _, first, inverse = np.unique(content_hash, return_index=True, return_inverse=True)
    return group[first][inverse]
