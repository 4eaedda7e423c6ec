"""``pack``: a token stream -> fixed-length blocks.

- ``eos: per_document``: EOS after every document (unless it already ends in EOS), then the
  stream is cut into ``block_size`` pieces: the run_clm ``group_texts`` layout with document
  boundaries marked.
- ``eos: per_block``: the stream is cut into pieces of ``block_size - 1`` tokens and each piece
  gets EOS appended: the classic block splitter.
``remainder`` decides the short last block: ``drop`` (its tokens are counted in
``tokens_dropped.remainder``), ``pad`` (pad id, attention 0, label -100) or ``keep``.
The remainder is carried across batches, so batch boundaries never change the blocks.

``isolate_documents: true`` also writes ``position_ids`` (restarting at 0 at every document
inside a block, and at the block's start) and ``seq_lens`` (the lengths of the document pieces in
the block), and sets the label of each piece's first token to -100, so that a trainer can keep
attention inside documents and each piece trains as it would alone (see pack_rows.py for the
column layout, shared with packed instruction rows). Without it the output does not change.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..recipe import PackOptions
from ..columns import IGNORE_INDEX, flat_lists, model_batch, numeric_array, with_columns
from .base import BaseStep, missing_eos
from .pack_rows import packed_batch


class Pack(BaseStep):
    scope = "source"  # a source's documents are one stream, cut into blocks in order

    def __init__(self, options: PackOptions, *, eos_id: int, pad_id: int | None = None):
        super().__init__()
        self.block_size = options.block_size
        self.eos_mode = options.eos
        self.remainder = options.remainder
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.isolate = options.isolate_documents
        self.carry = np.zeros(0, dtype=np.int32)
        self.carry_starts = np.zeros(0, dtype=bool)  # with isolate: True where a document starts
        self.source = None
        self.docs = DocumentPieces()  # where each document in the carry came from, for provenance

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        # Blocks never mix sources, so that a source's weight or repeat applies to its own blocks:
        # a new source first flushes the previous one's remainder.
        out = []
        if "_source" in batch.schema.names and batch.num_rows:
            sources = batch.column("_source").to_numpy()
            cuts = np.flatnonzero(np.diff(sources)) + 1
            if len(cuts):
                pieces, start = [], 0
                for c in list(cuts) + [len(sources)]:
                    pieces.append(batch.slice(start, c - start))
                    start = c
                return [b for piece in pieces for b in self(piece)]
            if self.source is not None and sources[0] != self.source:
                out = self.flush()
            self.source = int(sources[0])
        return out + self._pack(batch)

    def _pack(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        ids, lengths = flat_lists(batch.column("input_ids"))
        ids = ids.astype(np.int32, copy=False)
        if self.eos_mode == "per_document":
            needs, where = missing_eos(ids, lengths, self.eos_id)
            ids = np.insert(ids, where, self.eos_id)
            lengths = lengths + needs
            self.stats.add("eos_added", int(needs.sum()))
        if "_where" in batch.schema.names:
            self.docs.extend(batch.column("_where").to_pylist(), lengths, at=len(self.carry))
        stream = np.concatenate([self.carry, ids]) if len(self.carry) else ids
        if self.isolate:
            starts = np.zeros(len(ids), dtype=bool)
            starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
            self.carry_starts = np.concatenate([self.carry_starts, starts])
        return self._emit(stream)

    def _emit(self, stream: np.ndarray) -> list[pa.RecordBatch]:
        piece = self.block_size - (1 if self.eos_mode == "per_block" else 0)
        n = len(stream) // piece
        self.carry = stream[n * piece:].copy()
        starts, self.carry_starts = self.carry_starts[:n * piece], self.carry_starts[n * piece:].copy()
        if n == 0:
            return []
        pieces = self.docs.cut(n, piece)
        blocks = stream[:n * piece].reshape(n, piece)
        if self.eos_mode == "per_block":
            blocks = np.hstack([blocks, np.full((n, 1), self.eos_id, dtype=np.int32)])
            if self.isolate:
                starts = np.hstack([starts.reshape(n, piece), np.zeros((n, 1), dtype=bool)]).reshape(-1)
            self.stats.add("eos_added", n)
        flat = np.ascontiguousarray(blocks, dtype=np.int32).reshape(-1)
        lengths = np.full(n, self.block_size, dtype=np.int64)
        if self.isolate:
            return [self._tag(self._isolated(flat, starts, lengths, pad=False), pieces)]
        return [self._tag(model_batch(flat, lengths), pieces)]

    def _isolated(self, ids: np.ndarray, starts: np.ndarray, block_lengths: np.ndarray, *,
                  pad: bool) -> pa.RecordBatch:
        """Blocks as packs of their document pieces: every block's first token starts a piece too."""
        starts = starts.copy()
        starts[np.cumsum(block_lengths) - block_lengths] = True
        at = np.flatnonzero(starts)
        pieces = np.diff(np.append(at, len(ids)))
        per_block = np.bincount(np.searchsorted(np.cumsum(block_lengths), at, side="right"),
                                minlength=len(block_lengths))
        batch, masked = packed_batch(model_batch(ids, pieces), per_block, block_size=self.block_size,
                                     pad_id=self.pad_id, pad_to_block_size=pad)
        self.stats.add("first_labels_masked", masked)
        return batch

    def _tag(self, batch: pa.RecordBatch, pieces: pa.Array | None) -> pa.RecordBatch:
        extra = {} if pieces is None else {"_pieces": pieces}
        if self.source is not None:
            n = batch.num_rows
            extra = {"_source": numeric_array(np.full(n, self.source, np.int32), pa.int32()),
                     "_group": numeric_array(np.full(n, -1, np.int64), pa.int64()), **extra}
        return with_columns(batch, extra) if extra else batch

    def flush(self) -> list[pa.RecordBatch]:
        tail, self.carry = self.carry, np.zeros(0, dtype=np.int32)
        starts, self.carry_starts = self.carry_starts, np.zeros(0, dtype=bool)
        pieces = self.docs.cut(1, len(tail)) if len(tail) else None
        self.docs = DocumentPieces()
        if len(tail) == 0:
            return []
        if self.remainder == "drop":
            self.stats.add("tokens_dropped", len(tail), reason="remainder")
            return []
        if self.eos_mode == "per_block":
            tail = np.append(tail, np.int32(self.eos_id))
            starts = np.append(starts, False) if self.isolate else starts
            self.stats.add("eos_added")
        n_pad = self.block_size - len(tail) if self.remainder == "pad" else 0
        if self.isolate:
            self.stats.add("padding_tokens", n_pad)
            return [self._tag(self._isolated(tail, starts, np.array([len(tail)]), pad=n_pad > 0), pieces)]
        ids = np.concatenate([tail, np.full(n_pad, self.pad_id, dtype=np.int32)])
        attention = np.concatenate([np.ones(len(tail), np.int8), np.zeros(n_pad, np.int8)])
        labels = np.concatenate([tail, np.full(n_pad, IGNORE_INDEX, dtype=np.int32)])
        self.stats.add("padding_tokens", n_pad)
        return [self._tag(model_batch(ids, np.array([len(ids)]), attention=attention, labels=labels), pieces)]


class DocumentPieces:
    """The documents in a packer's carry: where each came from (``_where``), where it starts in
    the carry, and at which of its own tokens (a document cut by the last block goes on from
    there). ``cut`` says which document pieces the next blocks hold: a block's ``_pieces``."""

    def __init__(self) -> None:
        self.at = np.zeros(0, np.int64)
        self.offset = np.zeros(0, np.int64)
        self.where: list[str] = []

    def extend(self, wheres: list[str], lengths: np.ndarray, *, at: int) -> None:
        keep = np.flatnonzero(lengths > 0)  # an empty document is in no block
        starts = at + np.cumsum(lengths) - lengths
        self.at = np.concatenate([self.at, starts[keep]])
        self.offset = np.concatenate([self.offset, np.zeros(len(keep), np.int64)])
        self.where += [wheres[k] for k in keep.tolist()]

    def cut(self, n: int, piece: int) -> pa.Array | None:
        """The pieces of ``n`` blocks of ``piece`` carry tokens each (a list per block), and the
        carry's documents moved past them; None when the rows had no ``_where``."""
        if not self.where:
            return None
        cut = n * piece
        points = np.union1d(self.at[self.at < cut], np.arange(n, dtype=np.int64) * piece)
        doc = np.searchsorted(self.at, points, side="right") - 1
        block = points // piece
        where = pa.array([self.where[d] for d in doc.tolist()], pa.string())
        values = pa.StructArray.from_arrays(
            [where, numeric_array((points - block * piece).astype(np.int32), pa.int32()),
             numeric_array(self.offset[doc] + points - self.at[doc], pa.int64())], names=["where", "start", "offset"])
        offsets = np.searchsorted(block, np.arange(n + 1)).astype(np.int32)
        ends = np.append(self.at[1:], np.iinfo(np.int64).max)
        keep = ends > cut  # documents that go on past the blocks (the last one always may)
        self.offset = self.offset[keep] + np.maximum(0, cut - self.at[keep])
        self.at = np.maximum(self.at[keep] - cut, 0)
        self.where = [w for w, k in zip(self.where, keep.tolist()) if k]
        return pa.ListArray.from_arrays(numeric_array(offsets, pa.int32()), values)
