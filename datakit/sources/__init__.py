"""Sources: files, globs, folders and dataset folders -> canonical pyarrow RecordBatches."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ..errors import SourceError
from ..recipe import SourceConfig
from ..columns import numeric_array, with_columns
from .formats import SCHEMAS, to_batch
from .jsonl_arrow import read_jsonl_arrow
from .paths import JSONL_SUFFIXES, expand, is_dataset_folder
from .readers import Chunk, FileInfo, Span, read_file

__all__ = ["SCHEMAS", "FileInfo", "Span", "expand", "input_bytes", "read_part", "read_source"]


def input_bytes(sources: list[SourceConfig]) -> int:
    """The bytes the sources will read (a dataset folder counts its Arrow files): the progress total."""
    total = 0
    for cfg in sources:
        if cfg.is_build:  # its rows go to the spill as they are; they are not read as text
            continue
        for p in expand(cfg.path):
            total += p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*.arrow"))
    return total


def read_source(cfg: SourceConfig, *, files: list[FileInfo], index: int = 0, first_row: int = 0,
                on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[pa.RecordBatch]:
    """Stream one source as canonical batches. ``files`` receives a FileInfo per file read
    (path, bytes, records, sha256), which the manifest records. Rows get ``_source`` (= ``index``)
    and ``_group`` (a build-wide row number starting at ``first_row``)."""
    row = first_row
    if cfg.document_separator is not None and cfg.format != "text":
        raise SourceError("document_separator only applies to format text", file=cfg.path)
    for path in expand(cfg.path):
        info = FileInfo(path=str(path))
        files.append(info)
        for batch in read_part(cfg, Path(path), info, index=index, first_row=row, on_bytes=on_bytes):
            row += batch.num_rows
            yield batch
        info.sha256 = info._hash.hexdigest()
        if info.records == 0:
            raise SourceError("empty input: no records", file=str(path))


def read_part(cfg: SourceConfig, path: Path, info: FileInfo, *, index: int, first_row: int,
              span: Span | None = None, on_bytes: Callable[[int], None] = lambda n: None
              ) -> Iterator[pa.RecordBatch]:
    """One file of a source (or, with ``span``, one byte range of a JSON Lines file) as canonical
    batches with the provenance columns; ``info`` counts its bytes and records."""
    row = first_row
    for chunk in _chunks(cfg, path, info, span):
        info.bytes += chunk.nbytes
        on_bytes(chunk.nbytes)
        n = len(chunk.rows) if chunk.batch is None else chunk.batch.num_rows
        if n:
            info.records += n
            batch = chunk.batch if chunk.batch is not None else to_batch(cfg.format, chunk.rows, chunk.wheres, cfg.columns)
            yield with_columns(batch, {"_source": numeric_array(np.full(n, index, np.int32), pa.int32()),
                                       "_group": numeric_array(np.arange(row, row + n), pa.int64())})
            row += n


def _chunks(cfg: SourceConfig, path: Path, info: FileInfo, span: Span | None) -> Iterator[Chunk]:
    """JSON Lines read through pyarrow (``jsonl_arrow``: the same chunks and errors), the rest by ``read_file``."""
    if path.suffix.lower() in JSONL_SUFFIXES and not is_dataset_folder(path):
        return read_jsonl_arrow(path, info, fmt=cfg.format, columns=cfg.columns, span=span)
    return read_file(path, info, separator=cfg.document_separator, span=span)
