"""Writers: each turns the rows of every split into one output format inside the build folder.

A writer is registered in ``WRITERS`` under the name a recipe uses for it (``output.formats``),
as a factory of the build's ``WriteContext``. ``open(folder, split)`` returns a sink that takes
the split's batches (``write``) and is closed once (``close``); ``finish(folder, splits)`` writes
what covers all splits. Every file a writer makes goes into its ``files`` (``files.FileEntry``),
which the manifest lists. A writer with ``documents = True`` (megatron) gets each split's
documents, as they were before ``pack`` cut them into blocks, instead of its rows. The build
folder itself is staged and renamed into place by ``atomic.staged_output``; ``manifest`` writes
and reads ``manifest.json``.

| name | layout in the build folder | reader |
| --- | --- | --- |
| hf | dataset_dict.json, {split}/ (the folder's top) | datasets.load_from_disk |
| parquet | parquet/{split}/{split}-00000-of-0000N.parquet, _manifest.json | polars, DuckDB, Spark, pyarrow |
| megatron | megatron/{split}.bin + .idx (documents) | megatron.core IndexedDataset |
| mds | mds/{split}/index.json + shard.00000.mds | streaming.StreamingDataset, llm-foundry |
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import pyarrow as pa

from ..errors import OutputError
from ..recipe import OutputOptions
from .arrow import FEATURES, ArrowWriter, output_schema
from .atomic import staged_output
from .background import BackgroundSink
from .files import FileEntry, parse_size
from .spill import SpillWriter


class SplitSink(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class Writer(Protocol):
    name: str
    documents: bool
    files: list[FileEntry]
    stats: Counter

    def open(self, folder: Path, split: str) -> SplitSink: ...

    def finish(self, folder: Path, splits: list[str]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class WriteContext:
    """What writers may need to know about the build."""

    fingerprint: str  # the build's inputs fingerprint
    sft: bool
    options: OutputOptions = field(default_factory=OutputOptions)
    vocab_size: int = 0
    eos_id: int | None = None


class PerSplit:
    """A writer made of one sink per split whose ``close()`` returns the files it wrote."""

    def __init__(self, name: str, open_split: Callable[[Path, str], Any], *, documents: bool = False):
        self.name = name
        self.documents = documents
        self.files: list[FileEntry] = []
        self.stats: Counter = Counter()  # what the sinks counted (rows a format cannot hold, ...)
        self._open = open_split

    def open(self, folder: Path, split: str) -> SplitSink:
        return _Recorded(self._open(folder, split), self.files, self.stats)

    def finish(self, folder: Path, splits: list[str]) -> None:
        pass


class _Recorded:
    """Runs ``sink`` in a thread of its own and records what it wrote and counted."""

    def __init__(self, sink, files: list[FileEntry], stats: Counter):
        self.sink, self.files, self.stats = BackgroundSink(sink), files, stats

    def write(self, batch: pa.RecordBatch) -> None:
        self.sink.write(batch)

    def close(self) -> None:
        self.files.extend(self.sink.close())
        self.stats.update(getattr(self.sink.sink, "stats", {}))


def _parquet(ctx: WriteContext) -> Writer:
    from .parquet import ParquetWriter

    opts = ctx.options.parquet
    return PerSplit("parquet", lambda folder, split: ParquetWriter(
        folder, split=split, shard_size=parse_size(opts.shard_size), compression=opts.compression))


def _mds(ctx: WriteContext) -> Writer:
    from .mds import MDSWriter

    size = parse_size(ctx.options.mds.shard_size)
    return PerSplit("mds", lambda folder, split: MDSWriter(folder, split=split, sft=ctx.sft, shard_size=size))


def _megatron(ctx: WriteContext) -> Writer:
    from .megatron import MegatronWriter

    if ctx.eos_id is None:
        raise OutputError("output.formats: megatron ends every document with EOS, and the tokenizer has none")
    return PerSplit("megatron", lambda folder, split: MegatronWriter(
        folder, split=split, vocab_size=ctx.vocab_size, eod_id=ctx.eos_id), documents=True)


DOCUMENT_FORMATS = {"megatron"}  # the writers with ``documents = True``
WRITERS: dict[str, Callable[[WriteContext], Writer]] = {
    "hf": lambda ctx: ArrowWriter(fingerprint=ctx.fingerprint),
    "parquet": _parquet,
    "megatron": _megatron,
    "mds": _mds,
}


def make_writers(names: Iterable[str], *, context: WriteContext) -> list[Writer]:
    return [WRITERS[name](context) for name in names]


__all__ = ["DOCUMENT_FORMATS", "FEATURES", "WRITERS", "ArrowWriter", "FileEntry", "PerSplit", "SpillWriter", "SplitSink",
           "WriteContext", "Writer", "make_writers", "output_schema", "staged_output"]
