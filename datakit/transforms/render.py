"""What a template step hands to ``tokenize``: the rendered text and character ranges in it.

Columns (ranges are [start, end) in characters, one list per row):
- ``text``: the rendered row;
- ``span_starts``/``span_ends``: what is supervised (the responses, the assistant turns);
- ``data_starts``/``data_ends``: the text that came from the data (instructions, inputs, message
  contents); a special-token string there is encoded as text, never as a control token;
- ``prompt_ok``: the text before the last supervised span is what inference feeds the model
  (always true for alpaca templates; see chat.py);
- ``_where``, ``_source``, ``_group``: the row's provenance, passed along.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..errors import TemplateError
from ..columns import list_array
from .base import BaseStep

_RANGES = pa.list_(pa.int32())
OUTPUT_SCHEMA = pa.schema([("text", pa.string()), ("span_starts", _RANGES), ("span_ends", _RANGES),
                           ("data_starts", _RANGES), ("data_ends", _RANGES), ("prompt_ok", pa.bool_()),
                           ("_where", pa.string()), ("_source", pa.int32()), ("_group", pa.int64())])


class Rendered(NamedTuple):
    text: str
    spans: list[tuple[int, int]]
    data: list[tuple[int, int]]
    prompt_ok: bool = True


def _ranges(rows: list[list[tuple[int, int]]], source: pa.RecordBatch, what: str) -> tuple[pa.Array, pa.Array]:
    counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    total = int(counts.sum())
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(rows)), dtype=np.int64,
                       count=2 * total).reshape(-1, 2)
    if total and flat.max() >= 2**31:
        row = int(np.repeat(np.arange(len(rows)), counts)[int(np.argmax(flat.max(axis=1)))])
        raise TemplateError(f"{source.column('_where')[row]}: the rendered row has 2**31 characters or more ({what})")
    return (list_array(flat[:, 0].astype(np.int32), counts, pa.int32()),
            list_array(flat[:, 1].astype(np.int32), counts, pa.int32()))


def rendered_batch(rows: list[Rendered], source: pa.RecordBatch) -> pa.RecordBatch:
    span_starts, span_ends = _ranges([r.spans for r in rows], source, "supervised spans")
    data_starts, data_ends = _ranges([r.data for r in rows], source, "data ranges")
    return pa.RecordBatch.from_arrays([
        pa.array([r.text for r in rows], pa.string()), span_starts, span_ends, data_starts, data_ends,
        pa.array([r.prompt_ok for r in rows], pa.bool_()),
        source.column("_where"), source.column("_source"), source.column("_group"),
    ], schema=OUTPUT_SCHEMA)


class RenderStep(BaseStep):
    """A template step: ``render(row) -> Rendered`` for every row of a batch."""

    stateless = True

    def render(self, row: dict) -> Rendered:
        raise NotImplementedError

    def render_batch(self, batch: pa.RecordBatch) -> list[Rendered]:
        return [self.render(r) for r in batch.to_pylist()]

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        rows = self.render_batch(batch)
        return [rendered_batch(rows, batch)]
