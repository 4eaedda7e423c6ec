"""dedup: planted exact and near duplicates, across sources, with CJK text, and leak-free splits."""
import json

import numpy as np
import pyarrow as pa
import pytest

import datakit
from datakit.recipe import DedupOptions
from datakit.transforms.dedup import Dedup, shingle_hashes

BASE = [
    "The old lighthouse stood on a rock at the edge of the harbour and every evening the keeper lit the lamp.",
    "Bread needs flour, water, salt and time; the dough rests while the yeast makes small bubbles of gas.",
    "A train timetable is a promise written as a table where each row is a station and each column a train.",
    "Rivers carry sand from the mountains to the sea and over many years the sand settles in wide deltas.",
    "数据的质量比数量更重要。重复的样本会让模型记住答案，而不是学会推理，所以训练之前要去掉重复的数据。",
    "学习一门语言需要时间和耐心。每天读一点书，写几句话，慢慢地就会进步，语言模型也是这样学习的。",
]
EXACT = ["  THE OLD LIGHTHOUSE stood on a rock at the edge of the harbour and every evening the keeper lit the lamp. "]
NEAR = [
    "The old lighthouse stood on a rock at the edge of the harbour and every evening the keeper lit the lamps.",
    "数据的质量比数量更重要。重复的样本会让模型记住答案，而不是学会推理，所以训练之前要去掉重复数据。",
]
DISTINCT = [f"Distinct document number {i} talks about topic {i * 7} in its own words entirely." for i in range(8)]


def batch(texts, start=0):
    n = len(texts)
    return pa.RecordBatch.from_pydict({"text": texts, "_where": [f"f:{i}" for i in range(n)],
                                       "_source": pa.array(np.zeros(n, np.int32)),
                                       "_group": pa.array(np.arange(start, start + n, dtype=np.int64))})


@pytest.mark.parametrize("mode", ["exact", "near"])
def test_planted_duplicates_are_removed_across_batches(mode):
    step = Dedup(DedupOptions(mode=mode, threshold=0.7))
    first = step(batch(BASE + DISTINCT))[0]
    second = step(batch(EXACT + NEAR + ["A brand new sentence that nobody wrote before, about kites."], 100))[0]
    assert first.num_rows == len(BASE + DISTINCT)
    kept = second.column("text").to_pylist()
    assert EXACT[0] not in kept
    assert kept[-1].startswith("A brand new")
    if mode == "near":  # the case/space variant is caught by the shingles, which ignore both
        assert kept == [kept[-1]]
        assert step.stats["rows_dropped.near_duplicate"] == 3
    else:
        assert set(NEAR) <= set(kept)
        assert step.stats["rows_dropped.exact_duplicate"] == 1


def test_group_action_keeps_copies_in_the_first_rows_group():
    step = Dedup(DedupOptions(mode="near", threshold=0.7, action="group"))
    step(batch(BASE))
    out = step(batch(NEAR, 50))[0]
    assert out.num_rows == 2
    assert out.column("_group").to_pylist() == [0, 4]


def test_shingles_use_characters_for_cjk_and_words_otherwise():
    flat, offsets = shingle_hashes(["one two three four five six", "一二三四五六", "short", ""], 3)
    counts = np.diff(offsets.astype(np.int64)).tolist()
    assert counts == [4, 4, 1, 1]  # 6 words -> 4 trigrams; 6 characters -> 4; short rows: one shingle
    again, _ = shingle_hashes(["one two three four five six"], 3)
    assert again.tolist() == flat[:4].tolist()  # deterministic, independent of the batch


def test_dedup_runs_across_sources_and_no_validation_row_has_a_duplicate_in_train(tmp_path, make_recipe, hf_tokenizer):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in BASE + DISTINCT))
    b.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in EXACT + NEAR + BASE[:2]))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(a)}, {"path": str(b)}],
              "transforms": [{"dedup": {"mode": "near", "threshold": 0.7}}, {"tokenize": {}},
                             {"pack": {"block_size": 8, "remainder": "keep"}}],
              "split": {"val_set_size": 0.3, "seed": 3}, "output": "out"}
    m = datakit.run_build(make_recipe(recipe), silent=True).manifest
    dropped = m["counts"]["rows_dropped"]
    assert dropped["exact_duplicate"] + dropped["near_duplicate"] == len(EXACT + NEAR) + 2
    assert m["sources"][1]["rows_built"] == 0


def test_kept_near_duplicates_never_straddle_the_split(tmp_path, make_recipe, hf_tokenizer):
    rows = []
    for i in range(30):
        base = {"instruction": f"Describe item {i} of the catalogue in detail please", "input": "",
                "output": f"Item {i} is a wooden chair with four legs and a curved back, painted colour {i}."}
        rows.append(base)
        rows.append({**base, "output": base["output"] + " Really."})  # a near duplicate
        rows.append(dict(base))  # an exact duplicate
    src = tmp_path / "d.json"
    src.write_text(json.dumps(rows))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "format": "alpaca"}],
              "transforms": [{"dedup": {"mode": "near", "threshold": 0.6, "action": "group"}},
                             {"template": "alpaca_short"}, {"tokenize": {}}],
              "split": {"val_set_size": 0.25, "seed": 5}, "output": "out"}
    out = datakit.run_build(make_recipe(recipe), silent=True).path
    ds = datakit.load(out)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    train = [tok.decode(r) for r in ds["train"]["input_ids"]]
    val = [tok.decode(r) for r in ds["validation"]["input_ids"]]
    assert len(train) + len(val) == 90
    for v in val:
        item = v.split("Describe item ")[1].split(" ")[0]
        assert not any(f"Describe item {item} " in t for t in train)
