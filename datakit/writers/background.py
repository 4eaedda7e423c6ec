"""A split's sink fed from a thread of its own, so that an extra format's encoding overlaps the
gather and the ``hf`` write instead of adding to them.

Parquet's compression and most of MDS's NumPy work run without the GIL, so on two cores an extra
format costs well under its own time in wall time (the formats section of bench/run.py).
"""
from __future__ import annotations

import queue
import threading
import weakref
from typing import Any

import pyarrow as pa

DEPTH = 2  # batches waiting per sink: ~9 MB each for 1024 rows of 1024 tokens
_DONE = object()


class BackgroundSink:
    """Calls ``sink.write`` for every batch in a worker thread, in order; ``close`` waits for the
    last batch and returns ``sink.close()``. An error of the worker is raised by the next
    ``write`` or by ``close``. A sink dropped without ``close`` (the build failed elsewhere) lets its
    worker end within a second."""

    def __init__(self, sink: Any):
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=DEPTH)
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=_work, args=(weakref.ref(self), self._queue, sink, self._errors),
                                        name=f"datakit-{type(sink).__name__}", daemon=True)
        self._thread.start()

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    def write(self, batch: pa.RecordBatch) -> None:
        self._raise()
        self._queue.put(batch)

    def close(self):
        self._queue.put(_DONE)
        self._thread.join()
        self._raise()
        return self.sink.close()


def _work(owner: weakref.ref, batches: queue.Queue, sink: Any, errors: list[BaseException]) -> None:
    """The worker holds no reference to its BackgroundSink, so that dropping it ends the worker."""
    while True:
        try:
            batch = batches.get(timeout=1.0)
        except queue.Empty:
            if owner() is None:
                return
            continue
        if batch is _DONE:
            return
        if not errors:
            try:
                sink.write(batch)
            except BaseException as e:  # raised in the build's thread
                errors.append(e)
