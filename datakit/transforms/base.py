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

IGNORE_INDEX = -100
# Columns that ride along with every row: where it came from (file:line), which source, and its
# split group (copies and duplicates of one row share a group, so they land on one side).
PROVENANCE = ("_where", "_source", "_group")


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


NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64, pa.uint64(): np.uint64}


def numeric_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """An Arrow array over a NumPy array's buffer (``pa.array`` would also load numpy.ma to look
    for a mask, which a plain array never has)."""
    values = np.ascontiguousarray(values, dtype=NUMPY_TYPES[value_type])
    return pa.Array.from_buffers(value_type, len(values), [None, pa.py_buffer(values)])


def list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A list<value_type> array from flat values and row lengths, without Python lists."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(numeric_array(offsets, pa.int32()), numeric_array(values, value_type))


def flat_lists(column: pa.Array, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, lengths) of a list column, zero-copy where Arrow allows. ``lengths``, when
    given, are the column's (known from a sibling column): they are not computed again."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, (np.diff(offsets) if lengths is None else lengths)


def missing_eos(ids: np.ndarray, lengths: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows that do not end with ``eos_id`` (an empty row neither), and where in the flat ``ids``
    their EOS goes: ``np.insert(ids, where, eos_id)`` appends it."""
    ends = np.cumsum(lengths)
    needs = np.ones(len(lengths), dtype=bool)
    nonempty = lengths > 0
    needs[nonempty] = ids[ends[nonempty] - 1] != eos_id
    return needs, ends[needs]


def provenance(batch: pa.RecordBatch, rows: np.ndarray | None = None) -> dict[str, pa.Array]:
    """The provenance columns of ``batch`` (those it has), for ``rows`` if given."""
    if rows is not None and len(rows) == batch.num_rows and np.array_equal(rows, np.arange(batch.num_rows)):
        rows = None
    out = {}
    for name in PROVENANCE:
        if name in batch.schema.names:
            col = batch.column(name)
            if rows is None:
                out[name] = col
            elif col.type in NUMPY_TYPES:  # picked in NumPy: Array.take would load pyarrow.compute
                out[name] = numeric_array(col.to_numpy(zero_copy_only=False)[rows], col.type)
            else:
                values = col.to_pylist()
                out[name] = pa.array([values[i] for i in rows.tolist()], col.type)
    return out


def with_columns(batch: pa.RecordBatch, extra: dict[str, pa.Array]) -> pa.RecordBatch:
    arrays = batch.columns + list(extra.values())
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names + list(extra))


def model_batch(ids: np.ndarray, lengths: np.ndarray, *, attention: np.ndarray | None = None,
                labels: np.ndarray | None = None) -> pa.RecordBatch:
    """The output rows: input_ids (int32), attention_mask (int8), labels (int32, -100 = ignored)."""
    if attention is None:
        attention = np.ones(len(ids), dtype=np.int8)
    if labels is None:
        labels = ids
    return pa.RecordBatch.from_arrays(
        [list_array(ids, lengths, pa.int32()), list_array(attention, lengths, pa.int8()),
         list_array(labels, lengths, pa.int32())],
        names=["input_ids", "attention_mask", "labels"])
