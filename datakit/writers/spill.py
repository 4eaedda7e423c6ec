"""The spill: every row the steps make, held as flat columns until the splits are known.

Rows are held in memory up to 64 MB, then spilled to flat column files as they are made, so
memory stays flat however large the input. Per row it also keeps what the split plan needs: the
source, the split group and a content hash (copies of a row never straddle the split). Writers
then gather each split a chunk at a time (``SplitRows.batches`` in ``stages``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import MODEL_COLUMNS as COLUMNS
from ..columns import NUMPY_TYPES, flat_lists, list_array, model_batch, require, row_offsets, with_columns
from .provenance import PieceLog

# kept when the steps make them: position_ids of documents isolated inside blocks (seq_lens, a
# list per row rather than per token, is derived from them in stages.SplitRows.batches)
OPTIONAL = {"position_ids": pa.int32()}
IN_MEMORY = 64 << 20  # rows are held in memory up to this size, and spilled to files past it
_DTYPES = {name: np.dtype(NUMPY_TYPES[t]) for name, t in {**COLUMNS, **OPTIONAL}.items()}


class SpillWriter:
    """Holds output rows as flat columns: in memory while they are few (``IN_MEMORY`` bytes), then
    in flat binary files, one per column, plus the row lengths.

    Flat files make the later gather a positioned read per row into the output buffer.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict | None = None
        self.columns: list[str] = list(COLUMNS)
        self._held: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
        self._held_bytes = 0
        self.lengths_parts: list[np.ndarray] = []
        self.meta_parts: dict[str, list[np.ndarray]] = {"source": [], "group": [], "hash": [], "held": []}
        self.rows = 0
        self.tokens = 0  # attention_mask 1: padding not counted
        self.pieces = PieceLog()  # where each row came from (writers/provenance.py)
        self._whole: dict[str, np.ndarray] | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Keep ``batch``'s rows; it must have the model columns and ``_source`` and ``_group``."""
        require(batch, [*COLUMNS, "_source", "_group"], by="the spill")
        if self.rows == 0:
            self.columns = list(COLUMNS) + [n for n in OPTIONAL if n in batch.schema.names]
            self._held = {name: [] for name in self.columns}
        lengths = None
        for name in self.columns:
            values, lengths = flat_lists(batch.column(name), lengths)
            values = np.ascontiguousarray(values, dtype=_DTYPES[name])
            if name == "attention_mask":
                self.tokens += int(values.sum())
            if name == "input_ids":
                self.meta_parts["hash"].append(_row_hashes(values, lengths))
            if self._files is None:
                self._held[name].append(values)
                self._held_bytes += values.nbytes
            else:
                values.tofile(self._files[name])
        if self._files is None and self._held_bytes > IN_MEMORY:
            self._spill()
        self.meta_parts["source"].append(batch.column("_source").to_numpy())
        self.meta_parts["group"].append(batch.column("_group").to_numpy())
        held = batch.column("_held").to_numpy() if "_held" in batch.schema.names else np.zeros(batch.num_rows, np.int8)
        self.meta_parts["held"].append(held.astype(np.int8, copy=False))
        self.lengths_parts.append(lengths.astype(np.int64))
        self.pieces.add(batch, self.rows)
        self.rows += batch.num_rows

    def _spill(self) -> None:
        """From here on, rows go to the files (the ones held so far first)."""
        self._files = {name: open(self.folder / f"{name}.bin", "wb") for name in self.columns}
        for name, parts in self._held.items():
            for values in parts:
                values.tofile(self._files[name])
        self._held = {name: [] for name in self.columns}
        self._held_bytes = 0

    def meta(self, key: str) -> np.ndarray:
        """Per row: ``source`` index, ``group`` (-1: none yet), content ``hash`` of its input_ids, or
        ``held`` (1: held out of training in the build it was read from, ``format: build``)."""
        parts = self.meta_parts[key]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def close(self) -> None:
        for f in (self._files or {}).values():
            f.close()

    def release(self) -> None:
        """Drop the rows held for the gather."""
        self._whole = None
        self._held = {name: [] for name in self.columns}

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self.lengths_parts) if self.lengths_parts else np.zeros(0, np.int64)

    def gather(self, rows: np.ndarray, offsets: np.ndarray) -> pa.RecordBatch:
        """Rows ``rows`` (in that order) as one output batch; ``offsets`` = cumsum of lengths.

        Held rows are picked in memory. From the files, each row is read with ``pread`` straight
        into the output buffer. A memory map would be simpler, but the kernel maps ~64 KB of cached
        neighbours around every page touched, so random rows of a large spill would pull most of it
        into the resident set.
        """
        lengths = offsets[rows + 1] - offsets[rows]
        out_starts = row_offsets(lengths)
        if self._files is None:  # the rows are held: one fancy index per column
            if self._whole is None:
                self._whole = {n: np.concatenate(parts) if parts else np.zeros(0, _DTYPES[n])
                               for n, parts in self._held.items()}
                self._held = {name: [] for name in self.columns}
            at = np.repeat(offsets[rows] - out_starts[:-1], lengths) + np.arange(int(out_starts[-1]))
            return _batch({n: values[at] for n, values in self._whole.items()}, lengths)
        cols = {}
        for name in self.columns:
            dtype = _DTYPES[name]
            buf = np.empty(int(out_starts[-1]), dtype=dtype)
            view = memoryview(buf).cast("B")
            size = dtype.itemsize
            fd = os.open(self.folder / f"{name}.bin", os.O_RDONLY)
            try:
                for row, start, n in zip(rows.tolist(), out_starts[:-1].tolist(), lengths.tolist()):
                    if n:
                        os.preadv(fd, [view[start * size:(start + n) * size]], int(offsets[row]) * size)
            finally:
                os.close(fd)
            cols[name] = buf
        return _batch(cols, lengths)


def _batch(cols: dict[str, np.ndarray], lengths: np.ndarray) -> pa.RecordBatch:
    batch = model_batch(cols["input_ids"], lengths, attention=cols["attention_mask"], labels=cols["labels"])
    if "position_ids" not in cols:
        return batch
    return with_columns(batch, {"position_ids": list_array(cols["position_ids"], lengths, pa.int32())})


_MIX = np.random.default_rng(20240607).integers(1, 2**63, size=4096, dtype=np.uint64) | np.uint64(1)


def _row_hashes(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per row: sum of id * a position-keyed odd constant (wrapping), plus length."""
    if len(lengths) == 0:
        return np.zeros(0, np.uint64)
    starts = row_offsets(lengths)[:-1]
    pos = np.arange(len(values)) - np.repeat(starts, lengths)
    np.bitwise_and(pos, len(_MIX) - 1, out=pos)  # len(_MIX) is a power of two
    contrib = values.astype(np.uint64)
    contrib += np.uint64(1)
    contrib *= _MIX[pos]
    out = np.zeros(len(lengths), dtype=np.uint64)
    nonempty = lengths > 0
    out[nonempty] = np.add.reduceat(contrib, starts[nonempty]) if len(contrib) else 0
    return out ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
