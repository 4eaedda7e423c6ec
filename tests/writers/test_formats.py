"""``output.formats``: several formats from one build, every file in the manifest, all staged together."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest

import datakit
from datakit.columns import IGNORE_INDEX
from datakit.errors import RecipeError

from .mds_spec import read_split
from .references import llmfoundry_collator, streaming_base

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tokenizer"


def _alpaca(output, *, cutoff=256):
    return {"tokenizer": str(TOKENIZER),
            "sources": [{"path": str(ROOT / "examples" / "data" / "alpaca_sample.json"), "format": "alpaca"}],
            "transforms": [{"template": "alpaca"}, {"tokenize": {"cutoff_len": cutoff}}],
            "split": {"val_set_size": 0.2, "seed": 3}, "output": output}


def _pretrain(output, *, block=64):
    return {"tokenizer": str(TOKENIZER),
            "sources": [{"path": str(ROOT / "examples" / "data" / "corpus.txt"), "document_separator": "\n\n"}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": block}}],
            "split": {"val_set_size": 0.2, "seed": 3}, "output": output}


def _on_disk(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and p.name != "manifest.json"}


def _hf_rows(out: Path, split: str) -> tuple[list[list[int]], list[list[int]]]:
    ds = datakit.load(out)[split]
    return [list(r) for r in ds["input_ids"]], [list(r) for r in ds["labels"]]


def test_one_build_writes_every_format_and_lists_every_file(tmp_path, make_recipe):
    out = tmp_path / "build"
    output = {"path": str(out), "formats": ["hf", "parquet", "mds"], "parquet": {"compression": "snappy"},
              "mds": {"shard_size": 2_000}}
    result = datakit.run_build(make_recipe(_alpaca(output)), silent=True)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["formats"] == result.manifest["formats"]
    files = [f for fmt in result.manifest["formats"].values() for f in fmt["files"]]
    traced = list(result.manifest["provenance"].values())  # the side files: where each row came from
    assert {f["path"]: f["bytes"] for f in files + traced} == _on_disk(out)
    assert {f["format"] for f in files} == {"hf", "parquet", "mds"}
    assert list(result.manifest["formats"]) == ["hf", "parquet", "mds"]
    for split in ("train", "validation"):
        ids, labels = _hf_rows(out, split)
        n = result.manifest["splits"][split]["rows"]
        assert len(ids) == n
        for fmt in ("hf", "parquet", "mds"):
            assert sum(f["rows"] or 0 for f in files if f["format"] == fmt and f["split"] == split) == n, fmt
        df = pl.read_parquet(out / "parquet" / split / "*.parquet")
        features = datasets.load_dataset("parquet", data_files=str(out / "parquet" / split / "*.parquet"),
                                         split="train", cache_dir=str(tmp_path / "cache")).features
        assert features == datakit.load(out)[split].features
        assert df["input_ids"].to_list() == ids and df["labels"].to_list() == labels
        assert df.schema["attention_mask"] == pl.List(pl.Int8)
        samples = read_split(out / "mds" / split)
        for sample, row_ids, row_labels in zip(samples, ids, labels):
            flat = [t for turn in sample["turns"] for t in turn["input_ids"] + turn["labels"]]
            assert flat == row_ids[:len(flat)]
            assert all(label == IGNORE_INDEX for label in row_labels[len(flat):])


def test_a_plain_output_path_is_the_hf_layout_alone(tmp_path, make_recipe):
    result = datakit.run_build(make_recipe(_alpaca(str(tmp_path / "build"))), silent=True)
    assert list(result.manifest["formats"]) == ["hf"]
    assert {f["format"] for f in result.manifest["formats"]["hf"]["files"]} == {"hf"}
    assert not (tmp_path / "build" / "parquet").exists()


def test_pretraining_blocks_stream_back_through_streaming(tmp_path, make_recipe):
    base, why = streaming_base()
    if base is None:
        pytest.skip(why)
    out = tmp_path / "build"
    datakit.run_build(make_recipe(_pretrain({"path": str(out), "formats": ["hf", "mds"]})), silent=True)
    for split in ("train", "validation"):
        ids, _ = _hf_rows(out, split)
        ds = base.StreamingDataset(local=str(out / "mds"), split=split, shuffle=False, batch_size=1)
        assert len(ds) == len(ids)
        assert [ds[i]["tokens"].tolist() for i in range(len(ds))] == ids


def test_llmfoundry_trains_on_datakits_input_ids_and_labels(tmp_path, make_recipe):
    """The rows llm-foundry's collator makes from the shards are datakit's rows up to their last
    supervised token; rows cut at cutoff_len stay without EOS when max_seq_len is cutoff_len."""
    collator_module, why = llmfoundry_collator()
    base, why_streaming = streaming_base()
    if collator_module is None or base is None:
        pytest.skip(why or why_streaming)
    from transformers import AutoTokenizer

    cutoff = 128  # 8 of the 20 rows are longer: cut, without EOS
    out = tmp_path / "build"
    datakit.run_build(make_recipe(_alpaca({"path": str(out), "formats": ["hf", "mds"]}, cutoff=cutoff)),
                      silent=True)
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    collate = collator_module.Seq2SeqFinetuningCollator(
        tokenizer, max_seq_len=cutoff, decoder_only_format=True, target_prompts="none", target_responses="all")
    ids, labels = _hf_rows(out, "train")
    assert any(len(r) == cutoff and r[-1] != tokenizer.eos_token_id for r in ids)  # cut rows are tested
    ds = base.StreamingDataset(local=str(out / "mds"), split="train", shuffle=False, batch_size=1)
    assert len(ds) == len(ids)
    for i in range(len(ds)):
        batch = collate([ds[i]])
        end = max(j for j, label in enumerate(labels[i]) if label != IGNORE_INDEX) + 1
        n = int(batch["attention_mask"][0].sum())
        assert (n, batch["input_ids"][0, :n].tolist()) == (end, ids[i][:end])
        assert batch["labels"][0, :n].tolist() == labels[i][:end]


def test_a_failed_format_leaves_the_earlier_build_and_nothing_else(tmp_path, make_recipe, monkeypatch):
    out = tmp_path / "build"
    datakit.run_build(make_recipe(_alpaca(str(out))), silent=True)
    before = _on_disk(out)
    from datakit.writers import mds

    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(mds.MDSWriter, "close", broken)
    with pytest.raises(OSError, match="disk full"):
        datakit.run_build(make_recipe(_alpaca({"path": str(out), "formats": ["hf", "parquet", "mds"]})),
                          overwrite=True, silent=True)
    assert _on_disk(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "recipe.yaml"]


def test_megatron_is_refused_for_instruction_data(tmp_path):
    with pytest.raises(RecipeError, match="output.formats: megatron holds pretraining documents"):
        datakit.recipe.from_dict(_alpaca({"path": "x", "formats": ["hf", "megatron"]}))


def test_a_build_without_hf_says_how_to_read_it(tmp_path, make_recipe):
    from datakit.errors import DatakitError, OutputError

    recipe = make_recipe(_pretrain({"path": str(tmp_path / "build"), "formats": ["parquet", "megatron"]}))
    with pytest.raises(OutputError, match="add hf, or call datakit.run_build"):
        datakit.build(recipe)
    assert not (tmp_path / "build").exists()
    datakit.run_build(recipe, silent=True)
    assert not (tmp_path / "build" / "dataset_dict.json").exists()
    with pytest.raises(DatakitError, match="holds parquet, megatron, not the hf layout"):
        datakit.load(tmp_path / "build")


def test_mds_is_refused_for_packed_instruction_rows():
    recipe = _alpaca({"path": "x", "formats": ["hf", "mds"]})
    recipe["transforms"].append({"pack": {"block_size": 512, "strategy": "bfd"}})
    with pytest.raises(RecipeError, match="output.formats: mds holds instruction rows one by one"):
        datakit.recipe.from_dict(recipe)
