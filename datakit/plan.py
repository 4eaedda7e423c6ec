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


def plan_splits(recipe: Recipe, rows: RowMeta) -> SplitPlan:
    """Mix the sources (weights, repeats), then split by group."""
    source = rows.meta("source")
    mixed = mix(recipe.sources, source, seed=recipe.split.seed)
    groups = split_groups(rows.meta("group"), rows.meta("hash"))[mixed]
    splits = {name: mixed[idx] for name, idx in split_indices(len(mixed), recipe.split, groups=groups).items()}
    return SplitPlan(splits=splits, sources=source_accounts(recipe, splits, source, rows.lengths))


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
