"""The local engine: one process, the executor's threads (reading ahead, tokenizing in parallel)."""
from __future__ import annotations

from pathlib import Path

from ..counts import Counts
from ..executor import run_chain
from ..progress import Progress
from ..recipe import Recipe
from ..sources import FileInfo
from ..stages import Produced, read, shards, write
from ..transforms.base import Step
from ..writers.spill import SpillWriter


class LocalEngine:
    name = "local"

    def rows(self, folder: Path) -> SpillWriter:
        return SpillWriter(folder)

    def write(self, plan, rows: SpillWriter, folder: Path, **options) -> dict[str, dict]:
        return write(plan, rows, folder, **options)

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> Produced:
        files: list[FileInfo] = []
        seconds = [0.0] * len(steps)
        counts = Counts()
        batches = read(shards(recipe), files=files, counts=counts, on_bytes=progress.advance)
        for out in run_chain(batches, steps, seconds=seconds):
            rows.write(out)
            progress.update_counts(read=counts["rows_read"], tokens=sum(s.stats["tokens_read"] for s in steps),
                                   written=rows.rows)
        counts.add("rows_written", rows.rows)
        counts.add("tokens_written", rows.tokens)
        return Produced(files=files, seconds=seconds, counts=counts)
