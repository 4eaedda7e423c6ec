"""``parquet``: one folder of Parquet shards per split, named as the Hugging Face Hub names them
(``train-00000-of-00003.parquet``), with a ``_manifest.json`` beside them.

The columns and types are those of the Arrow build (``input_ids`` list<int32>, ``attention_mask``
list<int8>, ``labels`` list<int32>, and whatever else the build writes), and the schema carries the
same ``huggingface`` metadata, so ``datasets.load_dataset("parquet", ...)`` gets the same Features.
polars, DuckDB, Spark and ``pyarrow.dataset`` read a split folder as it is; they skip files whose
name starts with ``_``, so the manifest does not get in their way.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .arrow import output_schema
from .files import FileEntry, file_entry

SHARD_MANIFEST = "_manifest.json"


class ParquetWriter:
    """Writes one split as Parquet shards of about ``shard_size`` bytes each.

    Every ``write`` becomes one row group (the build hands over ~1024 rows at a time); a shard is
    closed as soon as it reaches ``shard_size``, so a shard overshoots by at most one row group.
    """

    format = "parquet"

    def __init__(self, root: Path, *, split: str, shard_size: int, compression: str = "zstd"):
        self.root = root
        self.split = split
        self.folder = root / "parquet" / split
        self.folder.mkdir(parents=True)
        self.shard_size = shard_size
        self.compression = None if compression == "none" else compression
        self._writer: pq.ParquetWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._schema: pa.Schema | None = None
        self._parts: list[tuple[Path, int]] = []  # (temporary path, rows)
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:  # the build's list columns, with their `datasets` Features
            self._schema = output_schema({f.name: f.type.value_type for f in batch.schema})
        batch = batch.replace_schema_metadata(self._schema.metadata)
        if self._writer is None:
            path = self.folder / f".part-{len(self._parts):05d}.parquet"
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self._schema, compression=self.compression)
            self._parts.append((path, 0))
        self._writer.write_batch(batch)
        path, rows = self._parts[-1]
        self._parts[-1] = (path, rows + batch.num_rows)
        self._rows += batch.num_rows
        if self._sink.tell() >= self.shard_size:
            self._close_shard()

    def _close_shard(self) -> None:
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None

    def close(self) -> list[FileEntry]:
        """Finish the last shard, name the shards ``{split}-{i}-of-{n}`` and write the manifest.

        A split without rows still gets one shard, with the build's schema, so that readers find
        its columns."""
        if self._writer is not None:
            self._close_shard()
        if not self._parts:
            self._schema = self._schema or output_schema()
            path = self.folder / ".part-00000.parquet"
            pq.write_table(self._schema.empty_table(), str(path), compression=self.compression)
            self._parts.append((path, 0))
        n = len(self._parts)
        entries = []
        for i, (tmp, rows) in enumerate(self._parts):
            final = self.folder / f"{self.split}-{i:05d}-of-{n:05d}.parquet"
            tmp.rename(final)
            entries.append(file_entry(final, root=self.root, format=self.format, split=self.split, rows=rows))
        manifest = {"split": self.split, "rows": self._rows, "compression": self.compression or "none",
                    "files": [{"path": Path(e["path"]).name, "rows": e["rows"], "bytes": e["bytes"]}
                              for e in entries],
                    "schema": {f.name: str(f.type) for f in self._schema}}
        (self.folder / SHARD_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return entries + [file_entry(self.folder / SHARD_MANIFEST, root=self.root, format=self.format,
                                     split=self.split, rows=None)]
