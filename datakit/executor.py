"""Executors run a chain of steps over shards. A step never knows which executor runs it.

``run_chain`` is the local executor: one shard, steps in order, the tokenizer's own thread pool
using every core. A distributed executor (Ray Data) maps the same step objects with
``map_batches(batch_format="pyarrow")`` over explicit shards and calls ``flush`` per shard.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa

from .transforms.base import Step


def _through(batch: pa.RecordBatch, steps: list[Step], start: int) -> Iterator[pa.RecordBatch]:
    if start == len(steps):
        if batch.num_rows:
            yield batch
        return
    for out in steps[start](batch):
        yield from _through(out, steps, start + 1)


def run_chain(batches: Iterable[pa.RecordBatch], steps: list[Step]) -> Iterator[pa.RecordBatch]:
    """Pass every batch through ``steps``, then flush each step (its output runs through the rest)."""
    for batch in batches:
        yield from _through(batch, steps, 0)
    for i, step in enumerate(steps):
        for out in step.flush():
            yield from _through(out, steps, i + 1)
