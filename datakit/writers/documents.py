"""The document stream of a pretraining build, for writers that want documents, not blocks (megatron).

``pack`` cuts the token stream into blocks before the spill, so the documents are kept on the way
in: ``DocumentTap`` sits just before ``pack`` and copies every batch it passes on (each row one
tokenized document, with its provenance) into a spill of their own. The documents are then mixed
and split like rows (``plan.plan_splits``: the same seed, weights, repeats and copy groups) and
handed to the writers one split at a time (``stages.write``).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..plan import plan_splits
from ..recipe import Recipe
from ..columns import flat_lists, model_batch, provenance, with_columns
from ..transforms.base import BaseStep, Step
from ..transforms.pack import Pack
from .spill import SpillWriter


class DocumentTap(BaseStep):
    """Passes every batch on unchanged and keeps its documents in ``spill``."""

    def __init__(self, spill: SpillWriter):
        super().__init__()
        self.spill = spill

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if batch.num_rows:
            ids, lengths = flat_lists(batch.column("input_ids"))
            self.spill.write(with_columns(model_batch(ids, lengths), provenance(batch)))
        return [batch]


def tap_documents(steps: list[Step], spill: SpillWriter) -> list[Step]:
    """``steps`` with a ``DocumentTap`` into ``spill`` just before ``pack``."""
    at = next(i for i, step in enumerate(steps) if isinstance(step, Pack))
    return [*steps[:at], DocumentTap(spill), *steps[at:]]


def write_documents(recipe: Recipe, documents: SpillWriter, folder: Path, *, writers: list) -> dict[str, dict]:
    """Split the documents as the rows are split and write each split into ``writers``; returns
    documents and tokens (before EOD) per split."""
    from ..stages import write

    # the rows' provenance is the build's; the documents' would only repeat it, piece by piece
    written = write(plan_splits(recipe, documents), documents, folder, writers=writers, provenance=False)
    return {name: {"documents": entry["rows"], "tokens": entry["tokens"]} for name, entry in written.items()}
