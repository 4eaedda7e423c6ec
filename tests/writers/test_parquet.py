"""Parquet shards: read by polars and pyarrow.dataset as they are, with the Arrow build's columns and types."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from datakit.columns import IGNORE_INDEX, model_batch
from datakit.writers.arrow import output_schema
from datakit.writers.files import parse_size
from datakit.writers.parquet import ParquetWriter


def _batches(rng, n_batches, rows=64):
    out = []
    for _ in range(n_batches):
        lengths = rng.integers(1, 300, size=rows)
        ids = rng.integers(0, 32_000, size=int(lengths.sum())).astype(np.int32)
        labels = np.where(rng.random(len(ids)) < 0.4, IGNORE_INDEX, ids).astype(np.int32)
        out.append(model_batch(ids, lengths, labels=labels))
    return out


def _write(root, batches, *, shard_size, compression="zstd", split="train"):
    writer = ParquetWriter(root, split=split, shard_size=shard_size, compression=compression)
    for batch in batches:
        writer.write(batch)
    return writer.close()


@pytest.mark.parametrize("compression", ["zstd", "snappy", "none"])
def test_polars_reads_the_rows_with_the_arrow_builds_types(tmp_path, compression):
    batches = _batches(np.random.default_rng(0), 12)
    entries = _write(tmp_path, batches, shard_size=200_000, compression=compression)
    shards = [e for e in entries if e["rows"] is not None]
    n = len(shards)
    assert n > 2
    assert [e["path"] for e in shards] == [f"parquet/train/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    df = pl.read_parquet(tmp_path / "parquet" / "train" / "*.parquet")
    expected = pa.Table.from_batches(batches)
    assert df.schema == {"input_ids": pl.List(pl.Int32), "attention_mask": pl.List(pl.Int8),
                         "labels": pl.List(pl.Int32)}
    assert df.height == expected.num_rows == sum(e["rows"] for e in shards)
    for name in ("input_ids", "attention_mask", "labels"):
        assert df[name].to_list() == expected.column(name).to_pylist()


def test_shards_stop_at_the_target_size_and_the_manifest_lists_them(tmp_path):
    batches = _batches(np.random.default_rng(1), 20)
    entries = _write(tmp_path, batches, shard_size=150_000)
    folder = tmp_path / "parquet" / "train"
    manifest = json.loads((folder / "_manifest.json").read_text())
    shards = [e for e in entries if e["rows"] is not None]
    assert [f["path"] for f in manifest["files"]] == [e["path"].rsplit("/", 1)[1] for e in shards]
    assert manifest["rows"] == sum(b.num_rows for b in batches)
    largest_group = max(pa.parquet.ParquetFile(folder / f["path"]).metadata.row_group(0).total_byte_size
                        for f in manifest["files"])
    for f in manifest["files"][:-1]:  # every shard but the last is closed right after passing the target
        size = (folder / f["path"]).stat().st_size
        assert f["bytes"] == size
        assert 150_000 <= size <= 150_000 + largest_group + 4096
    # pyarrow's dataset discovery skips the _manifest.json, as Spark and DuckDB do
    assert pads.dataset(folder, format="parquet").count_rows() == manifest["rows"]


def test_the_huggingface_features_travel_with_the_schema(tmp_path):
    _write(tmp_path, _batches(np.random.default_rng(2), 1), shard_size=1 << 30)
    (path,) = (tmp_path / "parquet" / "train").glob("*.parquet")
    schema = pa.parquet.read_schema(path)
    assert schema.metadata[b"huggingface"] == output_schema().metadata[b"huggingface"]


def test_an_empty_split_still_has_its_columns(tmp_path):
    _write(tmp_path, [], shard_size=1 << 20, split="validation")
    df = pl.read_parquet(tmp_path / "parquet" / "validation" / "*.parquet")
    assert df.height == 0 and df.columns == ["input_ids", "attention_mask", "labels"]


@pytest.mark.parametrize("text, size", [(1000, 1000), ("256MB", 256 << 20), ("1.5 GiB", 3 << 29),
                                        ("64kb", 64 << 10), ("7", 7), ("2g", 2 << 30)])
def test_sizes_read_like_datasets_max_shard_size(text, size):
    assert parse_size(text) == size
