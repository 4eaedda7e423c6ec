"""The step interface: a callable from a pyarrow RecordBatch to RecordBatches.

A step never knows which executor runs it: the same object works in a plain loop, inside
``datasets.map(batched=True)`` with the arrow format, and in Ray Data's
``map_batches(batch_format="pyarrow")``. A step that keeps state across the batches of a shard
(a packer keeps its remainder) hands it over in ``flush()``, called once at the end of a shard.
Every row or token a step does not pass on is counted in ``stats`` under a reason.
"""
from __future__ import annotations

from collections import Counter
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


@runtime_checkable
class Step(Protocol):
    stats: Counter

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def flush(self) -> list[pa.RecordBatch]: ...


class BaseStep:
    """Counts in ``stats``; no state to flush. A step with ``after_split = True`` runs on each
    split's rows after the plan (see ``stages.SplitRows`` for its hooks) instead of before the spill."""

    after_split = False

    def __init__(self) -> None:
        self.stats: Counter = Counter()

    def flush(self) -> list[pa.RecordBatch]:
        return []

    def close(self, *, ok: bool) -> None:
        """Called once when the build ends: ``ok`` tells whether it succeeded."""


def missing_eos(ids: np.ndarray, lengths: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows that do not end with ``eos_id`` (an empty row neither), and where in the flat ``ids``
    their EOS goes: ``np.insert(ids, where, eos_id)`` appends it."""
    ends = np.cumsum(lengths)
    needs = np.ones(len(lengths), dtype=bool)
    nonempty = lengths > 0
    needs[nonempty] = ids[ends[nonempty] - 1] != eos_id
    return needs, ends[needs]
