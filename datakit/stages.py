"""The stages of a build and what each hands to the next.

    read -> steps -> spill -> plan -> write -> manifest

- **read**: ``shards(recipe)`` lists the units an engine reads (one per source, recipe order);
  ``read(shards)`` streams their canonical batches with the provenance columns.
- **steps**: the recipe's steps (``transforms/``) map those batches; ``executor.run_chain`` runs
  them in this process. Steps that run after the split are kept for the write stage.
- **spill**: every row the steps make goes into a ``SpillWriter`` (``writers/spill.py``), which
  keeps per row its source, group, content hash and length for the plan.
  An engine (``engines/``) runs read -> steps -> spill: locally, or over shards elsewhere.
- **plan**: ``plan.plan_splits(recipe, rows) -> SplitPlan``: mixing, then the split.
- **write**: ``write(plan, rows, folder, ...)``: each split's rows (``SplitRows``), gathered a
  chunk at a time, run through the post-split steps and into every writer (``writers/``).
- **manifest**: ``writers.manifest.assemble`` records what was read, counted and written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .columns import IGNORE_INDEX, row_offsets
from .counts import Counts
from .executor import run_chain
from .plan import SplitPlan
from .recipe import Recipe, SourceConfig
from .sources import FileInfo, read_source
from .sources.build import SourceBuild, read_builds
from .transforms.base import Step
from .transforms.pack_rows import with_seq_lens
from .writers import Writer
from .writers.provenance import ProvenanceSink
from .writers.spill import SpillWriter

TAKE_ROWS = 1024  # rows gathered per chunk: ~9 MB of 1024-token rows, small transient peaks, few writes


@dataclass(frozen=True)
class Shard:
    """One unit of reading: a source of the recipe (its rows get ``_source = index``)."""

    index: int
    config: SourceConfig


def shards(recipe: Recipe) -> list[Shard]:
    """The sources an engine reads and passes through the steps: every one but the builds
    (``format: build``), whose tokenized rows go to the spill as they are (``spill_builds``)."""
    return [Shard(i, cfg) for i, cfg in enumerate(recipe.sources) if not cfg.is_build]


def read(parts: Iterable[Shard], *, files: list[FileInfo], counts: Counts,
         on_bytes: Callable[[int], None] = lambda n: None, first_row: int = 0) -> Iterator[pa.RecordBatch]:
    """The shards' batches in order. ``_group`` numbers rows across the whole build (from
    ``first_row``), so every input row starts in its own split group. ``files`` receives a
    FileInfo per file read, ``counts`` the rows read."""
    for shard in parts:
        for batch in read_source(shard.config, files=files, index=shard.index, first_row=first_row,
                                 on_bytes=on_bytes):
            first_row += batch.num_rows
            counts.add("rows_read", batch.num_rows)
            yield batch


def spill_builds(sources: list[SourceBuild], rows: SpillWriter, *, files: list[FileInfo], counts: Counts) -> None:
    """The rows of the ``format: build`` sources, straight into the spill after the engine's rows
    (their split groups numbered after every row read); ``files`` gets one entry per split read."""
    tokens, written = rows.tokens, rows.rows
    sft = any(s.manifest.get("kind") == "sft" for s in sources)
    for batch in read_builds(sources, first_row=counts["rows_read"]):
        rows.write(batch)
        if sft and "labels" in batch.schema.names:  # as tokenize counts its rows: the labels not masked
            labels = batch.column("labels").values.to_numpy(zero_copy_only=False)
            supervised = int(np.count_nonzero(labels != IGNORE_INDEX))
            counts.add("supervised_tokens", supervised)
            counts.add("prompt_tokens", len(labels) - supervised)
    for source in sources:
        for name, table in source.splits.items():
            files.append(FileInfo(path=source.where(name), bytes=table.nbytes, records=table.num_rows,
                                  sha256=source.sha256(name)))
            counts.add("rows_read", table.num_rows)
    counts.add("rows_written", rows.rows - written)
    counts.add("tokens_written", rows.tokens - tokens)


def _provenance(folder: Path, split: str, plan: SplitPlan, rows: SpillWriter) -> ProvenanceSink | None:
    """The split's provenance file (``writers/provenance.py``), when the rows recorded their pieces."""
    log = getattr(rows, "pieces", None)
    if log is None or plan.groups is None or not log.inputs:
        return None
    return ProvenanceSink(folder, split, log=log, n_rows=rows.rows, source=rows.meta("source"),
                          groups=plan.groups, lengths=rows.lengths)


@dataclass
class Produced:
    """What an engine hands on after read -> steps -> spill (the rows are in the spill)."""

    files: list[FileInfo]  # every input file read, in recipe order
    seconds: list[float]  # per step: time spent in it, summed over the threads that ran it
    counts: Counts  # rows_read, and rows_written and tokens_written (what went into the spill)
    cache: list[dict] | None = None  # per source: label, key, hit (None: the build was not cached)


@dataclass
class SplitRows:
    """The rows of one split: spill row numbers in output order, gathered a chunk at a time.

    A post-split step is a step (batches in, batches out, ``flush`` at the end of each split) with
    two optional hooks: ``begin_split(split) -> SplitRows`` sees the whole split's ``lengths``
    before any row flows (best-fit packing) and may reorder it; ``end_split() -> dict`` adds
    entries to the split's record in the manifest (``manifest["splits"][name]``)."""

    name: str
    indices: np.ndarray
    rows: SpillWriter = field(repr=False)

    @property
    def lengths(self) -> np.ndarray:
        return self.rows.lengths[self.indices]

    def batches(self, *, chunk: int = TAKE_ROWS, on_rows: Callable[[int], None] = lambda n: None
                ) -> Iterator[pa.RecordBatch]:
        """The rows a chunk at a time; rows that carry position_ids (documents isolated inside
        blocks) get their seq_lens, which the spill does not keep (it holds per-token columns)."""
        offsets = row_offsets(self.rows.lengths)
        for start in range(0, len(self.indices), chunk):
            batch = with_seq_lens(self.rows.gather(self.indices[start:start + chunk], offsets))
            on_rows(batch.num_rows)
            yield batch


def write(plan: SplitPlan, rows: SpillWriter, folder: Path, *, writers: list[Writer], split_steps: list[Step] = (),
          seconds: list[float] | None = None, on_rows: Callable[[int], None] = lambda n: None,
          provenance: bool = True) -> dict[str, dict]:
    """Write every split through ``split_steps`` (flushed at the end of each split) into every
    writer, and (``provenance``, when the rows recorded where they came from) each split's
    provenance file; returns rows and tokens per split."""
    written = {}
    joins = any(getattr(step, "joins_rows", False) for step in split_steps)
    for name, indices in plan.splits.items():
        split = SplitRows(name, indices, rows)
        for step in split_steps:
            begin = getattr(step, "begin_split", None)
            if begin is not None:
                split = begin(split)
        sinks = [writer.open(folder, name) for writer in writers]
        traced = _provenance(folder, name, plan, rows) if provenance else None
        n_rows = tokens = used = 0
        gathered = split.batches(on_rows=on_rows)  # progress in built rows, also when they are packed
        for batch in run_chain(gathered, list(split_steps), seconds=seconds) if split_steps else gathered:
            for sink in sinks:
                sink.write(batch)
            if traced is not None:  # which built rows each output row is made of
                per_row = (np.diff(batch.column("seq_lens").offsets.to_numpy()) if joins
                           else np.ones(batch.num_rows, np.int64))
                traced.add(split.indices[used:used + int(per_row.sum())], per_row)
                used += int(per_row.sum())
            n_rows += batch.num_rows
            tokens += len(batch.column("input_ids").values)
            del batch
            # mimalloc keeps freed pages for reuse; hand them back so each chunk starts from the same RSS.
            pa.default_memory_pool().release_unused()
        for sink in sinks:
            sink.close()
        written[name] = {"rows": int(n_rows), "tokens": int(tokens)}
        if traced is not None:
            written[name]["provenance"] = traced.close()
        for step in split_steps:
            end = getattr(step, "end_split", None)
            if end is not None:
                written[name].update(end())
    rows.release()
    for writer in writers:
        writer.finish(folder, list(plan.splits))
    return written
