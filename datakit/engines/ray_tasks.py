"""What the workers of the Ray engine run: the recipe's own steps over one shard at a time.

The steps are built once per worker process and build from the recipe (the same classes,
options and tokenizer as a local build); every task writes its rows to an Arrow file in the
build's staging folder and returns their metadata and the steps' counts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..counts import Counts
from ..executor import run_chain
from ..recipe import Recipe
from ..sources import FileInfo, read_part
from ..transforms.base import Step
from .ray_rows import read_rows, write_rows
from .shards import ShardSpec

_STEPS: dict[str, list[Step]] = {}


def _worker_steps(job: dict) -> list[Step]:
    """The recipe's steps, made once per worker process and build (loading a tokenizer costs
    ~0.3 s); their counts start at zero for every task."""
    steps = _STEPS.get(job["key"])
    if steps is None:
        from ..tokenization import load_tokenizer
        from ..transforms import STEPS

        _STEPS.clear()
        # one worker per core: the tokenizer's own thread pool would only contend with the others
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        recipe = job["recipe"]
        tokenizer = load_tokenizer(recipe.tokenizer, trust_remote_code=recipe.trust_remote_code)
        steps = _STEPS[job["key"]] = [STEPS[cfg.name].make(cfg.options, recipe, tokenizer)
                                      for cfg in recipe.transforms]
    for step in steps:
        step.stats = Counts()
    return steps


class _ShardRejects:
    """A filter's rejects on a worker: a file per shard beside the shard files, merged later."""

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def open(self):
        self.file = open(self.path, "w", encoding="utf-8")
        return self.file


def _run(job: dict, a: int, b: int, batches: Iterator[pa.RecordBatch], *, shard: int, name: str) -> dict:
    """steps[a:b] over ``batches`` (flushed at the end) into ``name``'s shard file."""
    steps = _worker_steps(job)
    folder = Path(job["folder"])
    chain = steps[a:b]
    rejects = []
    for k, step in enumerate(chain):
        if getattr(step, "rejects", None) is not None:
            step.rejects = _ShardRejects(folder / f"rejects-{a + k}-{shard}.jsonl")
            rejects.append(step.rejects)
    path = folder / f"{name}.arrow"
    seconds = [0.0] * len(chain)
    try:
        # Ray runs one worker per core: threads inside a task would only contend with the other workers
        n, tokens, meta = write_rows(path, run_chain(batches, chain, seconds=seconds, threads=False))
    finally:
        for r in rejects:
            if r.file is not None:
                r.file.close()
    return {"path": str(path) if n else "", "rows": n, "tokens": tokens, "first_step": a,
            "stats": [dict(s.stats) for s in chain], "seconds": seconds,
            "meta": meta}


def _warm_task(job: dict) -> None:
    """Build the steps in this worker process before its first shard arrives."""
    _worker_steps(job)


def _read_task(item: dict, job: dict) -> dict:
    spec = ShardSpec(**item["spec"])
    recipe: Recipe = job["recipe"]
    info = FileInfo(path=spec.path)
    batches = read_part(recipe.sources[spec.source], Path(spec.path), info, index=spec.source, first_row=0,
                        span=spec.span)
    a, b = item["steps"]
    out = _run(job, a, b, batches, shard=spec.index, name=f"read-{spec.index:05d}")
    return {**out, "shard": spec.index, "source": spec.source, "file": spec.file, "offset": 0,
            "records": info.records, "nbytes": info.bytes, "sha256": info._hash.hexdigest()}


def _shard_batches(path: str, offset: int, drop=None) -> Iterator[pa.RecordBatch]:
    """A shard file's rows with build-wide split groups; ``drop`` removes rows (dedup) or, as
    ``{"regroup": {row: group}}``, gives rows the group of the row they duplicate."""
    if not path:
        return
    table = read_rows(path)
    if "_group" in table.schema.names:
        g = table.column("_group").to_numpy()
        g = np.where(g >= 0, g + offset, g)
        if drop and drop.get("regroup"):
            at = np.array(list(map(int, drop["regroup"])), np.int64)
            g[at] = np.array(list(drop["regroup"].values()), np.int64)
        table = table.set_column(table.schema.get_field_index("_group"), "_group", pa.array(g, pa.int64()))
    if drop and drop.get("rows"):
        mask = np.ones(table.num_rows, bool)
        mask[np.asarray(drop["rows"], np.int64)] = False
        table = table.filter(pa.array(mask))
    for batch in table.to_batches(max_chunksize=500):
        if batch.num_rows:
            yield batch


def _map_task(item: dict, job: dict) -> dict:
    a, b = item["steps"]
    batches = _shard_batches(item["path"], item["offset"], item.get("drop"))
    out = _run(job, a, b, batches, shard=item["shard"], name=f"map{a}-{item['shard']:05d}")
    return {**out, "shard": item["shard"], "source": item["source"], "offset": 0}


def _stream_task(item: dict, job: dict) -> dict:
    """A step over one stream of shards (a source's, or the build's), in build order."""
    a, b = item["steps"]

    def batches():
        for part in item["parts"]:
            yield from _shard_batches(part["path"], part["offset"])

    out = _run(job, a, b, batches(), shard=item["shard"], name=f"stream{a}-{item['stream']:05d}")
    return {**out, "shard": item["shard"], "source": item["source"], "offset": 0}
