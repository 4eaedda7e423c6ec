"""The local engine: one process, the executor's threads (reading ahead, tokenizing in parallel).

With a ``Cache``, the steps up to tokenize run source by source through it (``cache_steps``): a
source whose entry is there is neither read nor tokenized."""
from __future__ import annotations

from pathlib import Path

from ..cache import Cache
from ..cache_steps import CachedSteps, cached_head
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

    def __init__(self, *, cache: Cache | None = None):
        self.cache = cache

    def rows(self, folder: Path) -> SpillWriter:
        return SpillWriter(folder)

    def write(self, plan, rows: SpillWriter, folder: Path, **options) -> dict[str, dict]:
        return write(plan, rows, folder, **options)

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> Produced:
        files: list[FileInfo] = []
        seconds = [0.0] * len(steps)
        counts = Counts()
        cut = cached_head(steps) if self.cache is not None else None
        cached = None
        if cut is None:
            batches = read(shards(recipe), files=files, counts=counts, on_bytes=progress.advance)
            outs = run_chain(batches, steps, seconds=seconds)
        else:
            cached = CachedSteps(self.cache, recipe, steps[:cut])
            head, tail = seconds[:cut], seconds[cut:]
            batches = cached.batches(files=files, counts=counts, seconds=head, on_bytes=progress.advance)
            outs = run_chain(batches, steps[cut:], seconds=tail)
        try:
            for out in outs:
                rows.write(out)
                progress.update_counts(read=counts["rows_read"], tokens=sum(s.stats["tokens_read"] for s in steps),
                                       written=rows.rows)
        finally:
            # stop the executor's threads here: after a failure (or Ctrl-C, SIGTERM) in this loop the
            # traceback keeps this frame, and with it the chain, which would run on while the steps
            # close (a filter's rejects file made again after the build removed it)
            outs.close()
        if cached is not None:
            seconds = head + tail
        counts.add("rows_written", rows.rows)
        counts.add("tokens_written", rows.tokens)
        return Produced(files=files, seconds=seconds, counts=counts,
                        cache=cached.report if cached is not None else None)
