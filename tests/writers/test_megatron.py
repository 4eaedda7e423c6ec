"""Megatron's .bin/.idx: read back by megatron-core's own IndexedDataset, and byte for byte what
megatron-core's IndexedDatasetBuilder writes for the same documents."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from datakit.transforms.base import model_batch
from datakit.writers.megatron import MegatronWriter

with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": not needed to read data
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

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
    assert writer.documents_empty == sum(1 for d in docs if not d)
    bin_entry = next(e for e in entries if e["path"].endswith(".bin"))
    assert bin_entry["rows"] == len(expected)
    assert bin_entry["bytes"] == sum(map(len, expected)) * np.dtype(ds.index.dtype).itemsize


@pytest.mark.parametrize("vocab_size", [32_000, 128_256])
def test_files_are_byte_identical_to_megatron_cores_builder(tmp_path, vocab_size):
    import torch

    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 32_000, size=int(n)).tolist() for n in rng.integers(0, 300, size=200)]
    _write(tmp_path, docs, vocab_size=vocab_size, per_batch=17)
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=DType.optimal_dtype(vocab_size))
    for doc in _expected(docs):
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(str(tmp_path / "ref.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / "megatron" / f"train{suffix}").read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()


def test_an_id_past_uint16_is_refused(tmp_path):
    writer = MegatronWriter(tmp_path, split="train", vocab_size=32_000, eod_id=EOD)
    with pytest.raises(ValueError, match="does not fit the uint16"):
        writer.write(model_batch(np.array([5, 70_000], np.int32), np.array([2])))
