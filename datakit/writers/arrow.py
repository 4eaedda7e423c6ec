"""The ``hf`` writer: the ``save_to_disk`` layout that ``datasets.load_from_disk`` opens.

Per split a folder with one Arrow stream file, ``dataset_info.json`` and ``state.json``; the
build folder gets ``dataset_dict.json`` listing the splits. Batches arrive a chunk at a time
(``stages.write``), so the writer holds one chunk however large the split.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from ..columns import MODEL_COLUMNS as COLUMNS
from .files import FileEntry, file_entry

def features(columns: dict[str, pa.DataType]) -> dict:
    """`datasets` Features of list columns, in the ``Sequence`` form: `datasets` 3.x knows no
    ``List`` type, and 4.x and later read ``Sequence`` as ``List``, so builds open in both."""
    return {name: {"feature": {"dtype": str(t), "_type": "Value"}, "_type": "Sequence"} for name, t in columns.items()}


FEATURES = features(COLUMNS)
FILENAME = "data-00000-of-00001.arrow"


def output_schema(columns: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The Arrow schema of a split, with the ``huggingface`` metadata `datasets` reads Features from.
    ``columns`` (name -> value type of a list column) defaults to input_ids, attention_mask, labels;
    packed rows add position_ids and seq_lens."""
    columns = columns or COLUMNS
    fields = [pa.field(n, pa.list_(t)) for n, t in columns.items()]
    meta = {"huggingface": json.dumps({"info": {"features": features(columns)}})}
    return pa.schema(fields, metadata=meta)


class ArrowWriter:
    """Writes every split in the ``save_to_disk`` layout. ``fingerprint`` (the build's inputs
    fingerprint) seeds each split's ``_fingerprint``, so `datasets` caches stay per build."""

    name = "hf"
    documents = False

    def __init__(self, *, fingerprint: str):
        self.fingerprint = fingerprint
        self.files: list[FileEntry] = []
        self.stats: Counter = Counter()

    def open(self, folder: Path, split: str) -> "ArrowSplit":
        fingerprint = hashlib.sha256(f"{self.fingerprint}:{split}".encode()).hexdigest()[:16]
        return ArrowSplit(folder / split, fingerprint=fingerprint, files=self.files)

    def finish(self, folder: Path, splits: list[str]) -> None:
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))
        self.files.append(file_entry(folder / "dataset_dict.json", root=folder, format=self.name, split=None, rows=None))


class ArrowSplit:
    """One split's folder; ``write`` appends a batch, ``close`` writes the metadata files."""

    def __init__(self, folder: Path, *, fingerprint: str, files: list[FileEntry]):
        folder.mkdir(parents=True)
        self.folder = folder
        self.files = files
        self.fingerprint = fingerprint
        self.schema = output_schema()
        self.rows = 0
        self._sink = pa.OSFile(str(folder / FILENAME), "wb")
        self._writer = None  # opened at the first batch, whose columns make the schema

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._open(batch.schema)
        self._writer.write_batch(batch.replace_schema_metadata(self.schema.metadata))
        self.rows += batch.num_rows

    def _open(self, schema: pa.Schema) -> None:
        self.schema = output_schema({f.name: f.type.value_type for f in schema})
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def close(self) -> None:
        if self._writer is None:
            self._open(self.schema)
        if self.rows == 0:
            self._writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
        self._writer.close()
        self._sink.close()
        columns = {f.name: f.type.value_type for f in self.schema}
        info = {"citation": "", "description": "", "features": features(columns), "homepage": "", "license": ""}
        (self.folder / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=False))
        state = {"_data_files": [{"filename": FILENAME}], "_fingerprint": self.fingerprint,
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                 "_output_all_columns": False, "_split": None}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2))
        root, split = self.folder.parent, self.folder.name
        for name in (FILENAME, "dataset_info.json", "state.json"):
            rows = self.rows if name == FILENAME else None
            self.files.append(file_entry(self.folder / name, root=root, format="hf", split=split, rows=rows))
