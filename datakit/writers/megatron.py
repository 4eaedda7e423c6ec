"""``megatron``: the documents of a pretraining split as the ``.bin``/``.idx`` pair that
``megatron.core.datasets.indexed_dataset.IndexedDataset`` reads (Megatron-LM, NeMo, Megatron-Bridge).

Megatron samples its own sequences from documents, so it gets the document stream, not datakit's
blocks: every document's tokens followed by the end-of-document token (EOS), as
``tools/preprocess_data.py --append-eod`` writes them, one sequence per document. Empty documents
are skipped, as that script skips them.

The layout (``indexed_dataset._IndexWriter``, version 1):
``.bin``: the tokens of every document, back to back, in ``dtype``.
``.idx``: ``MMIDIDX\\x00\\x00``, version (<Q = 1), dtype code (<B), sequence count (<Q),
document count + 1 (<Q), sequence lengths (int32), sequence byte offsets (int64), document
indices (int64: 0, 1, ..., n, since every document is one sequence).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import flat_lists
from ..transforms.base import missing_eos
from .files import FileEntry, file_entry

INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}  # indexed_dataset.DType
UINT16_VOCAB = 65500  # DType.optimal_dtype: uint16 below 65,500 ids, int32 from there on


def token_dtype(vocab_size: int) -> np.dtype:
    """The dtype Megatron's preprocess_data.py picks for a vocabulary: uint16 for Llama 2's
    32,000 ids, int32 for Llama 3's 128,256."""
    return np.dtype(np.uint16 if vocab_size < UINT16_VOCAB else np.int32)


class MegatronWriter:
    """Writes one split's documents to ``megatron/{split}.bin`` and ``.idx``."""

    format = "megatron"

    def __init__(self, root: Path, *, split: str, vocab_size: int, eod_id: int):
        self.root = root
        self.split = split
        self.prefix = root / "megatron" / split
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.eod_id = eod_id
        self._bin = open(self.prefix.with_suffix(".bin"), "wb")
        self._lengths: list[np.ndarray] = []
        self.stats = {f"{split}_documents": 0, f"{split}_tokens": 0, "documents_empty": 0}

    def write(self, batch: pa.RecordBatch) -> None:
        """Append the documents of ``batch`` (its ``input_ids``, one document per row)."""
        ids, lengths = flat_lists(batch.column("input_ids"))
        nonempty = lengths > 0
        self.stats["documents_empty"] += int((~nonempty).sum())
        if not nonempty.any():
            return
        if not nonempty.all():
            keep = np.repeat(nonempty, lengths)
            ids, lengths = ids[keep], lengths[nonempty]
        needs, where = missing_eos(ids, lengths, self.eod_id)
        ids = np.insert(ids, where, self.eod_id)
        lengths = lengths + needs
        if self.dtype == np.uint16 and len(ids) and int(ids.max()) > 0xFFFF:
            raise ValueError(f"token id {int(ids.max())} does not fit the uint16 tokens of {self.prefix}.bin")
        ids.astype(self.dtype, copy=False).tofile(self._bin)
        self.stats[f"{self.split}_documents"] += len(lengths)
        self.stats[f"{self.split}_tokens"] += len(ids)
        self._lengths.append(lengths.astype(np.int32))

    def close(self) -> list[FileEntry]:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        n = len(lengths)
        pointers = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        with open(self.prefix.with_suffix(".idx"), "wb") as f:
            f.write(INDEX_HEADER)
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", n))
            f.write(struct.pack("<Q", n + 1))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(n + 1, dtype=np.int64).tobytes())
        return [file_entry(self.prefix.with_suffix(".bin"), root=self.root, format=self.format,
                           split=self.split, rows=n),
                file_entry(self.prefix.with_suffix(".idx"), root=self.root, format=self.format,
                           split=self.split, rows=None)]
