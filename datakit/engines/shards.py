"""Explicit shards for a distributed engine: a whole file, or a byte range of a large JSON Lines
file cut where a line starts, so every record belongs to exactly one shard.

A range keeps the number of its first line, so a record read on any worker is named
``file:line`` exactly as the local engine names it. The line numbers and the sha256 of a file
cut in ranges are found by one read of it on the driver (``number_ranges``): counting newlines
and hashing run at ~1 GB/s, far above the ~2 MB/s per worker of parsing and tokenizing the same
bytes, and the driver does it while the workers start.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..recipe import Recipe
from ..sources import expand
from ..sources.paths import JSONL_SUFFIXES, is_dataset_folder

SHARD_BYTES = 64 << 20  # a JSON Lines file larger than this is cut in ranges of about this size
MIN_SHARD_BYTES = 256 << 10  # finer ranges cost more in task overhead than they gain in balance
_READ = 1 << 20


@dataclass(frozen=True)
class ShardSpec:
    """One unit of reading. ``index`` is its place in build order (sources in recipe order, files
    in sorted order, ranges in file order); ``file`` is the index of its file in that order."""

    index: int
    source: int
    path: str
    file: int
    start: int = 0
    end: int | None = None  # None: the whole file
    first_line: int = 1

    @property
    def span(self) -> tuple[int, int, int] | None:
        return None if self.end is None else (self.start, self.end, self.first_line)


def plan_shards(recipe: Recipe, *, shard_bytes: int = SHARD_BYTES, min_shards: int = 1) -> tuple[list[ShardSpec], list[str]]:
    """The build's shards and its files, in build order. JSON Lines files are cut in ranges of about
    ``shard_bytes``, or finer, so that the build has at least ``min_shards`` (one per worker)."""
    # the builds among the sources (format: build) are not read by the steps: the driver adds their rows
    files: list[tuple[int, Path]] = [(i, p) for i, cfg in enumerate(recipe.sources) if not cfg.is_build
                                     for p in expand(cfg.path)]
    cuttable = [p.stat().st_size for _, p in files if _is_jsonl(p)]
    if cuttable and min_shards > len(files):
        shard_bytes = max(MIN_SHARD_BYTES, min(shard_bytes, math.ceil(sum(cuttable) / min_shards)))
    out: list[ShardSpec] = []
    for k, (source, path) in enumerate(files):
        size = path.stat().st_size if path.is_file() else 0
        if not _is_jsonl(path) or size <= shard_bytes:
            out.append(ShardSpec(len(out), source, str(path), k))
            continue
        bounds = _line_starts(path, [size * j // math.ceil(size / shard_bytes)
                                     for j in range(1, math.ceil(size / shard_bytes))], size)
        for start, end in zip([0, *bounds], [*bounds, size]):
            out.append(ShardSpec(len(out), source, str(path), k, start=start, end=end))
    return out, [str(p) for _, p in files]


def _is_jsonl(p: Path) -> bool:
    return p.is_file() and not is_dataset_folder(p) and p.suffix.lower() in JSONL_SUFFIXES


def _line_starts(path: Path, guesses: list[int], size: int) -> list[int]:
    """For each guessed offset, the first line start at or after it (duplicates and the end dropped)."""
    starts: list[int] = []
    with open(path, "rb") as f:
        for guess in guesses:
            f.seek(guess - 1)  # a line starts at ``guess`` if the byte before it is a newline
            f.readline()
            at = f.tell()
            if at < size and (not starts or at > starts[-1]):
                starts.append(at)
    return starts


def number_ranges(shards: list[ShardSpec]) -> tuple[list[ShardSpec], dict[str, str]]:
    """Every range with the number of its first line, and the sha256 of every file cut in ranges,
    from one read of those files (the ranges of a file tile it, in order)."""
    out, sha, line, h = [], {}, 1, None
    for k, s in enumerate(shards):
        if s.end is None:
            out.append(s)
            continue
        if s.start == 0:
            line, h = 1, hashlib.sha256()
        out.append(replace(s, first_line=line))
        with open(s.path, "rb") as f:
            f.seek(s.start)
            left = s.end - s.start
            while left > 0:
                block = f.read(min(_READ, left))
                if not block:
                    break
                h.update(block)
                line += block.count(b"\n")
                left -= len(block)
        if k + 1 == len(shards) or shards[k + 1].file != s.file:
            sha[s.path] = h.hexdigest()
    return out, sha
