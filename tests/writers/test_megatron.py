"""Megatron's .bin/.idx: read back by megatron-core's own IndexedDataset, and byte for byte what
megatron-core's IndexedDatasetBuilder writes for the same documents."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from datakit.columns import model_batch
from datakit.writers.megatron import MegatronWriter

with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": not needed to read data
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import (
        DType,
        IndexedDataset,
        IndexedDatasetBuilder,
    )

EOD = 2


def _write(root, docs: list[list[int]], *, vocab_size: int, per_batch: int = 3, split: str = "train"):
    writer = MegatronWriter(root, split=split, vocab_size=vocab_size, eod_id=EOD)
    for start in range(0, len(docs), per_batch):
        part = docs[start:start + per_batch]
        ids = np.array([t for d in part for t in d], np.int32)
        writer.write(model_batch(ids, np.array([len(d) for d in part])))
    return writer, writer.close()


def _expected(docs: list[list[int]]) -> list[list[int]]:
    """preprocess_data.py --append-eod: every non-empty document, then EOD."""
    return [d + [EOD] if d[-1] != EOD else d for d in docs if d]


documents = st.lists(st.lists(st.integers(0, 65_535), max_size=40), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=documents, vocab_size=st.sampled_from([400, 32_000, 65_499, 65_500, 128_256]))
def test_megatron_reads_every_document(tmp_path_factory, docs, vocab_size):
    assume(any(docs))  # numpy cannot map an empty .bin, so Megatron cannot open a split without tokens
    root = tmp_path_factory.mktemp("megatron")
    if vocab_size < 65_500:
        docs = [[t % vocab_size for t in d] for d in docs]
    writer, entries = _write(root, docs, vocab_size=vocab_size)
    expected = _expected(docs)
    ds = IndexedDataset(str(root / "megatron" / "train"))
    assert ds.index.dtype == DType.optimal_dtype(vocab_size)
    assert len(ds) == len(expected)
    assert [ds[i].tolist() for i in range(len(ds))] == expected
    assert ds.document_indices.tolist() == list(range(len(expected) + 1))
    assert writer.stats["documents_empty"] == sum(1 for d in docs if not d)
    assert writer.stats["train_documents"] == len(expected)
    assert writer.stats["train_tokens"] == sum(map(len, expected))
    bin_entry = next(e for e in entries if e["path"].endswith(".bin"))
    assert bin_entry["rows"] == len(expected)
    assert bin_entry["bytes"] == sum(map(len, expected)) * np.dtype(ds.index.dtype).itemsize


@pytest.mark.parametrize("vocab_size", [32_000, 128_256])
def test_files_are_byte_identical_to_megatron_cores_builder(tmp_path, vocab_size):
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 32_000, size=int(n)).tolist() for n in rng.integers(0, 300, size=200)]
    _write(tmp_path, docs, vocab_size=vocab_size, per_batch=17)
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=DType.optimal_dtype(vocab_size))
    for doc in _expected(docs):
        builder.add_document(np.array(doc), [len(doc)])
    builder.finalize(str(tmp_path / "ref.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / "megatron" / f"train{suffix}").read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()


def test_an_id_past_uint16_is_refused(tmp_path):
    writer = MegatronWriter(tmp_path, split="train", vocab_size=32_000, eod_id=EOD)
    with pytest.raises(ValueError, match="does not fit the uint16"):
        writer.write(model_batch(np.array([5, 70_000], np.int32), np.array([2])))


def _paragraph_recipe(out, *, val, shuffle=True, block=64, eos="per_document"):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return {"tokenizer": str(root / "examples" / "tokenizer"),
            "sources": [{"path": str(root / "examples" / "data" / "corpus.txt"), "document_separator": "\n\n"}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": block, "eos": eos}}],
            "split": {"val_set_size": val, "seed": 5, "shuffle": shuffle},
            "output": {"path": str(out), "formats": ["hf", "megatron"]}}


def _reference_documents(recipe) -> list[list[int]]:
    """Each paragraph tokenized by transformers, BOS as the tokenizer adds it, then EOS."""
    from pathlib import Path

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(recipe["tokenizer"])
    text = Path(recipe["sources"][0]["path"]).read_text("utf-8")
    return [tok.encode(p) + [tok.eos_token_id] for p in text.split("\n\n") if p]


def _megatron_documents(out, split):
    ds = IndexedDataset(str(out / "megatron" / split))
    return [ds[i].tolist() for i in range(len(ds))]


@pytest.mark.parametrize("eos", ["per_document", "per_block"])
def test_the_documents_are_the_stream_that_pack_cuts_into_the_blocks(tmp_path, make_recipe, eos):
    import datakit

    out = tmp_path / "build"
    recipe = _paragraph_recipe(out, val=0, shuffle=False, eos=eos)
    result = datakit.run_build(make_recipe(recipe), silent=True)
    docs = _megatron_documents(out, "train")
    assert docs == _reference_documents(recipe)
    if eos == "per_document":  # the blocks are the same stream, cut every 64 tokens
        blocks = [t for row in datakit.load(out)["train"]["input_ids"] for t in row]
        assert [t for d in docs for t in d][:len(blocks)] == blocks
    bins = [f for f in result.manifest["formats"]["megatron"]["files"] if f["path"].endswith(".bin")]
    assert [(f["path"], f["rows"]) for f in bins] == [("megatron/train.bin", len(docs))]
    assert result.manifest["formats"]["megatron"]["train_tokens"] == sum(map(len, docs))


def test_every_document_lands_in_exactly_one_split(tmp_path, make_recipe):
    import datakit

    out = tmp_path / "build"
    recipe = _paragraph_recipe(out, val=0.25)
    datakit.run_build(make_recipe(recipe), silent=True)
    train, validation = _megatron_documents(out, "train"), _megatron_documents(out, "validation")
    assert train and validation
    assert sorted(train + validation) == sorted(_reference_documents(recipe))
