"""Sinks fed from a thread: order kept, errors raised in the build's thread, no worker left behind."""
import gc
import threading
import time

import pytest

from datakit.writers.background import BackgroundSink


class Recorder:
    def __init__(self, fail_at=None):
        self.seen, self.fail_at = [], fail_at

    def write(self, batch):
        if batch == self.fail_at:
            raise OSError(f"disk full at {batch}")
        time.sleep(0.001)
        self.seen.append(batch)

    def close(self):
        return list(self.seen)


def test_batches_arrive_in_order_and_close_returns_the_sinks_result():
    sink = BackgroundSink(Recorder())
    for i in range(50):
        sink.write(i)
    assert sink.close() == list(range(50))


def test_an_error_of_the_worker_is_raised_in_the_callers_thread():
    sink = BackgroundSink(Recorder(fail_at=3))
    with pytest.raises(OSError, match="disk full at 3"):
        for i in range(50):
            sink.write(i)
        sink.close()


def test_a_dropped_sink_leaves_no_worker():
    before = threading.active_count()
    sink = BackgroundSink(Recorder())
    sink.write(1)
    del sink
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
