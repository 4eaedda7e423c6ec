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
  See ``batch_turns`` for how datakit's rows become turns.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import IGNORE_INDEX, flat_lists, row_offsets
from .files import FileEntry, file_entry

SIZE_LIMIT_MAX = (1 << 32) - 1  # offsets are uint32
_SHAPE_DTYPES = ((1 << 8, np.uint8, 0), (1 << 16, np.uint16, 1), (1 << 32, np.uint32, 2))


def _shape_header(n: int) -> bytes:
    """``ndarray:int32`` with a dynamic shape starts ``[ndim << 2 | shape dtype code][shape]``."""
    for bound, dtype, code in _SHAPE_DTYPES:
        if n < bound:
            return bytes([(1 << 2) | code]) + np.array([n], dtype).tobytes()
    return bytes([(1 << 2) | 3]) + np.array([n], np.uint64).tobytes()


def encode_blocks(ids: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """Every row as an ``ndarray:int32`` column (rows of one length are encoded together: a
    pretraining batch is one 2-D gather)."""
    if (lengths == 0).any():
        raise ValueError("MDS cannot hold an empty token array (streaming's NDArray refuses size 0)")
    starts = row_offsets(lengths)[:-1]
    out: list[bytes] = [b""] * len(lengths)
    for n in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == n)
        values = ids[starts[rows, None] + np.arange(n)].astype(np.int32, copy=False)
        header = _shape_header(n)
        for row, block in zip(rows.tolist(), values):
            out[row] = header + block.tobytes()
    return out


@dataclass(frozen=True)
class Turns:
    """A batch's llm-foundry turns as flat positions: turn k belongs to row ``row[k]``, its context
    is ``[context[k], start[k])`` and its response ``[start[k], end[k])``."""

    row: np.ndarray
    context: np.ndarray
    start: np.ndarray
    end: np.ndarray


def batch_turns(labels: np.ndarray, lengths: np.ndarray) -> Turns:
    """The turns of every row of a batch (its flat ``labels`` and row ``lengths``).

    llm-foundry's collator rebuilds a row as ``context + response`` per turn, with labels -100 on
    the context and equal to the ids on the response (``target_prompts: none``,
    ``target_responses: all``). Every maximal run of supervised tokens (label != -100) becomes a
    response, and the unsupervised run before it its context (empty when the row starts
    supervised). Unsupervised tokens after the last response (the EOS a chat template appends
    after the conversation, say) carry no loss and predict nothing a loss sees: they are left out,
    and a row without a supervised token has no turn.
    """
    supervised = labels != IGNORE_INDEX
    starts = row_offsets(lengths)[:-1]
    change = np.ones(len(supervised), dtype=bool)
    change[1:] = supervised[1:] != supervised[:-1]
    change[starts[lengths > 0]] = True  # a run never crosses into the next row
    run_at = np.flatnonzero(change)
    run_end = np.append(run_at[1:], len(supervised))
    responses = supervised[run_at]
    start, end = run_at[responses], run_end[responses]
    row = np.searchsorted(starts, start, side="right") - 1
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    context = np.where(first, starts[row], np.roll(end, 1))
    return Turns(row=row, context=context, start=start, end=end)


def sft_turns(ids: np.ndarray, labels: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """One row as (context ids, response ids) turns, and the count of unsupervised tokens left
    out at its end (``batch_turns``)."""
    turns = batch_turns(labels, np.array([len(ids)]))
    pairs = [(ids[c:a], ids[a:b]) for c, a, b in zip(turns.context, turns.start, turns.end)]
    return pairs, len(ids) - (int(turns.end[-1]) if len(turns.end) else 0)


_POWERS = 10 ** np.arange(9, -1, -1, dtype=np.int64)  # int32 ids have at most 10 digits


class DecimalTable:
    """Every id below ``size`` in decimal followed by ``", "``, as rows of 12 bytes (right-aligned)
    and their widths; grown when a larger id comes. A lookup per token is ~10x faster than
    ``str`` of a list, which formats every int on its own."""

    def __init__(self) -> None:
        self.chars = np.zeros((0, 12), dtype=np.uint8)
        self.widths = np.zeros(0, dtype=np.int64)

    def _grow(self, size: int) -> None:
        values = np.arange(size, dtype=np.int64)
        self.widths = 3 + (values[:, None] >= _POWERS[:-1]).sum(axis=1)  # digits + ", "
        self.chars = np.empty((size, 12), dtype=np.uint8)
        self.chars[:, :10] = (values[:, None] // _POWERS) % 10 + ord("0")
        self.chars[:, 10:] = np.frombuffer(b", ", dtype=np.uint8)

    def text(self, ids: np.ndarray) -> tuple[bytes, np.ndarray]:
        """``b"1, 22, 333, "`` for non-negative ``ids``, and where each id starts in it (n + 1)."""
        if len(ids) and int(ids.max()) >= len(self.widths):
            self._grow(max(int(ids.max()) + 1, 2 * len(self.widths)))
        widths = self.widths[ids]
        keep = np.arange(12) >= (12 - widths)[:, None]
        return self.chars[ids][keep].tobytes(), row_offsets(widths)


def encode_turns(ids: np.ndarray, lengths: np.ndarray, turns: Turns, table: DecimalTable) -> list[bytes | None]:
    """Per row, its ``json`` column, byte for byte what ``json.dumps`` gives for its list of turn
    dicts (None for a row without turns). Each turn's ids are a slice of the batch's decimal text."""
    text, offsets = table.text(ids)
    c, a, b = (offsets[turns.context].tolist(), offsets[turns.start].tolist(), offsets[turns.end].tolist())
    pieces = [b'{"input_ids": [' + (text[x:y - 2] if y > x else b"") + b'], "labels": [' + text[y:z - 2] + b"]}"
              for x, y, z in zip(c, a, b)]
    out: list[bytes | None] = [None] * len(lengths)
    bounds = row_offsets(np.bincount(turns.row, minlength=len(lengths))).tolist()
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            out[i] = b"[" + b", ".join(pieces[lo:hi]) + b"]"
    return out


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
        self._decimal = DecimalTable()
        self._samples: list[bytes] = []
        self._shard_bytes = 0
        self.shards: list[dict] = []
        self.entries: list[FileEntry] = []
        self.rows = 0
        self.stats = {"rows_without_supervised_tokens": 0, "unsupervised_tail_tokens": 0} if sft else {}

    def write(self, batch: pa.RecordBatch) -> None:
        ids, lengths = flat_lists(batch.column("input_ids"))
        if not self.sft:
            for sample in encode_blocks(ids, lengths):
                self._add(sample)
            return
        labels, _ = flat_lists(batch.column("labels"), lengths)
        turns = batch_turns(labels, lengths)
        samples = encode_turns(ids, lengths, turns, self._decimal)
        last = np.flatnonzero(np.append(turns.row[1:] != turns.row[:-1], True)) if len(turns.row) else []
        self.stats["rows_without_supervised_tokens"] += samples.count(None)
        self.stats["unsupervised_tail_tokens"] += int((row_offsets(lengths)[turns.row[last] + 1]
                                                        - turns.end[last]).sum())
        for sample in samples:
            if sample is not None:
                self._add(sample)

    def _add(self, column: bytes) -> None:
        sample = struct.pack("<I", len(column)) + column  # one variable-size column: its size first
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
