"""The columns every stage agrees on, and the Arrow helpers that build and read them.

Model columns (``MODEL_COLUMNS``): ``input_ids`` (int32), ``attention_mask`` (int8, 0 = padding)
and ``labels`` (int32, ``IGNORE_INDEX`` = not trained), one list per row. Provenance columns
(``PROVENANCE``) ride along with every row from the read stage to the spill: ``_where`` (the
record's ``file:line``), ``_source`` (its source's place in the recipe) and ``_group`` (its split
group: copies and duplicates of one row share a group, so they land on one side of the split;
-1 for a row made of several, a packed block, which starts its own).

This module imports nothing of datakit but its errors, so sources, transforms, tokenization and writers can all
depend on it.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import ColumnError

IGNORE_INDEX = -100  # the label of a token that is not trained (PyTorch's cross_entropy default)
MODEL_COLUMNS = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "labels": pa.int32()}
PROVENANCE = {"_where": pa.string(), "_source": pa.int32(), "_group": pa.int64()}
NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64, pa.uint64(): np.uint64}


def require(batch: pa.RecordBatch, names, *, by: str) -> None:
    """Raise ColumnError naming ``by`` (the stage or step) if ``batch`` lacks any of ``names``."""
    missing = [n for n in names if n not in batch.schema.names]
    if missing:
        raise ColumnError(f"{by}: the rows lack the column(s) {', '.join(missing)} "
                          f"(they have {', '.join(batch.schema.names)}); a step must keep them")


def row_offsets(lengths: np.ndarray, dtype=np.int64) -> np.ndarray:
    """[0, l0, l0+l1, ...]: where each row starts in the flat values, and the end (n + 1 entries)."""
    out = np.zeros(len(lengths) + 1, dtype=dtype)
    np.cumsum(lengths, out=out[1:])
    return out


def numeric_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """An Arrow array over a NumPy array's buffer (``pa.array`` would also load numpy.ma to look
    for a mask, which a plain array never has)."""
    values = np.ascontiguousarray(values, dtype=NUMPY_TYPES[value_type])
    return pa.Array.from_buffers(value_type, len(values), [None, pa.py_buffer(values)])


def list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A list<value_type> array from flat values and row lengths, without Python lists."""
    offsets = row_offsets(lengths, np.int32)
    return pa.ListArray.from_arrays(numeric_array(offsets, pa.int32()), numeric_array(values, value_type))


def flat_lists(column: pa.Array, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, lengths) of a list column, zero-copy where Arrow allows. ``lengths``, when
    given, are the column's (known from a sibling column): they are not computed again."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, (np.diff(offsets) if lengths is None else lengths)


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
    """The model columns: input_ids, attention_mask (all 1 unless given), labels (the ids unless given)."""
    if attention is None:
        attention = np.ones(len(ids), dtype=np.int8)
    if labels is None:
        labels = ids
    return pa.RecordBatch.from_arrays(
        [list_array(ids, lengths, pa.int32()), list_array(attention, lengths, pa.int8()),
         list_array(labels, lengths, pa.int32())],
        names=list(MODEL_COLUMNS))
