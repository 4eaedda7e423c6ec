"""The step contract: a callable from a pyarrow RecordBatch to RecordBatches, and what it declares.

A step never knows which executor runs it: the same object works in the local executor, inside
``datasets.map(batched=True)`` with the arrow format, and in Ray Data's
``map_batches(batch_format="pyarrow")``. What an executor may do with it, the step declares:

- ``stateless``: every batch is handled on its own, so batches may run at once, on any shard, in
  any order (template, tokenize). A stateful step (pack carries a remainder, dedup remembers
  what it saw, filter appends to its rejects file) sees the batches of a shard one at a time.
- ``releases_gil``: most of its time is native code without the GIL (a tokenizer), so running
  several batches at once on threads pays; the executor cuts its threads there.
- ``scope``: which rows it must see together, in build order, for its output to be the same
  however the input is cut into shards:
  ``"shard"`` (the default) any run of rows on its own, such as one shard (template, tokenize,
  filter); ``"source"`` each source's rows as one stream (pretraining pack: blocks never mix
  sources and are cut in stream order); ``"build"`` every row of the build (dedup keeps the first
  copy it meets); ``"split"`` each split's rows after the plan (instruction pack). A distributed
  engine runs shard steps where the shards are and gathers rows only for the wider scopes.
- ``after_split`` (``scope == "split"``): it runs on each split's rows after the plan instead of
  before the spill (see ``stages.SplitRows`` for the hooks it may add).
- ``flush()`` is called once at the end of each shard (and split): it hands over held rows.
- ``close(ok=)`` is called once when the build ends, also when it fails (``ok=False``): it
  releases what the step opened (a filter's rejects file appears only when ``ok``).

Every row or token a step does not pass on is counted in ``stats`` under a reason
(``stats.add("rows_dropped", n, reason="overlong")``; the names are defined in ``counts.py``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

SCOPES = ("shard", "source", "build", "split")  # see ``scope`` above: from the narrowest to the widest

import numpy as np
import pyarrow as pa

from ..counts import Counts


@runtime_checkable
class Step(Protocol):
    stateless: bool
    releases_gil: bool
    scope: str
    after_split: bool
    stats: Counts

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def flush(self) -> list[pa.RecordBatch]: ...

    def close(self, *, ok: bool) -> None: ...


class BaseStep:
    """A stateful step that holds nothing at the end of a shard and opens nothing."""

    stateless = False
    releases_gil = False
    scope = "shard"

    def __init__(self) -> None:
        self.stats = Counts()

    @property
    def after_split(self) -> bool:
        return self.scope == "split"

    def flush(self) -> list[pa.RecordBatch]:
        return []

    def close(self, *, ok: bool) -> None:
        """Nothing to release."""


def missing_eos(ids: np.ndarray, lengths: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows that do not end with ``eos_id`` (an empty row neither), and where in the flat ``ids``
    their EOS goes: ``np.insert(ids, where, eos_id)`` appends it."""
    ends = np.cumsum(lengths)
    needs = np.ones(len(lengths), dtype=bool)
    nonempty = lengths > 0
    needs[nonempty] = ids[ends[nonempty] - 1] != eos_id
    return needs, ends[needs]
