"""``mds``: MosaicML streaming's MDS shards, the format llm-foundry and Composer train from, written
here from the format's specification (``mosaicml-streaming`` itself pins ``transformers<5`` and
``numpy<2.2``, so datakit cannot depend on it).

One folder per split: ``mds/{split}/index.json`` plus ``shard.00000.mds``, ``shard.00001.mds``...
A shard (``streaming.base.format.mds.writer.MDSWriter``, version 2) is
``[samples: uint32][offsets: uint32 * (samples + 1)][config JSON][sample]*``, offsets counted from
the start of the file; a sample is ``[uint32 size of every variable-size column][column bytes]*``,
columns in sorted name order.

Columns, as llm-foundry reads them:
- pretraining: ``tokens`` (``ndarray:int32``, one block per sample): what llm-foundry's
  ``convert_dataset_hf`` writes and ``StreamingTextDataset`` reads.
- sft: ``turns`` (``json``): ``[{"input_ids": context, "labels": response}, ...]``, what
  ``convert_finetuning_dataset`` writes and ``StreamingFinetuningDataset`` hands to its collator.
  See ``sft_turns`` for how datakit's rows become turns.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import IGNORE_INDEX, flat_lists
from .files import FileEntry, file_entry

SIZE_LIMIT_MAX = (1 << 32) - 1  # offsets are uint32
_SHAPE_DTYPES = ((1 << 8, np.uint8, 0), (1 << 16, np.uint16, 1), (1 << 32, np.uint32, 2))


def encode_tokens(ids: np.ndarray) -> bytes:
    """``ndarray:int32`` with a dynamic shape: ``[ndim << 2 | shape dtype code][shape][values]``."""
    n = len(ids)
    for bound, dtype, code in _SHAPE_DTYPES:
        if n < bound:
            return bytes([(1 << 2) | code]) + np.array([n], dtype).tobytes() + ids.astype(np.int32).tobytes()
    return bytes([(1 << 2) | 3]) + np.array([n], np.uint64).tobytes() + ids.astype(np.int32).tobytes()


def sft_turns(ids: np.ndarray, labels: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """One datakit row as llm-foundry turns: (context ids, response ids) pairs, plus the count of
    unsupervised tokens at the end of the row that no turn can hold.

    llm-foundry's collator rebuilds a row as ``context + response`` per turn, with labels -100 on
    the context and equal to the ids on the response (``target_prompts: none``,
    ``target_responses: all``). Every maximal run of supervised tokens (label != -100) becomes a
    response, and the unsupervised run before it its context (empty when the row starts
    supervised). Unsupervised tokens after the last response (the EOS a chat template appends
    after the conversation, say) carry no loss and predict nothing a loss sees: they are left out.
    """
    supervised = labels != IGNORE_INDEX
    where = np.flatnonzero(supervised)
    if len(where) == 0:
        return [], len(ids)
    end = int(where[-1]) + 1
    edges = np.flatnonzero(np.diff(supervised[:end].astype(np.int8))) + 1  # run boundaries
    bounds = [0, *edges.tolist(), end]
    turns = []
    start = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if supervised[a]:
            turns.append((ids[start:a], ids[a:b]))
            start = b
    return turns, len(ids) - end


def encode_turns(turns: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The ``json`` column, byte for byte what ``json.dumps`` gives for the list of turn dicts."""
    parts = []
    for context, response in turns:
        parts.append('{"input_ids": [' + ", ".join(map(str, context.tolist())) + '], "labels": ['
                     + ", ".join(map(str, response.tolist())) + "]}")
    return ("[" + ", ".join(parts) + "]").encode()


class MDSWriter:
    """Writes one split as MDS shards of at most ``shard_size`` bytes (streaming's ``size_limit``)."""

    format = "mds"

    def __init__(self, root: Path, *, split: str, sft: bool, shard_size: int = 1 << 26):
        if not 0 < shard_size <= SIZE_LIMIT_MAX:
            raise ValueError(f"an MDS shard holds at most {SIZE_LIMIT_MAX} bytes (uint32 offsets)")
        self.root = root
        self.split = split
        self.folder = root / "mds" / split
        self.folder.mkdir(parents=True)
        self.sft = sft
        self.columns = {"turns": "json"} if sft else {"tokens": "ndarray:int32"}
        self.size_limit = shard_size
        self.config = {"version": 2, "format": "mds", "compression": None, "hashes": [],
                       "size_limit": shard_size, "column_names": list(self.columns),
                       "column_encodings": list(self.columns.values()), "column_sizes": [None]}
        self._config_bytes = json.dumps(self.config, sort_keys=True).encode()
        self._samples: list[bytes] = []
        self._shard_bytes = 0
        self.shards: list[dict] = []
        self.entries: list[FileEntry] = []
        self.rows = 0
        self.stats = {"rows_without_supervised_tokens": 0, "unsupervised_tail_tokens": 0} if sft else {}

    def write(self, batch: pa.RecordBatch) -> None:
        ids, lengths = flat_lists(batch.column("input_ids"))
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        if self.sft:
            labels, _ = flat_lists(batch.column("labels"), lengths)
        for i in range(len(lengths)):
            row = ids[starts[i]:starts[i + 1]]
            if not self.sft:
                self._add(encode_tokens(row))
                continue
            turns, tail = sft_turns(row, labels[starts[i]:starts[i + 1]])
            if not turns:
                self.stats["rows_without_supervised_tokens"] += 1
                continue
            self.stats["unsupervised_tail_tokens"] += tail
            self._add(encode_turns(turns))

    def _add(self, column: bytes) -> None:
        sample = np.array([len(column)], np.uint32).tobytes() + column  # one variable-size column
        size = len(sample) + 4  # + its offset
        if self._samples and self._header_bytes() + self._shard_bytes + size > self.size_limit:
            self._flush()
        self._samples.append(sample)
        self._shard_bytes += size
        self.rows += 1

    def _header_bytes(self) -> int:
        return 4 + 4 + len(self._config_bytes)  # sample count, first offset, config

    def _flush(self) -> None:
        n = len(self._samples)
        sizes = np.fromiter((len(s) for s in self._samples), np.int64, count=n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        offsets += 4 + 4 * (n + 1) + len(self._config_bytes)
        basename = f"shard.{len(self.shards):05d}.mds"
        path = self.folder / basename
        with open(path, "wb") as f:
            f.write(np.uint32(n).tobytes())
            f.write(offsets.astype(np.uint32).tobytes())
            f.write(self._config_bytes)
            f.writelines(self._samples)
        self.shards.append({"samples": n, "raw_data": {"basename": basename, "bytes": path.stat().st_size,
                                                       "hashes": {}}, "zip_data": None, **self.config})
        self.entries.append(file_entry(path, root=self.root, format=self.format, split=self.split, rows=n))
        self._samples, self._shard_bytes = [], 0

    def close(self) -> list[FileEntry]:
        if self._samples:
            self._flush()
        index = self.folder / "index.json"
        index.write_text(json.dumps({"version": 2, "shards": self.shards}, sort_keys=True))
        return self.entries + [file_entry(index, root=self.root, format=self.format, split=self.split, rows=None)]
