"""Writing a build: a spill file during the build, then the ``save_to_disk`` layout per split.

Rows are spilled to one Arrow IPC file as they are made, so memory stays flat however large the
input. The splits are then gathered from the memory-mapped spill a chunk at a time; the map is
closed after every chunk so that its pages leave the resident set.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

COLUMNS = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "labels": pa.int32()}
FEATURES = {name: {"feature": {"dtype": str(t), "_type": "Value"}, "_type": "List"}
            for name, t in COLUMNS.items()}
TAKE_ROWS = 4096


def output_schema(extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The Arrow schema of a split, with the ``huggingface`` metadata `datasets` reads Features from."""
    fields = [pa.field(n, pa.list_(t)) for n, t in COLUMNS.items()]
    meta = {"huggingface": json.dumps({"info": {"features": FEATURES}})}
    return pa.schema(fields, metadata=meta)


class SpillWriter:
    """Appends output batches (input_ids, attention_mask, labels) to one Arrow IPC file."""

    def __init__(self, path: Path):
        self.path = path
        self.schema = output_schema()
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.rows = 0
        self.lengths: list[np.ndarray] = []

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.select(list(COLUMNS)).cast(self.schema.remove_metadata(), safe=True) \
            if batch.schema.names != list(COLUMNS) else batch
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        offsets = batch.column("input_ids").offsets.to_numpy()
        self.lengths.append(np.diff(offsets))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def write_split(spill: Path, indices: np.ndarray, folder: Path, *, fingerprint: str) -> dict:
    """Gather ``indices`` from the spill file into ``folder`` in the ``save_to_disk`` layout."""
    folder.mkdir(parents=True)
    filename = "data-00000-of-00001.arrow"
    schema = output_schema()
    tokens = 0
    with pa.OSFile(str(folder / filename), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(indices), TAKE_ROWS):
            with pa.memory_map(str(spill)) as mm:
                table = pa.ipc.open_file(mm).read_all()
                part = table.take(pa.array(indices[start:start + TAKE_ROWS]))
                for batch in part.combine_chunks().to_batches():
                    writer.write_batch(batch.replace_schema_metadata(schema.metadata))
                    tokens += len(batch.column("input_ids").values)
                del table, part
        if len(indices) == 0:
            writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema))
    info = {"citation": "", "description": "", "features": FEATURES, "homepage": "", "license": ""}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=False))
    state = {"_data_files": [{"filename": filename}],
             "_fingerprint": hashlib.sha256(f"{fingerprint}:{folder.name}".encode()).hexdigest()[:16],
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    return {"rows": int(len(indices)), "tokens": int(tokens)}


def write_dataset_dict(folder: Path, splits: list[str]) -> None:
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))
