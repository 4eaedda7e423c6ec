"""The local engine: one process, the executor's threads (reading ahead, tokenizing in parallel)."""
from __future__ import annotations

from ..executor import run_chain
from ..progress import Progress
from ..recipe import Recipe
from ..sources import FileInfo
from ..stages import read, shards
from ..transforms.base import Step
from ..writers.spill import SpillWriter


class LocalEngine:
    name = "local"

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> list[FileInfo]:
        files: list[FileInfo] = []
        split_at = next((i for i, c in enumerate(recipe.transforms) if c.name == "tokenize"), None)
        for out in run_chain(read(shards(recipe), files=files, on_bytes=progress.advance), steps,
                             split_at=split_at):
            rows.write(out)
            progress.update_counts(steps, rows=rows.rows)
        return files
