"""What other tools read from a build: Features JSON that `datasets` 3.x and later both open, and a
pad id that a plain `transformers` collator can use."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

import datakit
from datakit.writers.arrow import FEATURES, output_schema

# What `datasets` 3.6.0 writes for `Features({"input_ids": Sequence(Value("int32")), ...}).to_dict()`
# (recorded from a datasets<4 install: 3.x has no `List` type and fails on one with
# "Feature type 'List' not found").
DATASETS_3_FEATURES = {
    "input_ids": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "Sequence"},
    "attention_mask": {"feature": {"dtype": "int8", "_type": "Value"}, "_type": "Sequence"},
    "labels": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "Sequence"},
}


def _types(node) -> set[str]:
    if isinstance(node, dict):
        return ({node["_type"]} if "_type" in node else set()) | set().union(*map(_types, node.values()))
    if isinstance(node, list):
        return set().union(*map(_types, node)) if node else set()
    return set()


def test_features_are_written_in_the_form_datasets_3_reads():
    assert FEATURES == DATASETS_3_FEATURES


def test_the_installed_datasets_reads_them_as_the_arrow_columns():
    from datasets import Features

    assert Features.from_dict(FEATURES) == Features.from_arrow_schema(output_schema())
    assert Features.from_dict(FEATURES).arrow_schema == output_schema().remove_metadata()


@pytest.fixture
def no_pad_tokenizer(hf_tokenizer, tmp_path):
    """The test tokenizer without a pad token (as Llama's and GPT-2's ship)."""
    tok = tmp_path / "no_pad"
    shutil.copytree(hf_tokenizer, tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    return tok


def _sft_build(tmp_path, tokenizer):
    src = tmp_path / "a.json"
    src.write_text(json.dumps([{"instruction": f"Say {w}.", "input": "", "output": f"{w} " * (i + 1)}
                               for i, w in enumerate(["hello", "bye", "yes", "no"])]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": str(tokenizer), "sources": [{"path": str(src), "format": "alpaca"}],
                                      "transforms": [{"template": "alpaca_short"}, {"tokenize": {}}],
                                      "output": str(tmp_path / "out")}))
    return datakit.run_build(recipe, silent=True)


def test_every_list_column_of_a_build_is_a_sequence(tmp_path, hf_tokenizer):
    out = _sft_build(tmp_path, hf_tokenizer).path
    info = json.loads((out / "train" / "dataset_info.json").read_text())
    assert _types(info["features"]) == {"Sequence", "Value"}
    import pyarrow as pa

    with pa.memory_map(str(out / "train" / "data-00000-of-00001.arrow")) as f:
        meta = json.loads(pa.ipc.open_stream(f).schema.metadata[b"huggingface"])
    assert _types(meta["info"]["features"]) == {"Sequence", "Value"}


def test_the_manifest_pad_id_is_what_the_collator_pads_with(tmp_path, no_pad_tokenizer):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq

    from datakit.train.collator import Collator

    result = _sft_build(tmp_path, no_pad_tokenizer)
    tok_info = result.manifest["tokenizer"]
    hf = AutoTokenizer.from_pretrained(str(no_pad_tokenizer))
    assert hf.pad_token_id is None
    assert tok_info["pad_id"] == hf.eos_token_id and tok_info["pad_id_from"] == "eos_token"
    rows = [{k: list(v) for k, v in r.items()} for r in datakit.load(result.path)["train"]]
    assert len({len(r["input_ids"]) for r in rows}) > 1
    with pytest.raises(ValueError):  # what users hit with pad_id: null
        DataCollatorForSeq2Seq(hf, padding=True)(rows)
    hf.pad_token_id = tok_info["pad_id"]  # what the README says to do
    theirs = DataCollatorForSeq2Seq(hf, padding=True, label_pad_token_id=-100)(rows)
    ours = Collator(pad_id=tok_info["pad_id"])(rows)
    for key in ("input_ids", "attention_mask", "labels"):
        assert theirs[key].tolist() == ours[key].tolist(), key


def test_a_tokenizer_with_a_pad_token_keeps_it(tmp_path, hf_tokenizer):
    from transformers import AutoTokenizer

    tok_info = _sft_build(tmp_path, hf_tokenizer).manifest["tokenizer"]
    assert tok_info["pad_id"] == AutoTokenizer.from_pretrained(str(hf_tokenizer)).pad_token_id
    assert tok_info["pad_id_from"] == "pad_token"
