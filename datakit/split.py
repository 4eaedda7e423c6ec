"""Deterministic train/validation split.

``val_set_size`` below 1 is a fraction (rounded up, as ``datasets.train_test_split`` does), 1 or
more is a row count. ``groups`` (optional, one id per row) keeps every row of a group on one side:
rows that are copies or near-duplicates of each other never straddle the split.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import SplitError
from .recipe import SplitConfig


def validation_count(val_set_size: float, n_rows: int) -> int:
    if val_set_size <= 0:
        return 0
    n = math.ceil(val_set_size * n_rows) if val_set_size < 1 else int(val_set_size)
    if val_set_size >= 1 and val_set_size != int(val_set_size):
        raise SplitError(f"split.val_set_size: a count must be a whole number, got {val_set_size}")
    if n >= n_rows:
        raise SplitError(f"split.val_set_size: {val_set_size} asks for {n} validation rows but the "
                           f"build has only {n_rows} rows; lower it so that train keeps at least one")
    return n


def split_indices(n_rows: int, config: SplitConfig, *, groups: np.ndarray | None = None,
                  held: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row indices per split (``train`` and, when val_set_size > 0, ``validation``). ``held``
    (optional, a flag per row) marks rows that must not be trained on (they were validation rows
    of a source build): they and every row of their groups go to ``validation``, which then
    exists whatever val_set_size says, and count toward its size."""
    n_val = validation_count(config.val_set_size, n_rows)
    rng = np.random.default_rng(config.seed)
    if held is not None and held.any():
        groups = np.arange(n_rows) if groups is None else groups
        return _split_groups(groups, n_val, rng, shuffle=config.shuffle, held=held.astype(bool))
    if groups is None:
        order = rng.permutation(n_rows) if config.shuffle else np.arange(n_rows)
        if not n_val:
            return {"train": order}
        if config.shuffle:
            return {"train": order[n_val:], "validation": order[:n_val]}
        return {"train": order[:n_rows - n_val], "validation": order[n_rows - n_val:]}
    return _split_groups(groups, n_val, rng, shuffle=config.shuffle)


def _split_groups(groups: np.ndarray, n_val: int, rng, *, shuffle: bool,
                  held: np.ndarray | None = None) -> dict[str, np.ndarray]:
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # Groups in order of first appearance (input order), then shuffled when asked.
    by_appearance = np.argsort(first, kind="stable")
    group_order = rng.permutation(by_appearance) if shuffle else by_appearance[::-1]
    sizes = np.bincount(inverse, minlength=len(uniq))
    chosen = np.zeros(len(uniq), dtype=bool)
    if held is not None:
        chosen[inverse[held]] = True  # held-out rows take their whole group to validation
        group_order = group_order[~chosen[group_order]]
        n_val = max(0, n_val - int(sizes[chosen].sum()))
    if n_val:
        # whole groups, in order, until validation holds at least n_val rows
        k = int(np.searchsorted(np.cumsum(sizes[group_order]), n_val)) + 1
        chosen[group_order[:k]] = True
    in_val = chosen[inverse]
    rows = np.arange(len(groups))
    train, val = rows[~in_val], rows[in_val]
    if held is not None and len(train) == 0:
        raise SplitError("split: every row is held out (validation rows of the source builds, and the rows "
                         "grouped with them), so train would be empty; read a build's train split too")
    if shuffle:
        train, val = rng.permutation(train), rng.permutation(val)
    out = {"train": train}
    if n_val or len(val):
        out["validation"] = val
    return out
