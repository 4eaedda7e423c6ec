"""Weighted and repeated sources: expected counts, seeded, copies on one side of the split."""
import json
from collections import Counter

import numpy as np
import pytest

import datakit
from datakit.mixing import mix, split_groups, targets
from datakit.recipe import SourceConfig


@pytest.mark.parametrize("repeat, n, expected", [(1, 10, 10), (3, 10, 30), (2.5, 10, 25), (0.4, 10, 4)])
def test_repeat_counts(repeat, n, expected):
    rows = mix([SourceConfig(path="a", repeat=repeat)], np.zeros(n, np.int32), seed=0)
    assert len(rows) == expected
    c = Counter(rows.tolist())
    assert max(c.values()) - min(c.values()) <= 1  # every row seen floor or ceil(repeat) times
    assert len(c) == min(n, expected)


def test_weights_share_the_pooled_rows():
    sources = [SourceConfig(path="a", weight=3), SourceConfig(path="b", weight=1), SourceConfig(path="c")]
    row_source = np.repeat([0, 1, 2], [10, 30, 5]).astype(np.int32)
    assert targets(sources, [10, 30, 5]) == [30, 10, 5]
    rows = mix(sources, row_source, seed=1)
    assert Counter(row_source[rows].tolist()) == {0: 30, 1: 10, 2: 5}
    assert np.array_equal(rows, mix(sources, row_source, seed=1))
    assert not np.array_equal(rows, mix(sources, row_source, seed=2))


def test_copies_and_identical_rows_share_a_group():
    group = np.array([0, 1, -1, 3, -1])
    content = np.array([7, 8, 9, 7, 9], dtype=np.uint64)
    g = split_groups(group, content)
    assert g[0] == g[3] and g[2] == g[4] and len({g[0], g[1], g[2]}) == 3


def test_build_with_repeat_and_weights(tmp_path, make_recipe, hf_tokenizer):
    def rows(prefix, n):
        return [{"instruction": f"{prefix} question {i}?", "input": "", "output": f"{prefix} answer {i}."}
                for i in range(n)]
    (tmp_path / "a.json").write_text(json.dumps(rows("alpha", 20)))
    (tmp_path / "b.json").write_text(json.dumps(rows("beta", 10)))
    recipe = {"tokenizer": str(hf_tokenizer),
              "sources": [{"path": "a.json", "format": "alpaca", "name": "general"},
                          {"path": "b.json", "format": "alpaca", "name": "domain", "repeat": 2.5}],
              "transforms": [{"template": "alpaca_short"}, {"tokenize": {}}],
              "split": {"val_set_size": 0.2, "seed": 4}, "output": "out"}
    result = datakit.run_build(make_recipe(recipe), silent=True)
    m = result.manifest
    by_name = {s["name"]: s for s in m["sources"]}
    assert by_name["general"]["rows"] == 20 and by_name["domain"]["rows"] == 25
    ds = datakit.load(result.path)
    train = Counter(tuple(r) for r in ds["train"]["input_ids"])
    val = Counter(tuple(r) for r in ds["validation"]["input_ids"])
    assert sum(train.values()) + sum(val.values()) == 45
    assert not set(train) & set(val)  # no row, and no copy of it, on both sides
    assert sum(by_name[n]["validation_rows"] for n in by_name) == sum(val.values())
    again = datakit.run_build(make_recipe(recipe), output=result.path.parent / "again", silent=True).path
    for split in ("train", "validation"):
        f = f"{split}/data-00000-of-00001.arrow"
        assert (result.path / f).read_bytes() == (again / f).read_bytes()
    from datakit import inspect as view

    summary = view.summary_text(view.open_build(result.path))
    assert "source domain: rows 25" in summary
