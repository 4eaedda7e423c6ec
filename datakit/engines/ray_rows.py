"""Built rows that live in per-shard Arrow files written by the workers of a distributed engine.

The driver keeps only what the split plan reads, per row: its length, source, split group,
content hash and held-out flag (8 + 4 + 8 + 8 + 1 = 29 bytes, 29 MB per million rows), and, for
the provenance files, where each row's pieces came from (~33 bytes a piece, as a local build
keeps). The rows themselves stay in the files, on storage every node sees, and are gathered from
there by whoever writes a split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import MODEL_COLUMNS as COLUMNS
from ..columns import flat_lists
from ..writers.provenance import PieceLog
from ..writers.spill import OPTIONAL, _row_hashes

META = {"lengths": np.int64, "source": np.int32, "group": np.int64, "hash": np.uint64, "held": np.int8}


def row_meta(batch: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
    """The plan's metadata of rows (a row without ``_group`` has -1: no group yet). Rows that are
    not tokenized yet (a shard between two steps) have length 0 and hash 0."""
    names = batch.schema.names
    if "_source" not in names:
        raise ValueError("rows lack the provenance column _source")
    n = batch.num_rows
    group = batch.column("_group") if "_group" in names else None
    meta = {"lengths": np.zeros(n, np.int64), "source": _numpy(batch.column("_source"), np.int32),
            "group": np.full(n, -1, np.int64) if group is None else _numpy(group, np.int64),
            "hash": np.zeros(n, np.uint64),
            "held": _numpy(batch.column("_held"), np.int8) if "_held" in names else np.zeros(n, np.int8)}
    if "input_ids" in names:
        values, lengths = flat_lists(batch.column("input_ids"))
        meta["lengths"] = lengths.astype(np.int64)
        meta["hash"] = _row_hashes(np.ascontiguousarray(values, dtype=np.int32), lengths)
    return meta


def _numpy(column, dtype) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def empty_meta() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, t) for k, t in META.items()}


def model_columns(schema: pa.Schema) -> list[str]:
    """What the spill keeps of a row, in its order: input_ids, attention_mask, labels, and
    position_ids when the steps make them (documents isolated inside blocks). seq_lens are derived
    from position_ids when the split is gathered, as from the local spill."""
    return [n for n in (*COLUMNS, *OPTIONAL) if n in schema.names]


class ShardRows:
    """The rows of a build as a list of Arrow files (in build order) plus their metadata.

    It has what ``plan.plan_splits`` and ``stages.SplitRows`` read of a ``SpillWriter``:
    ``rows``, ``lengths``, ``meta(key)`` and ``gather(indices, offsets)``."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[str] = []
        self._starts = np.zeros(1, np.int64)
        self._meta = empty_meta()
        self._tables: dict[int, pa.Table] = {}
        self._pieces: PieceLog | None = None
        self.tokens = 0  # attended tokens of the rows (padding not counted, as the spill counts)
        self._added = None  # (path, writer, metas) of the rows ``write`` adds

    def set(self, files: list[str], metas: list[dict[str, np.ndarray]], *, tokens: int = 0) -> None:
        """The built rows: ``files[i]`` holds the rows that ``metas[i]`` describes, in order."""
        self.tokens = tokens
        self.files = list(files)
        counts = [len(m["lengths"]) for m in metas]
        self._starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=self._starts[1:])
        self._meta = {k: np.concatenate([m[k] for m in metas]).astype(t, copy=False) if metas else np.zeros(0, t)
                      for k, t in META.items()}
        self._tables = {}
        self._pieces = None

    @property
    def pieces(self) -> PieceLog:
        """Where each built row came from (``writers/provenance.py``), in build order: read from the
        shard files' ``_where`` (or a block's ``_pieces``) column on the first use, as the local
        spill records it while the rows arrive (~33 bytes a piece on the driver)."""
        if self._pieces is None:
            log = PieceLog()
            for part, path in enumerate(self.files):
                table = self._table(part)
                names = [n for n in ("_pieces", "_where") if n in table.schema.names][:1]
                first = int(self._starts[part])
                for batch in table.select(names).to_batches():
                    log.add(batch, first)
                    first += batch.num_rows
            self._pieces = log
        return self._pieces

    @property
    def rows(self) -> int:
        return int(self._starts[-1]) + (sum(len(m["lengths"]) for m in self._added[2]) if self._added else 0)

    def write(self, batch: pa.RecordBatch) -> None:
        """Rows the driver adds after the workers' ones (the ``format: build`` sources, read as they
        are): into a file of their own, the build's last, which ``close`` adds to the others."""
        if self._added is None:
            path = self.folder / "driver-rows.arrow"
            self._added = (path, pa.ipc.new_file(str(path), batch.schema), [])
        self._added[1].write_batch(batch)
        self._added[2].append(row_meta(batch))
        self.tokens += int(flat_lists(batch.column("attention_mask"))[0].sum())

    @property
    def lengths(self) -> np.ndarray:
        return self._meta["lengths"]

    def meta(self, key: str) -> np.ndarray:
        return self._meta[key]

    def _table(self, part: int) -> pa.Table:
        table = self._tables.get(part)
        if table is None:
            table = self._tables[part] = read_rows(self.files[part])
        return table

    def gather(self, rows: np.ndarray, offsets: np.ndarray | None = None) -> pa.RecordBatch:
        """Rows ``rows`` (build-wide numbers, in that order) as one batch of model columns."""
        rows = np.asarray(rows, np.int64)
        part = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(part, kind="stable")
        pieces = []
        for p in np.unique(part):
            mine = order[part[order] == p]
            table = self._table(int(p))
            pieces.append(table.select(model_columns(table.schema)).take(pa.array(rows[mine] - self._starts[p])))
        taken = pa.concat_tables(pieces) if pieces else None
        if taken is None:
            raise ValueError("gather of no rows")
        inverse = np.empty(len(rows), np.int64)
        inverse[order] = np.arange(len(rows))
        return taken.take(pa.array(inverse)).combine_chunks().to_batches()[0]

    def release(self) -> None:
        self._tables = {}

    def close(self) -> None:
        self._tables = {}
        if self._added is not None:
            path, writer, metas = self._added
            writer.close()
            self._added = None
            old = [{k: v[a:b] for k, v in self._meta.items()} for a, b in zip(self._starts[:-1], self._starts[1:])]
            added = {k: np.concatenate([m[k] for m in metas]) for k in META}
            self.set([*self.files, str(path)], [*old, added], tokens=self.tokens)


def write_rows(path: Path, batches) -> tuple[int, int, dict[str, np.ndarray]]:
    """Write batches to one Arrow file; returns the rows, their tokens (attention_mask 1: padding
    not counted, as the spill counts them) and the rows' metadata."""
    writer = None
    metas = []
    rows = tokens = 0
    try:
        for batch in batches:
            if writer is None:
                writer = pa.ipc.new_file(str(path), batch.schema)
            writer.write_batch(batch)
            metas.append(row_meta(batch))
            rows += batch.num_rows
            if "attention_mask" in batch.schema.names:
                tokens += int(flat_lists(batch.column("attention_mask"))[0].sum())
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return 0, 0, empty_meta()
    return rows, tokens, {k: np.concatenate([m[k] for m in metas]) for k in META}


def read_rows(path: str) -> pa.Table:
    """A shard file, memory-mapped (its buffers keep the map open while they live)."""
    return pa.ipc.open_file(pa.memory_map(path)).read_all()
