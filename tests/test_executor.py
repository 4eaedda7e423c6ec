"""One step object runs the same in the local executor and inside datasets.map (arrow format)."""
import pyarrow as pa
import pytest

from datakit.executor import run_chain, table_fn
from datakit.recipe import PackOptions, TokenizeOptions
from datakit.tokenization import load_tokenizer
from datakit.transforms import Pack, TokenizeText

DOCS = [f"Document {i}: " + "words and more words " * (i % 5 + 1) for i in range(23)]


def _batches(size):
    for start in range(0, len(DOCS), size):
        part = DOCS[start:start + size]
        yield pa.RecordBatch.from_pydict({"text": part, "_where": [f"d:{start + k}" for k in range(len(part))]})


def test_the_same_steps_inside_datasets_map(hf_tokenizer):
    from datasets import Dataset

    tok = load_tokenizer(str(hf_tokenizer))
    eos = tok.eos_id

    def steps():
        return [TokenizeText(TokenizeOptions(), tokenizer=tok), Pack(PackOptions(block_size=16), eos_id=eos)]

    local = [r for b in run_chain(_batches(5), steps()) for r in b.column("input_ids").to_pylist()]
    tokenize, pack = steps()
    ds = Dataset.from_dict({"text": DOCS, "_where": [f"d:{i}" for i in range(len(DOCS))]}).with_format("arrow")
    mapped = ds.map(table_fn(tokenize), batched=True, batch_size=7, remove_columns=["text", "_where"])
    packed = mapped.map(table_fn(pack), batched=True, batch_size=4, remove_columns=mapped.column_names)
    rows = [list(r) for r in packed.with_format(None)["input_ids"]]
    assert rows == local  # the remainder (dropped) is still inside `pack`; flush() would hand it over
    stream = [t for d in DOCS for t in tok.encode([d]).ids.tolist() + [eos]]
    assert [t for r in rows for t in r] == stream[:len(rows) * 16]


class _Probe:
    """A step that records the thread it ran on and the rows it saw, and passes batches on."""

    def __init__(self, *, stateless=False, releases_gil=False, sleep=0.0):
        from collections import Counter

        self.stateless, self.releases_gil, self.scope, self.after_split = stateless, releases_gil, "shard", False
        self.stats, self.threads, self.sleep = Counter(), set(), sleep

    def __call__(self, batch):
        import threading
        import time

        self.threads.add(threading.current_thread().name.split("_")[0])
        time.sleep(self.sleep)
        return [batch]

    def flush(self):
        return []

    def close(self, *, ok):
        pass


def test_the_threading_cut_comes_from_the_step_contract():
    """Steps before the first step that releases the GIL are fed from a thread; that step (stateless)
    runs on the worker threads; the rest run in the calling thread. Row order is kept."""
    before, native, after = _Probe(stateless=True), _Probe(stateless=True, releases_gil=True), _Probe()
    out = [w for b in run_chain(_batches(2), [before, native, after]) for w in b.column("_where").to_pylist()]
    assert out == [f"d:{i}" for i in range(len(DOCS))]
    assert before.threads == {"datakit-feeder"}
    assert native.threads == {"datakit-step"}
    assert after.threads == {"MainThread"}


def test_a_stateful_step_that_releases_the_gil_sees_one_batch_at_a_time():
    before, native = _Probe(), _Probe(releases_gil=True)
    list(run_chain(_batches(2), [before, native]))
    assert before.threads == {"datakit-feeder"} and native.threads == {"MainThread"}


def test_without_a_step_that_releases_the_gil_one_thread_runs_the_chain():
    steps = [_Probe(stateless=True), _Probe()]
    list(run_chain(_batches(3), steps))
    assert [s.threads for s in steps] == [{"MainThread"}, {"MainThread"}]


def test_the_executor_keeps_the_seconds_of_each_step():
    steps = [_Probe(), _Probe(stateless=True, releases_gil=True, sleep=0.01), _Probe()]
    seconds = [0.0, 0.0, 0.0]
    list(run_chain(_batches(4), steps, seconds=seconds))
    batches = -(-len(DOCS) // 4)
    assert seconds[1] >= 0.01 * batches  # summed over both worker threads
    assert seconds[0] < seconds[1] and seconds[2] < seconds[1]
    assert not any(hasattr(s, "seconds") for s in steps)


def test_an_interrupt_while_the_feeder_starts_leaves_no_thread_reading(monkeypatch):
    """Ctrl-C or SIGTERM can land while ``Thread.start`` waits for the feeder thread: the thread
    is stopped and joined before the interrupt leaves, and reads nothing more after it."""
    import threading
    import time

    from datakit.executor import _feeder

    read = []

    def source():
        for i in range(1000):
            read.append(i)
            time.sleep(0.002)
            yield pa.record_batch({"x": [i]})

    start = threading.Thread.start

    def interrupted_start(self):
        start(self)
        if self.name == "datakit-feeder":
            raise KeyboardInterrupt("terminated")

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        next(_feeder(source(), 4))
    done = len(read)
    time.sleep(0.1)
    assert len(read) == done < 1000
    assert not any(t.name == "datakit-feeder" for t in threading.enumerate())
