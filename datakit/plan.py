"""The split plan: which built rows each split holds, in what order, and what each source gave.

Mixing (``mixing.py``: weights and repeats) picks the rows, copies after originals; the split
(``split.py``) then assigns whole groups to ``train`` or ``validation``. The plan reads only the
per-row metadata the spill keeps (source, group, content hash, length), never the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .mixing import mix, split_groups
from .recipe import Recipe
from .split import split_indices


class RowMeta(Protocol):
    """What the plan reads of the built rows (``writers.spill.SpillWriter`` has it)."""

    @property
    def lengths(self) -> np.ndarray: ...

    def meta(self, key: str) -> np.ndarray: ...


@dataclass(frozen=True)
class SplitPlan:
    splits: dict[str, np.ndarray]  # split name -> built row numbers, in output order (copies included)
    sources: list[dict]  # per source: rows built, rows and tokens in the splits, rows per split
    groups: np.ndarray | None = None  # per built row: the split group the plan kept together


def plan_splits(recipe: Recipe, rows: RowMeta, *, merges: np.ndarray | None = None) -> SplitPlan:
    """Mix the sources (weights, repeats), then split by group. ``merges`` ((k, 2) group pairs,
    from the steps' ``group_merges()``) joins groups that a step linked after their rows went out."""
    source = rows.meta("source")
    mixed = mix(recipe.sources, source, seed=recipe.split.seed)
    group = rows.meta("group")
    if merges is not None and len(merges):
        group = merge_groups(group, merges)
    groups = split_groups(group, rows.meta("hash"))
    held = held_rows(rows)
    chosen = split_indices(len(mixed), recipe.split, groups=groups[mixed],
                           held=None if held is None else held[mixed])
    splits = {name: mixed[idx] for name, idx in chosen.items()}
    return SplitPlan(splits=splits, sources=source_accounts(recipe, splits, source, rows.lengths), groups=groups)


def held_rows(rows: RowMeta) -> np.ndarray | None:
    """Per row, 1 where it was held out of training in the build it came from (a ``format: build``
    source's validation split), or None when no row was (or the rows do not record it)."""
    try:
        held = rows.meta("held")
    except KeyError:
        return None
    return held if len(held) == len(rows.lengths) and held.any() else None


def group_merges(steps) -> np.ndarray:
    """Every step's ``group_merges()`` pairs (near-dedup with ``action: group`` has them)."""
    parts = [s.group_merges() for s in steps if hasattr(s, "group_merges")]
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)


def merge_groups(group: np.ndarray, merges: np.ndarray) -> np.ndarray:
    """``group`` with each group of ``merges[:, 0]`` replaced by the one it joined, ``merges[:, 1]``."""
    order = np.argsort(merges[:, 0])
    joined, into = merges[order, 0], merges[order, 1]
    at = np.minimum(np.searchsorted(joined, group), len(joined) - 1)
    return np.where(joined[at] == group, into[at], group)


def source_accounts(recipe: Recipe, splits: dict[str, np.ndarray], source: np.ndarray,
                    lengths: np.ndarray) -> list[dict]:
    """What each source contributed: rows built, and rows and tokens in each split."""
    out = []
    for i, src in enumerate(recipe.sources):
        entry = {"name": src.label, "rows_built": int((source == i).sum()), "rows": 0, "tokens": 0}
        for name, idx in splits.items():
            mine = idx[source[idx] == i]
            entry[f"{name}_rows"] = int(len(mine))
            entry["rows"] += int(len(mine))
            entry["tokens"] += int(lengths[mine].sum())
        out.append(entry)
    return out
