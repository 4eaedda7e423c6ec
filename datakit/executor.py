"""The local executor: a chain of steps over one shard's batches, timed per step.

The chain is cut where the step contract says (``Step.releases_gil``): the steps before the first
such step (reading, parsing, templating: Python) run in a feeder thread, that step (a tokenizer:
Rust or C++, GIL released) runs on ``WORKERS`` batches at once when it is ``stateless``, and the
rest run in the calling thread. When that step is the first, there is nothing to feed and the
chain runs in one thread, the tokenizer's own pool using the cores. A distributed engine maps the
same step objects (``table_fn``) over explicit shards and calls ``flush`` once per shard.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

import pyarrow as pa

from .transforms.base import Step

_DONE = object()
WORKERS = 2  # batches tokenized at once


def threading_cut(steps: list[Step]) -> int | None:
    """The index of the first step that releases the GIL (run on several batches at once)."""
    return next((i for i, s in enumerate(steps) if getattr(s, "releases_gil", False)), None)


class _Chain:
    """``steps`` with the seconds spent in each (summed over the threads that ran it)."""

    def __init__(self, steps: list[Step], seconds: list[float]):
        self.steps, self.seconds = steps, seconds

    def through(self, batch: pa.RecordBatch, start: int, stop: int) -> Iterator[pa.RecordBatch]:
        if start == stop:
            if batch.num_rows:
                yield batch
            return
        t = time.perf_counter()
        outs = self.steps[start](batch)
        self.seconds[start] += time.perf_counter() - t
        for out in outs:
            yield from self.through(out, start + 1, stop)

    def flush(self, start: int, stop: int) -> Iterator[pa.RecordBatch]:
        """Flush steps[start:stop] in order; what each hands over runs through the rest."""
        for i in range(start, stop):
            t = time.perf_counter()
            outs = self.steps[i].flush()
            self.seconds[i] += time.perf_counter() - t
            for out in outs:
                yield from self.through(out, i + 1, stop)

    def serial(self, batches: Iterable[pa.RecordBatch], start: int, stop: int) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from self.through(batch, start, stop)
        yield from self.flush(start, stop)

    def parallel(self, batches: Iterator[pa.RecordBatch], i: int, workers: int) -> Iterator[pa.RecordBatch]:
        """steps[i] (stateless) on ``workers`` batches at once, in order. The tokenizer releases
        the GIL, so the batches encode on separate cores while one's Python post-processing runs."""
        from concurrent.futures import ThreadPoolExecutor

        step = self.steps[i]

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
                    self.seconds[i] += seconds
                    yield from outs
            for future in pending:
                outs, seconds = future.result()
                self.seconds[i] += seconds
                yield from outs


def _feeder(source: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """Run ``source`` in a thread, ``depth`` batches ahead; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        if stop.is_set():  # stopped before it began: see the finally below
            return
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
    try:
        thread.start()  # inside the try: Ctrl-C or SIGTERM can land while start() waits for the thread
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # a thread not yet running (start() cut short) sees ``stop`` first and does nothing; one
        # that runs ends after its current batch, before the steps are closed (a filter's rejects
        # file is then never made again after the build removed it)
        if thread.is_alive():
            thread.join(timeout=5)


@contextmanager
def _one_thread_per_batch(workers: int):
    """With no more cores than batches tokenized side by side, each batch is encoded on its own thread.

    ``tokenizers`` would also spread every batch over all cores with its thread pool, whose idle
    threads spin on the cores the other batches and the Python steps need: on 2 cores the bench's
    builds took 3.54-3.96 s against 3.90-4.12 s (20,000 alpaca rows, three runs each) and
    10.21-10.22 s against 10.57-11.18 s (20,000 ChatML conversations) with the pool off. It reads
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


def run_chain(batches: Iterable[pa.RecordBatch], steps: list[Step], *, seconds: list[float] | None = None,
              depth: int = 4, threads: bool = True) -> Iterator[pa.RecordBatch]:
    """Pass every batch through ``steps``, then flush each step (its output runs through the rest).

    ``seconds`` (one entry per step) receives the time spent in each step. The chain is cut at
    ``threading_cut(steps)``: the steps before it run in a feeder thread, ``depth`` batches ahead.
    ``threads=False`` runs it all in the calling thread (a cluster worker, one per core).
    """
    chain = _Chain(steps, seconds if seconds is not None else [0.0] * len(steps))
    n = len(steps)
    cut = threading_cut(steps) if threads else None
    if not cut:
        yield from chain.serial(batches, 0, n)
        return
    fed = _feeder(chain.serial(batches, 0, cut), depth)
    if not getattr(steps[cut], "stateless", False):
        yield from chain.serial(fed, cut, n)
        return
    for out in chain.parallel(fed, cut, workers=WORKERS):
        yield from chain.through(out, cut + 1, n)
    yield from chain.flush(cut, n)
