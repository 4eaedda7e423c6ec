"""``tokenize`` for pretraining: documents -> token ids, for ``pack`` (instruction rows: tokenize_sft.py)."""
from __future__ import annotations

import pyarrow as pa

from ..recipe import TokenizeOptions
from ..tokenization import Tokenizer
from ..columns import list_array, provenance
from .base import BaseStep


class TokenizeText(BaseStep):
    """``text`` -> ``input_ids``; special tokens follow the tokenizer unless ``add_special_tokens`` is set."""

    stateless = True
    releases_gil = True  # the tokenizer encodes in Rust or C++

    def __init__(self, options: TokenizeOptions, *, tokenizer: Tokenizer):
        super().__init__()
        self.options = options
        self.tokenizer = tokenizer

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        texts = batch.column("text").to_pylist()
        # a document's special-token strings are text unless parse_special_tokens (markup.py)
        enc = self.tokenizer.encode(texts, add_special_tokens=self.options.add_special_tokens,
                                    parse_special=self.options.parse_special_tokens)
        self.stats.add("tokens_read", len(enc.ids))
        ids = list_array(enc.ids, enc.lengths, pa.int32())
        return [pa.RecordBatch.from_pydict({"input_ids": ids, **provenance(batch)})]
