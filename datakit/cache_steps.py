"""The read and cached steps of a build, source by source, through the tokenized-rows cache.

The steps up to and including ``tokenize`` are cached per source when every one of them handles
each batch on its own (``stateless``): then a source's rows do not depend on the other sources.
A step that needs every source before tokenize (``dedup``, ``filter`` with its rejects file) makes
the build uncached: its rows depend on the whole input, and its side effects must happen.

On a hit the source is neither read nor tokenized: its rows come from the entry (their ``_source``
and split groups renumbered for this build), and the files, records read and the cached steps'
counts recorded with them are restored, so the manifest is the one a cold build writes.
"""
from __future__ import annotations

from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from .cache import Cache, inputs_sha256, rebase, source_key, step_description
from .counts import Counts
from .executor import run_chain
from .recipe import Recipe, to_dict
from .sources import FileInfo, expand
from .stages import Shard, read, shards
from .transforms.base import Step


def cached_head(steps: list[Step]) -> int | None:
    """How many of ``steps`` (those before the spill) are cached: up to and including tokenize,
    when all of them are stateless; None when there is no tokenize or a step before it is not."""
    for i, step in enumerate(steps):
        if not step.stateless:
            return None
        if hasattr(step, "tokenizer") and getattr(step, "releases_gil", False):  # the tokenize step
            return i + 1
    return None


class CachedSteps:
    """``batches()`` yields what ``head`` makes of every source, from the cache where it can;
    ``report`` says per source whether it hit."""

    def __init__(self, cache: Cache, recipe: Recipe, head: list[Step]):
        self.cache, self.recipe, self.head = cache, recipe, head
        self.report: list[dict] = []
        entries = to_dict(recipe)["transforms"][:len(head)]
        self._steps = [step_description(s, e) for s, e in zip(head, entries)]
        if recipe.chat_template is not None and recipe.step("template") is not None:
            self._steps.append({"chat_template": _text(recipe.chat_template)})

    def key(self, shard: Shard, paths: list[Path]) -> str:
        cfg = shard.config
        return source_key(files=inputs_sha256(paths), tokenizer=self.head[-1].tokenizer.fingerprint,
                          source={"format": cfg.format, "columns": cfg.columns,
                                  "document_separator": cfg.document_separator},
                          steps=self._steps)

    def batches(self, *, files: list[FileInfo], counts: Counts, seconds: list[float],
                on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[pa.RecordBatch]:
        first_row = 0
        for shard in shards(self.recipe):
            paths = expand(shard.config.path)
            key = self.key(shard, paths)
            entry = self.cache.load(key)
            read_before = counts["rows_read"]
            if entry is not None:
                yield from self._replay(shard, entry, paths, first_row, files=files, counts=counts)
                on_bytes(sum(f["bytes"] for f in entry.meta["files"]))
            else:
                yield from self._fill(shard, key, paths, first_row, files=files, counts=counts,
                                      seconds=seconds, on_bytes=on_bytes)
            first_row += counts["rows_read"] - read_before
            self.report.append({"source": shard.config.label, "key": key, "hit": entry is not None})
        self.cache.evict()

    def _replay(self, shard: Shard, entry, paths: list[Path], first_row: int, *, files: list[FileInfo],
                counts: Counts) -> Iterator[pa.RecordBatch]:
        meta = entry.meta
        moved = [(f["path"] + ":", str(p) + ":") for f, p in zip(meta["files"], paths) if f["path"] != str(p)]
        where = (lambda w: next((new + w[len(old):] for old, new in moved if w.startswith(old)), w)) if moved else None
        for f, p in zip(meta["files"], paths):
            files.append(FileInfo(path=str(p), bytes=f["bytes"], records=f["records"], sha256=f["sha256"]))
        counts.add("rows_read", meta["rows_read"])
        for step, stats in zip(self.head, meta["stats"]):
            step.stats.merge(stats)
        for batch in entry.batches():
            yield rebase(batch, source=shard.index, shift=first_row, where=where)

    def _fill(self, shard: Shard, key: str, paths: list[Path], first_row: int, *, files: list[FileInfo],
              counts: Counts, seconds: list[float], on_bytes: Callable[[int], None]) -> Iterator[pa.RecordBatch]:
        before = [Counter(step.stats) for step in self.head]
        read_before, files_before = counts["rows_read"], len(files)
        writer = self.cache.writer(key)
        done = False
        try:
            batches = read([shard], files=files, counts=counts, on_bytes=on_bytes, first_row=first_row)
            with closing(run_chain(batches, self.head, seconds=seconds)) as outs:  # its threads end with it
                for out in outs:
                    writer.write(rebase(out, source=None, shift=-first_row))  # a replay sets _source
                    yield out
            stats = [{k: int(v - b[k]) for k, v in step.stats.items()}
                     for step, b in zip(self.head, before)]
            writer.commit({"rows_read": int(counts["rows_read"] - read_before), "stats": stats,
                           "files": [{"path": f.path, "bytes": f.bytes, "records": f.records, "sha256": f.sha256}
                                     for f in files[files_before:]]})
            done = True
        finally:
            if not done:
                writer.abort()


def _text(template: str) -> str:
    """A chat template's text: the file's when it names one."""
    if template.endswith((".jinja", ".j2")) and "{" not in template and Path(template).is_file():
        return Path(template).read_text("utf-8")
    return template


__all__ = ["CachedSteps", "cached_head"]
