"""The build's counts: names defined once, each event counted once, and the read/written totals
against independent counts of the input and the output."""
import json
import pickle

import pytest

import datakit
from datakit.counts import BY_REASON, COUNTS, Counts

ROWS = [{"instruction": f"Question {i}", "input": "", "output": f"Answer number {i}."} for i in range(6)]


def test_counts_refuse_a_name_that_is_not_defined():
    c = Counts()
    c.add("rows_read", 3)
    c.add("rows_dropped", 2, reason="overlong")
    with pytest.raises(KeyError, match="documents_read"):
        c.add("documents_read", 1)
    with pytest.raises(KeyError, match="rows_read"):
        c.add("rows_read", 1, reason="why")
    with pytest.raises(KeyError):
        c.merge({"tokens_in": 4})
    assert dict(c) == {"rows_read": 3, "rows_dropped.overlong": 2}
    assert dict(pickle.loads(pickle.dumps(c))) == dict(c)  # steps travel to other processes


def _stored_names(counts: dict) -> set[str]:
    return {k if not isinstance(v, dict) else f"{k}.*" for k, v in counts.items()}


@pytest.mark.parametrize("action", ["drop", "group"])
def test_a_duplicate_is_counted_once(tmp_path, make_recipe, hf_tokenizer, action):
    rows = ROWS + [ROWS[1], ROWS[2], ROWS[2]]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": "d.json", "format": "alpaca"}],
              "transforms": [{"dedup": {"mode": "exact", "action": action}}, {"template": "alpaca"},
                             {"tokenize": {}}], "output": "out"}
    m = datakit.run_build(make_recipe(recipe), silent=True).manifest
    c = m["counts"]
    counted = "rows_grouped" if action == "group" else "rows_dropped"
    assert c[counted] == {"exact_duplicate": 3, "near_duplicate": 0}
    assert c["rows_read"] == len(rows)
    assert c["rows_written"] == len(rows) - sum(c["rows_dropped"].values()) == m["splits"]["train"]["rows"]
    allowed = set(COUNTS) | {f"{k}.*" for k in BY_REASON}
    assert _stored_names(c) <= allowed


def test_read_and_written_match_the_input_and_the_output(tmp_path, make_recipe, hf_tokenizer):
    from transformers import AutoTokenizer

    docs = [f"Document {i} has {'some ' * i}words." for i in range(1, 30)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    recipe = {"tokenizer": str(hf_tokenizer),
              "sources": [{"path": "c.txt", "format": "text", "document_separator": "\n\n"}],
              "transforms": [{"tokenize": {}}, {"pack": {"block_size": 16, "remainder": "pad"}}],
              "split": {"val_set_size": 0.2, "seed": 1}, "output": "out"}
    result = datakit.run_build(make_recipe(recipe), silent=True)
    c = result.manifest["counts"]
    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    assert c["rows_read"] == len(docs)
    assert c["tokens_read"] == sum(len(tok(d)["input_ids"]) for d in docs)
    ds = datakit.load(result.path)
    assert c["rows_written"] == sum(len(ds[s]) for s in ds)
    assert c["tokens_written"] == sum(sum(map(sum, ds[s]["attention_mask"])) for s in ds)
    assert c["tokens_read"] + c["eos_added"] == c["tokens_written"]
