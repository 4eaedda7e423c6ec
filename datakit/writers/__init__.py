"""Writers: each turns the rows of every split into one output format inside the build folder.

A writer is registered in ``WRITERS`` under the name a recipe uses for it. ``open(folder, split)``
returns a sink that takes the split's batches (``write``) and is closed once (``close``);
``finish(folder, splits)`` writes what covers all splits. The build folder itself is staged and
renamed into place by ``atomic.staged_output``; ``manifest`` writes and reads ``manifest.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Protocol

import pyarrow as pa

from .arrow import FEATURES, ArrowWriter, output_schema
from .atomic import staged_output
from .spill import SpillWriter


class SplitSink(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class Writer(Protocol):
    name: str

    def open(self, folder: Path, split: str) -> SplitSink: ...

    def finish(self, folder: Path, splits: list[str]) -> None: ...


# name -> factory(fingerprint=...) of a writer
WRITERS: dict[str, Callable[..., Writer]] = {"hf": ArrowWriter}


def make_writers(names: Iterable[str], *, fingerprint: str) -> list[Writer]:
    return [WRITERS[name](fingerprint=fingerprint) for name in names]


__all__ = ["FEATURES", "WRITERS", "ArrowWriter", "SpillWriter", "SplitSink", "Writer", "make_writers",
           "output_schema", "staged_output"]
