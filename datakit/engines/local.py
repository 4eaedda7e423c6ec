"""The local engine: one process, the executor's threads (reading ahead, tokenizing in parallel)."""
from __future__ import annotations

from ..executor import run_chain
from ..progress import Progress
from ..recipe import Recipe
from ..sources import FileInfo
from ..stages import Produced, read, shards
from ..transforms.base import Step
from ..writers.spill import SpillWriter


class LocalEngine:
    name = "local"

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> Produced:
        files: list[FileInfo] = []
        seconds = [0.0] * len(steps)
        for out in run_chain(read(shards(recipe), files=files, on_bytes=progress.advance), steps, seconds=seconds):
            rows.write(out)
            progress.update_counts(steps, rows=rows.rows)
        return Produced(files=files, seconds=seconds)
