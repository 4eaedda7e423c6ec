"""The build's stages: steps are closed whatever fails, and the write stage takes post-split steps
and several writers without the orchestration changing."""
import json

import numpy as np
import pyarrow as pa
import pytest

import datakit
from datakit.plan import SplitPlan
from datakit.stages import SplitRows, write
from datakit.columns import model_batch, numeric_array, with_columns
from datakit.transforms.base import BaseStep
from datakit.writers import ArrowWriter
from datakit.writers.spill import SpillWriter


def test_a_missing_source_leaves_no_rejects_file_behind(tmp_path, make_recipe, hf_tokenizer):
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": "missing.json", "format": "alpaca"}],
              "transforms": [{"filter": {"rejects": "rejects.jsonl"}}, {"template": "alpaca"}, {"tokenize": {}}],
              "output": "out"}
    with pytest.raises(datakit.SourceError):
        datakit.run_build(make_recipe(recipe), silent=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


ROWS = [[5, 6, 7], [1], [2, 3], [9, 9, 9, 9], [4, 4]]


def _spill(tmp_path) -> SpillWriter:
    rows = SpillWriter(tmp_path / "spill")
    ids = np.array([t for r in ROWS for t in r], np.int32)
    batch = model_batch(ids, np.array([len(r) for r in ROWS]))
    n = len(ROWS)
    rows.write(with_columns(batch, {"_source": numeric_array(np.zeros(n, np.int32), pa.int32()),
                                    "_group": numeric_array(np.arange(n), pa.int64())}))
    rows.close()
    return rows


class LongestFirst(BaseStep):
    """A post-split step that sees the whole split's lengths first (as best-fit packing does),
    reorders it, then joins each pair of rows it receives."""

    def __init__(self):
        super().__init__()
        self.seen_lengths = []
        self.held = []

    def begin_split(self, split: SplitRows) -> SplitRows:
        self.seen_lengths.append(split.lengths.tolist())
        order = np.argsort(-split.lengths, kind="stable")
        return SplitRows(split.name, split.indices[order], split.rows)

    def __call__(self, batch):
        self.held += batch.column("input_ids").to_pylist()
        return self._emit(2)

    def flush(self):
        return self._emit(1)

    def end_split(self):
        return {"joined": self.stats["rows_joined"]}

    def _emit(self, k):
        out = []
        while len(self.held) >= k:
            joined, self.held = sum(self.held[:k], []), self.held[k:]
            out.append(joined)
            self.stats["rows_joined"] += k
        if not out:
            return []
        flat = np.array([t for r in out for t in r], np.int32)
        return [model_batch(flat, np.array([len(r) for r in out]))]


class Recorder:
    name = "recorder"

    def __init__(self):
        self.rows = {}
        self.finished = None

    def open(self, folder, split):
        sink = self.rows.setdefault(split, [])

        class Sink:
            def write(self, batch):
                sink.extend(batch.column("input_ids").to_pylist())

            def close(self):
                sink.append("closed")
        return Sink()

    def finish(self, folder, splits):
        self.finished = splits


def test_write_runs_post_split_steps_per_split_into_every_writer(tmp_path):
    rows = _spill(tmp_path)
    plan = SplitPlan(splits={"train": np.array([0, 1, 2, 3]), "validation": np.array([4])}, sources=[])
    step, recorder = LongestFirst(), Recorder()
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    written = write(plan, rows, out, writers=[ArrowWriter(fingerprint="f"), recorder], split_steps=[step])
    # train, longest first: [9,9,9,9] [5,6,7] [2,3] [1], joined in pairs; validation's one row flushed alone
    expected = {"train": [[9, 9, 9, 9, 5, 6, 7], [2, 3, 1]], "validation": [[4, 4]]}
    assert recorder.rows == {name: r + ["closed"] for name, r in expected.items()}
    assert recorder.finished == ["train", "validation"]
    assert step.seen_lengths == [[3, 1, 2, 4], [2]]
    assert step.stats["rows_joined"] == 5
    assert written == {"train": {"rows": 2, "tokens": 10, "joined": 4}, "validation": {"rows": 1, "tokens": 2, "joined": 5}}
    ds = datakit.load(out)
    assert {name: [list(x) for x in ds[name]["input_ids"]] for name in ds} == expected
    assert json.loads((out / "dataset_dict.json").read_text()) == {"splits": ["train", "validation"]}


def test_split_rows_gathers_in_chunks_in_order(tmp_path):
    rows = _spill(tmp_path)
    split = SplitRows("train", np.array([4, 0, 3, 0]), rows)
    got = [r for b in split.batches(chunk=3) for r in b.column("input_ids").to_pylist()]
    assert got == [ROWS[4], ROWS[0], ROWS[3], ROWS[0]]
    assert split.lengths.tolist() == [2, 3, 4, 3]
