"""An MDS reader written from the format's description (streaming's docs and ``MDSReader``), so that
the MDS tests have a reference even where ``streaming`` is not installed.

index.json: ``{"version": 2, "shards": [{"samples": n, "raw_data": {"basename", "bytes"},
"column_names", "column_encodings", "column_sizes", "format": "mds", "compression": null, ...}]}``.
A shard: uint32 sample count, uint32 offsets (count + 1, from the file's start), the config JSON,
then the samples; a sample: uint32 sizes of its variable-size columns, then every column's bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_VALUE_DTYPES = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 32: "uint32", 33: "int32", 64: "uint64",
                 65: "int64"}
_SHAPE_DTYPES = {0: "uint8", 1: "uint16", 2: "uint32", 3: "uint64"}


def _ndarray(encoding: str, data: bytes) -> np.ndarray:
    args = encoding.split(":")[1:]
    at = 0
    if args:
        dtype = args[0]
    else:
        dtype, at = _VALUE_DTYPES[data[0]], 1
    ndim, shape_code = data[at] >> 2, data[at] & 3
    shape_dtype = np.dtype(_SHAPE_DTYPES[shape_code])
    shape = np.frombuffer(data, shape_dtype, count=ndim, offset=at + 1)
    at += 1 + ndim * shape_dtype.itemsize
    return np.frombuffer(data, dtype, offset=at).reshape(shape)


def _decode(encoding: str, data: bytes):
    if encoding.startswith("ndarray"):
        return _ndarray(encoding, data)
    if encoding == "json":
        return json.loads(data)
    if encoding == "str":
        return data.decode()
    raise ValueError(f"encoding {encoding} is not read by this reference")


def read_split(folder: Path) -> list[dict]:
    """Every sample of an MDS folder, in order."""
    index = json.loads((folder / "index.json").read_text())
    assert index["version"] == 2
    samples = []
    for shard in index["shards"]:
        assert shard["format"] == "mds" and shard["compression"] is None
        raw = (folder / shard["raw_data"]["basename"]).read_bytes()
        assert len(raw) == shard["raw_data"]["bytes"]
        n = int(np.frombuffer(raw, np.uint32, count=1)[0])
        assert n == shard["samples"]
        offsets = np.frombuffer(raw, np.uint32, count=n + 1, offset=4)
        config = json.loads(raw[4 + 4 * (n + 1):int(offsets[0])])
        assert config["column_names"] == shard["column_names"]
        names, encodings, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
        n_var = sum(size is None for size in sizes)
        for i in range(n):
            sample = raw[offsets[i]:offsets[i + 1]]
            var_sizes = iter(np.frombuffer(sample, np.uint32, count=n_var).tolist())
            at = 4 * n_var
            row = {}
            for name, encoding, size in zip(names, encodings, sizes):
                size = next(var_sizes) if size is None else size
                row[name] = _decode(encoding, sample[at:at + size])
                at += size
            assert at == len(sample)
            samples.append(row)
    return samples
