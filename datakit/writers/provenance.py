"""Row provenance: where every output row came from, in a side file per split.

``provenance/{split}.parquet`` in the build folder has one row per *piece* of an output row, in
output order (sorted by ``row``):

| column | meaning |
| --- | --- |
| ``row`` (int64) | the output row in the split (``load_from_disk(DIR)[split][row]``) |
| ``start`` (int32) | the token position in that row where the piece begins |
| ``source`` (int32) | the recipe source it came from (``manifest["sources"][source]``) |
| ``input`` (string) | the input file (for a build source: the split read, ``build/a/train``) |
| ``line`` (int64, null) | its 1-based line (JSON Lines, text) |
| ``record`` (int64, null) | its 0-based record (JSON array, Parquet, CSV, dataset folder; a build source's row) |
| ``offset`` (int64) | the token of the document where the piece begins (a document cut across blocks) |
| ``group`` (int64) | the split group the plan kept together (a build read as a source keeps it) |

An unpacked instruction row is one piece. A packed row (``pack`` after the split) has one piece
per row packed, at its place in the pack; a pretraining block one per document piece in it. A
side file keeps the training columns as they are (``load_from_disk`` and every trainer see the
same table) and costs a few bytes per row: Parquet's dictionary encoding stores each input path once.

While the steps run, ``PieceLog`` (held by the spill) records the pieces of every built row from
the ``_where`` column (``file:line``, ``file: row N``) or from ``_pieces`` (a block's documents,
made by ``pack``); ``ProvenanceSink`` writes them per split as the write stage gathers the rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import row_offsets

FOLDER = "provenance"
# a block's document pieces: where each starts in the block, and at which token of its document
PIECES_TYPE = pa.list_(pa.struct([("where", pa.string()), ("start", pa.int32()), ("offset", pa.int64())]))
_FIELDS = {"row": np.int64, "start": np.int32, "input": np.int32, "line": np.int64, "record": np.int64,
           "offset": np.int64}


def parse_where(where: str) -> tuple[str, int, int]:
    """``"a.jsonl:12"`` -> (``a.jsonl``, 12, -1); ``"a.json: row 3"`` -> (``a.json``, -1, 3)."""
    file, _, pos = where.rpartition(":")
    pos = pos.strip()
    if pos.startswith("row "):
        return file, -1, int(pos[4:])
    return file, int(pos), -1


class PieceLog:
    """The pieces of the built rows, in row order, as flat arrays (about 33 bytes a piece)."""

    def __init__(self) -> None:
        self.inputs: dict[str, int] = {}
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in _FIELDS}
        self._whole: dict[str, np.ndarray] | None = None

    def add(self, batch: pa.RecordBatch, first_row: int) -> None:
        """Record the pieces of ``batch``, whose rows are built rows ``first_row``, ``first_row + 1``..."""
        names = batch.schema.names
        n = batch.num_rows
        if "_pieces" in names:
            col = batch.column("_pieces")
            counts = np.diff(col.offsets.to_numpy())
            values = col.flatten()  # the pieces of these rows (a slice's own, not its parent's)
            wheres = values.field("where").to_pylist()
            start = values.field("start").to_numpy(zero_copy_only=False)
            offset = values.field("offset").to_numpy(zero_copy_only=False)
            rows = first_row + np.repeat(np.arange(n), counts)
        elif "_where" in names:
            wheres = batch.column("_where").to_pylist()
            start, offset, rows = np.zeros(n, np.int32), np.zeros(n, np.int64), first_row + np.arange(n)
        else:
            return
        inputs, lines, records = self._parse(wheres)
        for name, values in (("row", rows), ("start", start), ("input", inputs), ("line", lines),
                             ("record", records), ("offset", offset)):
            self._parts[name].append(np.asarray(values, dtype=_FIELDS[name]))
        self._whole = None

    def _parse(self, wheres: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inputs = np.empty(len(wheres), np.int32)
        lines = np.empty(len(wheres), np.int64)
        records = np.empty(len(wheres), np.int64)
        ids = self.inputs
        for k, where in enumerate(wheres):
            file, lines[k], records[k] = parse_where(where)
            inputs[k] = ids.setdefault(file, len(ids))
        return inputs, lines, records

    def arrays(self) -> dict[str, np.ndarray]:
        if self._whole is None:
            self._whole = {name: np.concatenate(parts) if parts else np.zeros(0, _FIELDS[name])
                           for name, parts in self._parts.items()}
        return self._whole

    def starts(self, n_rows: int) -> np.ndarray:
        """Where each built row's pieces begin in ``arrays()`` (n_rows + 1 entries)."""
        return np.searchsorted(self.arrays()["row"], np.arange(n_rows + 1))


class ProvenanceSink:
    """One split's provenance file, written a gathered chunk at a time."""

    def __init__(self, folder: Path, split: str, *, log: PieceLog, n_rows: int, source: np.ndarray,
                 groups: np.ndarray, lengths: np.ndarray):
        import pyarrow.parquet as pq

        (folder / FOLDER).mkdir(exist_ok=True)
        self.path = folder / FOLDER / f"{split}.parquet"
        self.log, self.source, self.groups, self.lengths = log, source, groups, lengths
        self.starts = log.starts(n_rows)
        names = list(log.inputs)
        self.names = pa.array(names, pa.string())
        self.rows = 0  # output rows so far
        self.pieces = 0
        self._writer = pq.ParquetWriter(str(self.path), schema(), compression="zstd")

    def add(self, built: np.ndarray, per_row: np.ndarray) -> None:
        """The next output rows: made of the built rows ``built`` (in order), ``per_row[k]`` of them
        for output row k (1 each unless rows were packed together)."""
        out_row = self.rows + np.repeat(np.arange(len(per_row)), per_row)
        lengths = self.lengths[built]
        ends = np.cumsum(lengths)
        base = ends - lengths  # where each built row starts in its output row
        first = row_offsets(per_row)[:-1]
        base = base - np.repeat(base[first] if len(first) else first, per_row)
        a, b = self.starts[built], self.starts[built + 1]
        counts = b - a
        at = np.repeat(a - row_offsets(counts)[:-1], counts) + np.arange(int(counts.sum()))
        log = self.log.arrays()
        line, record = log["line"][at], log["record"][at]
        table = pa.table({
            "row": np.repeat(out_row, counts).astype(np.int64),
            "start": (np.repeat(base, counts) + log["start"][at]).astype(np.int32),
            "source": np.repeat(self.source[built], counts).astype(np.int32),
            "input": pa.DictionaryArray.from_arrays(pa.array(log["input"][at], pa.int32()), self.names),
            "line": pa.array(line, pa.int64(), mask=line < 0),
            "record": pa.array(record, pa.int64(), mask=record < 0),
            "offset": log["offset"][at],
            "group": np.repeat(self.groups[built], counts).astype(np.int64)}, schema=schema())
        self._writer.write_table(table)
        self.rows += len(per_row)
        self.pieces += len(at)

    def close(self) -> dict:
        self._writer.close()
        return {"path": self.path.relative_to(self.path.parent.parent).as_posix(), "rows": self.rows,
                "pieces": self.pieces, "bytes": self.path.stat().st_size}


def schema() -> pa.Schema:
    return pa.schema([("row", pa.int64()), ("start", pa.int32()), ("source", pa.int32()),
                      ("input", pa.dictionary(pa.int32(), pa.string())), ("line", pa.int64()),
                      ("record", pa.int64()), ("offset", pa.int64()), ("group", pa.int64())])


def provenance_file(build: str | Path, split: str) -> Path:
    return Path(build) / FOLDER / f"{split}.parquet"


def read_pieces(build: str | Path, split: str, row: int) -> list[dict] | None:
    """The pieces of output row ``row`` of ``split``, or None when the build has no provenance file."""
    path = provenance_file(build, split)
    if not path.is_file():
        return None
    return _read(path, filters=[("row", "=", row)]).to_pylist()


def _read(path: Path, **options):
    """The provenance table at ``path``, or one line saying that the file is damaged."""
    import pyarrow.parquet as pq

    from ..errors import BuildNotFoundError

    try:
        return pq.read_table(path, **options)
    except (OSError, pa.ArrowException) as e:
        raise BuildNotFoundError(f"{path}: not a readable provenance file ({str(e).splitlines()[0]}); the build "
                                 f"is damaged, rebuild it") from None


def read_groups(build: str | Path, split: str, n_rows: int) -> np.ndarray | None:
    """Per output row of ``split``, the split group its build's plan kept together (the group of
    its first piece), or None when the build has no provenance file."""
    path = provenance_file(build, split)
    if not path.is_file():
        return None
    table = _read(path, columns=["row", "group"])
    rows = table.column("row").to_numpy()
    groups = np.arange(n_rows, dtype=np.int64) - n_rows  # a row without pieces: a group of its own
    first = np.flatnonzero(np.diff(rows, prepend=-1) != 0)
    groups[rows[first]] = table.column("group").to_numpy()[first]
    return groups


__all__ = ["FOLDER", "PIECES_TYPE", "PieceLog", "ProvenanceSink", "parse_where", "provenance_file",
           "read_groups", "read_pieces", "schema"]
