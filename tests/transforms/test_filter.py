"""filter: every heuristic drops what it should, counts it by reason, and writes the rejects file."""
import json

import pytest

import datakit
from datakit.transforms.filter import alpha_fraction, repeated_line_fraction, repeated_ngram_fraction

ROWS = [
    {"instruction": "Good question about bread?", "input": "", "output": "Bread needs flour, water, salt and time."},
    {"instruction": "Empty answer", "input": "", "output": "   "},
    {"instruction": "Too short", "input": "", "output": "ok"},
    {"instruction": "Repeated lines", "input": "", "output": "spam line\nspam line\nspam line\nspam line"},
    {"instruction": "Symbols", "input": "", "output": "$$$ ### %%% &&& *** ((( ))) !!! ??? ... ,,, ;;; :::"},
    {"instruction": "Chinese is letters too", "input": "", "output": "数据的质量比数量更重要。"},
]


def test_heuristics():
    assert repeated_line_fraction("a\nb\na\na") == 0.5
    assert repeated_ngram_fraction("a b c a b c") == 0.25
    assert alpha_fraction("ab12") == 0.5 and alpha_fraction("中文") == 1.0


def test_filter_drops_by_reason_and_writes_rejects(tmp_path, make_recipe, hf_tokenizer):
    src = tmp_path / "d.json"
    src.write_text(json.dumps(ROWS, ensure_ascii=False))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": "d.json", "format": "alpaca"}],
              "transforms": [{"filter": {"min_chars": 18, "max_repeated_line_fraction": 0.5,
                                         "min_alpha_fraction": 0.5, "max_tokens": 200,
                                         "rejects": "rejects.jsonl"}},
                             {"template": "alpaca"}, {"tokenize": {}}],
              "output": "out"}
    m = datakit.run_build(make_recipe(recipe), silent=True).manifest
    assert m["counts"]["rows_dropped"] == {"empty_response": 1, "too_few_chars": 1, "repeated_lines": 1,
                                           "low_alpha": 1}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["empty_response", "too_few_chars", "repeated_lines", "low_alpha"]
    assert rejects[0]["where"] == f"{src}: row 1" and rejects[0]["row"]["instruction"] == "Empty answer"
    assert len(datakit.load(tmp_path / "out")["train"]) == 2


def test_rejects_file_appears_only_when_the_build_succeeds(tmp_path, make_recipe, hf_tokenizer):
    src = tmp_path / "d.json"
    src.write_text(json.dumps(ROWS[1:2]))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": "d.json", "format": "alpaca"}],
              "transforms": [{"filter": {"rejects": "rejects.jsonl"}}, {"template": "alpaca"}, {"tokenize": {}}],
              "output": "out"}
    with pytest.raises(datakit.DatakitError, match="no rows"):
        datakit.run_build(make_recipe(recipe), silent=True)
    assert not (tmp_path / "rejects.jsonl").exists()
    assert not any(p.name.startswith(".rejects") for p in tmp_path.iterdir())
