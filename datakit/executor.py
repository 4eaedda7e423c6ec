"""Executors run a chain of steps over shards. A step never knows which executor runs it.

``run_chain`` is the local executor for one shard. Its steps are cut in two stages that overlap:
reading, parsing and templating (Python) run in a feeder thread while the tokenizer (Rust or C++,
GIL released, every core) works on the previous batch in the calling thread. A distributed
executor (Ray Data) maps the same step objects with ``map_batches(batch_format="pyarrow")``
over explicit shards and calls ``flush`` once per shard.
"""
from __future__ import annotations

import os
import queue
import time
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator

import pyarrow as pa

from .transforms.base import Step

_DONE = object()
WORKERS = 2  # batches tokenized at once


def _through(batch: pa.RecordBatch, steps: list[Step], start: int) -> Iterator[pa.RecordBatch]:
    if start == len(steps):
        if batch.num_rows:
            yield batch
        return
    step = steps[start]
    t = time.perf_counter()
    outs = step(batch)
    step.seconds = getattr(step, "seconds", 0.0) + time.perf_counter() - t
    for out in outs:
        yield from _through(out, steps, start + 1)


def _serial(batches: Iterable[pa.RecordBatch], steps: list[Step]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield from _through(batch, steps, 0)
    for i, step in enumerate(steps):
        for out in step.flush():
            yield from _through(out, steps, i + 1)


def _feeder(source: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """Run ``source`` in a thread, ``depth`` batches ahead; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    thread = threading.Thread(target=work, name="datakit-feeder", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def _one_thread_per_batch(workers: int):
    """With no more cores than batches tokenized side by side, each batch is encoded on its own thread.

    ``tokenizers`` would also spread every batch over all cores with its thread pool, whose idle
    threads spin on the cores the other batches need (~6% slower on 2 cores). It reads
    TOKENIZERS_PARALLELISM at each call, so the setting goes away when the batches are done. On a
    machine with more cores its pool is what uses them, and a setting of the user's is kept."""
    key = "TOKENIZERS_PARALLELISM"
    if (os.cpu_count() or 1) > workers or key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _parallel(batches: Iterator[pa.RecordBatch], step: Step, workers: int) -> Iterator[pa.RecordBatch]:
    """Run a stateless step on ``workers`` batches at once, in order. The tokenizer releases the
    GIL, so the batches encode on separate cores while one's Python post-processing runs."""
    from concurrent.futures import ThreadPoolExecutor

    def call(batch):
        t = time.perf_counter()
        outs = step(batch)
        return outs, time.perf_counter() - t

    # the setting outlives the pool: no worker is left encoding when it goes
    with _one_thread_per_batch(workers), \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datakit-step") as pool:
        pending = []
        for batch in batches:
            pending.append(pool.submit(call, batch))
            if len(pending) > workers:
                outs, seconds = pending.pop(0).result()
                step.seconds = getattr(step, "seconds", 0.0) + seconds
                yield from outs
        for future in pending:
            outs, seconds = future.result()
            step.seconds = getattr(step, "seconds", 0.0) + seconds
            yield from outs


def table_fn(step: Step):
    """Wrap a step as a Table -> Table function, the form ``datasets.Dataset.map(batched=True)`` (with
    ``with_format("arrow")``) and Ray Data's ``map_batches(batch_format="pyarrow")`` call.

    Those engines never call ``flush``: a packer's last remainder stays with the step object, so
    flush it yourself after the map (``step.flush()``) if the tail matters.
    """
    schema: list[pa.Schema] = []

    def fn(table: pa.Table) -> pa.Table:
        outs = [out for batch in table.to_batches() for out in step(batch)]
        if outs:
            schema[:] = [outs[0].schema]
            return pa.Table.from_batches(outs)
        if schema:
            return schema[0].empty_table()
        raise ValueError(f"{type(step).__name__} kept no row of the first batch; its output schema is unknown")

    return fn


def run_chain(batches: Iterable[pa.RecordBatch], steps: list[Step], *, split_at: int | None = None,
              depth: int = 4) -> Iterator[pa.RecordBatch]:
    """Pass every batch through ``steps``, then flush each step (its output runs through the rest).

    With ``split_at``, steps[:split_at] run in a feeder thread ahead of the rest.
    """
    if not split_at:
        yield from _serial(batches, steps)
        return
    fed = _feeder(_serial(batches, steps[:split_at]), depth)
    first = steps[split_at]
    if getattr(first, "stateless", False):
        yield from _serial(_parallel(fed, first, workers=WORKERS), steps[split_at + 1:])
        for out in first.flush():
            yield from _through(out, steps, split_at + 1)
        return
    yield from _serial(fed, steps[split_at:])
