"""``pack`` for instruction rows: whole rows into packs of at most ``block_size`` tokens, per split.

Packing runs after the split, over each split on its own, so a pack never mixes train and
validation rows. The plan needs only the row lengths (``plan_packs``); the rows are then gathered
pack by pack and laid out by ``packed_batch``:

- ``input_ids``, ``labels``, ``attention_mask``: the rows one after the other, then padding up to
  ``block_size`` (pad id, label -100, attention 0) unless ``pad_to_block_size`` is false;
- ``position_ids``: 0, 1, 2, ... restarting at every row, so that a trainer can keep attention
  inside rows (flash-attention varlen, or transformers' packed-sequence mask, which reads
  position_ids); padding runs 0, 1, ... as a run of its own, never joined to the last row;
- ``seq_lens``: the rows' lengths, in order (flash-attention's ``cu_seqlens`` is their cumsum);
  padding is not among them, so ``sum(seq_lens) + padding == block_size``;
- the label of every row's first token is -100: it would be predicted from the previous row's
  last token. Unpacked, that label is never used either (a causal LM predicts token t+1 from t),
  so the packed rows train exactly like the rows alone.

Rows longer than ``block_size`` never reach the packer: with a ``pack`` step, tokenize's cutoff is
``min(cutoff_len, block_size)``, and its ``overlong`` policy (truncate or drop) applies and counts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..recipe import PackOptions
from ..columns import IGNORE_INDEX, flat_lists, list_array, numeric_array, row_offsets, with_columns
from .base import BaseStep
from .binpack import best_fit_decreasing

PACKED_COLUMNS = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "labels": pa.int32(),
                  "position_ids": pa.int32(), "seq_lens": pa.int32()}


@dataclass(frozen=True)
class PackPlan:
    """Which rows go into which pack: ``order`` lists row indices pack by pack, ``rows_per_pack``
    cuts it into packs, and ``lengths`` are the rows' lengths in ``order``."""

    order: np.ndarray
    rows_per_pack: np.ndarray
    lengths: np.ndarray
    block_size: int
    pad_to_block_size: bool

    def stats(self, labels_masked: int = 0) -> dict:
        """The manifest's ``packing`` entry of a split: padding counts every empty slot of every
        pack, written or not, so ``efficiency == tokens / (packs * block_size)``."""
        tokens = int(self.lengths.sum())
        slots = len(self.rows_per_pack) * self.block_size
        return {"block_size": self.block_size, "rows_packed": int(len(self.order)),
                "packs": int(len(self.rows_per_pack)), "tokens": tokens, "padding_tokens": slots - tokens,
                "efficiency": round(tokens / slots, 6) if slots else 0.0,
                "rows_per_pack": round(len(self.order) / len(self.rows_per_pack), 3) if slots else 0.0,
                "first_labels_masked": int(labels_masked)}


def plan_packs(lengths: np.ndarray, options: PackOptions) -> PackPlan:
    """The packs of rows with ``lengths`` (each 1..block_size), by ``options.strategy``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if options.strategy != "bfd":
        raise ValueError(f"unknown packing strategy {options.strategy!r}")
    order, per_pack = best_fit_decreasing(lengths, options.block_size)
    return PackPlan(order, per_pack, lengths[order], options.block_size, options.pad_to_block_size)


def packed_batch(rows: pa.RecordBatch, rows_per_pack: np.ndarray, *, block_size: int, pad_id: int,
                 pad_to_block_size: bool = True) -> tuple[pa.RecordBatch, int]:
    """Lay ``rows`` (input_ids, attention_mask, labels; already in pack order) out as packs of
    ``rows_per_pack`` rows each. Returns the packed batch and how many row-first labels were
    supervised before they were set to -100."""
    ids, lengths = flat_lists(rows.column("input_ids"))
    labels, _ = flat_lists(rows.column("labels"), lengths)
    attention, _ = flat_lists(rows.column("attention_mask"), lengths)
    lengths = lengths.astype(np.int64)
    row_starts = row_offsets(lengths)[:-1]
    labels = np.array(labels, dtype=np.int32)  # a copy: the first labels change
    first = row_starts[lengths > 0]
    masked = int((labels[first] != IGNORE_INDEX).sum())
    labels[first] = IGNORE_INDEX
    positions = (np.arange(len(ids), dtype=np.int64) - np.repeat(row_starts, lengths)).astype(np.int32)
    pack_tokens = np.add.reduceat(lengths, row_offsets(rows_per_pack)[:-1]) if len(lengths) else lengths
    if np.any(pack_tokens > block_size):
        raise ValueError(f"a pack holds {int(pack_tokens.max())} tokens, more than block_size {block_size}")
    out_lengths = np.full(len(rows_per_pack), block_size, np.int64) if pad_to_block_size else pack_tokens
    columns = {"input_ids": np.asarray(ids, np.int32), "attention_mask": np.asarray(attention, np.int8),
               "labels": labels, "position_ids": positions}
    if pad_to_block_size:
        columns = _pad(columns, pack_tokens, block_size, pad_id)
    arrays = [list_array(columns[name], out_lengths, PACKED_COLUMNS[name]) for name in columns]
    offsets = row_offsets(rows_per_pack, np.int32)
    arrays.append(pa.ListArray.from_arrays(numeric_array(offsets, pa.int32()),
                                           numeric_array(lengths.astype(np.int32), pa.int32())))
    return pa.RecordBatch.from_arrays(arrays, names=list(PACKED_COLUMNS)), masked


def with_seq_lens(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its ``seq_lens`` column when it has ``position_ids`` but no seq_lens yet."""
    names = batch.schema.names
    if "position_ids" not in names or "seq_lens" in names:
        return batch
    lengths = np.diff(batch.column("input_ids").offsets.to_numpy())
    positions, _ = flat_lists(batch.column("position_ids"), lengths)
    attention, _ = flat_lists(batch.column("attention_mask"), lengths)
    return with_columns(batch, {"seq_lens": seq_lens_array(positions, attention, lengths)})


def seq_lens_array(position_ids: np.ndarray, attention: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """The ``seq_lens`` column of rows whose flat ``position_ids`` restart at 0 at every packed
    row or document: the runs of attended tokens that start at position 0 (padding, attention 0,
    is in none)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    attended = attention.astype(bool)
    starts = np.flatnonzero((position_ids == 0) & attended)
    row_of = np.searchsorted(np.cumsum(lengths), starts, side="right")
    # a run ends where the next one starts in the same row, else where the row's attended tokens end
    bounds = row_offsets(lengths)
    counted = row_offsets(attended)
    row_ends = bounds[:-1] + counted[bounds[1:]] - counted[bounds[:-1]]
    ends = np.append(starts[1:], 0)
    last = np.append(row_of[1:] != row_of[:-1], True)
    ends[last] = row_ends[row_of[last]]
    offsets = row_offsets(np.bincount(row_of, minlength=len(lengths)), np.int32)
    return pa.ListArray.from_arrays(numeric_array(offsets, pa.int32()),
                                    numeric_array((ends - starts).astype(np.int32), pa.int32()))


def _pad(columns: dict[str, np.ndarray], pack_tokens: np.ndarray, block_size: int, pad_id: int) -> dict:
    """Every pack's tokens, then padding up to block_size (its positions run 0, 1, ...)."""
    n = len(pack_tokens)
    slot = np.arange(n * block_size, dtype=np.int64) % block_size
    filled = slot < np.repeat(pack_tokens, block_size)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out = {}
    for name, values in columns.items():
        if name == "position_ids":
            col = (slot - np.repeat(pack_tokens, block_size)).astype(np.int32)
        else:
            col = np.full(n * block_size, fill[name], dtype=values.dtype)
        col[filled] = values
        out[name] = col
    return out


class PackRows(BaseStep):
    """The ``pack`` step of an instruction recipe: a post-split step.

    Before a split is written, ``begin_split`` plans its packs from the row lengths alone and
    returns the split's rows in pack order; the rows then arrive a chunk at a time, and every
    whole pack among them leaves as one packed row (a pack cut by a chunk waits for the next).
    ``end_split`` gives the split's packing figures for the manifest.
    """

    scope = "split"
    joins_rows = True  # an output row is made of several built rows: as many as its seq_lens lists

    def __init__(self, options: PackOptions, *, pad_id: int):
        super().__init__()
        self.options = options
        self.pad_id = pad_id
        self._stats: dict = {}
        self._packs = np.zeros(0, np.int64)  # rows per pack still to come, of the current split
        self._lengths = np.zeros(0, np.int64)  # the split's row lengths in pack order
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0
        self._split: str | None = None

    def begin_split(self, split):
        """``split`` has ``name``, ``indices`` and ``lengths``; returns it with the rows in pack order."""
        plan = plan_packs(split.lengths, self.options)
        self._split, self._packs, self._lengths = split.name, plan.rows_per_pack, plan.lengths
        self._held, self._held_rows = [], 0
        self._stats = plan.stats()
        return dataclasses.replace(split, indices=split.indices[plan.order])

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        self._held.append(batch)
        self._held_rows += batch.num_rows
        ends = np.cumsum(self._packs)
        whole = int(np.searchsorted(ends, self._held_rows, side="right"))
        if whole == 0:
            return []
        rows = pa.Table.from_batches(self._held).combine_chunks()
        used = int(ends[whole - 1])
        rest = rows.slice(used)
        self._held, self._held_rows = (rest.to_batches() if rest.num_rows else []), rest.num_rows
        out, masked = self.layout(rows.slice(0, used).to_batches()[0], self._packs[:whole])
        self._packs = self._packs[whole:]
        self._stats["first_labels_masked"] += masked
        return [out]

    def runs(self, tokens: int) -> list[tuple[int, int, np.ndarray]]:
        """After ``begin_split``: the split's packs cut into runs of about ``tokens`` tokens, as
        (first row, end row, rows per pack) in the pack-ordered split. Every pack is whole in one
        run, so each run can be packed on its own (``run``), by another process."""
        per_pack = self._packs
        if not len(per_pack):
            return [(0, 0, per_pack)]
        width = self.options.block_size if self.options.pad_to_block_size else None
        ends = np.cumsum(per_pack)
        pack_tokens = (np.full(len(per_pack), width, np.int64) if width else
                       np.add.reduceat(self._lengths, row_offsets(per_pack)[:-1]))
        cum = np.cumsum(pack_tokens)
        n = max(1, int(np.ceil(cum[-1] / tokens)))
        cuts = sorted({int(c) for c in np.searchsorted(cum, [cum[-1] * j / n for j in range(1, n)]) + 1
                       if 0 < c < len(per_pack)})
        bounds = [0, *cuts, len(per_pack)]
        rows = np.concatenate([[0], ends])
        return [(int(rows[a]), int(rows[b]), per_pack[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def run(self, rows_per_pack: np.ndarray) -> "PackRows":
        """A packer of one run of the current split's packs (see ``runs``): it takes that run's
        rows in order; its ``end_split()`` counts that run only (``add_run`` adds it up)."""
        part = PackRows(self.options, pad_id=self.pad_id)
        part._split, part._packs = self._split, np.asarray(rows_per_pack, np.int64)
        part._stats = {"first_labels_masked": 0}
        return part

    def add_run(self, packing: dict) -> None:
        """Count a run packed by ``run`` (its ``end_split()["packing"]``) into the split's figures."""
        self._stats["first_labels_masked"] += packing["first_labels_masked"]

    def flush(self) -> list[pa.RecordBatch]:
        if self._held_rows or len(self._packs):
            raise RuntimeError(f"split {self._split}: {self._held_rows} rows left over and {len(self._packs)} "
                               f"packs not filled (a datakit bug; please report it)")
        return []

    def end_split(self) -> dict:
        """The split's entry in the manifest: ``{"packing": {rows_packed, packs, padding_tokens, ...}}``."""
        return {"packing": self._stats}

    def layout(self, rows: pa.RecordBatch, rows_per_pack: np.ndarray) -> tuple[pa.RecordBatch, int]:
        return packed_batch(rows, rows_per_pack, block_size=self.options.block_size, pad_id=self.pad_id,
                            pad_to_block_size=self.options.pad_to_block_size)
