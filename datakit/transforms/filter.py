"""``filter``: drop rows by length and by a few quality heuristics, each drop counted by reason.

Checks (each off unless set, but ``drop_empty_response``):
- ``min_chars`` / ``max_chars`` and ``min_tokens`` / ``max_tokens`` on the row's text (the same
  fields ``dedup`` reads: text, instruction+input+output, prompt+completion, message contents);
- ``drop_empty_response``: an instruction row whose response (output, completion, last assistant
  turn) is empty or only white space;
- ``max_repeated_line_fraction``: the share of non-empty lines that repeat an earlier line;
- ``max_repeated_ngram_fraction``: the share of word 3-grams that repeat an earlier one;
- ``min_alpha_fraction``: the share of non-space characters that are letters (any script).
``rejects: FILE`` writes every dropped row with its reason as JSON lines; the file appears only
when the build succeeds, just before the build is moved into place (``writers.atomic.StagedFile``).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

from ..recipe import FilterOptions
from ..writers.atomic import StagedFile
from .base import BaseStep
from .dedup import row_texts


def repeated_line_fraction(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


_LETTER = re.compile(r"[^\W\d_]")  # a word character that is neither a digit nor "_": a letter of any script
_SPACE = re.compile(r"\s")


def alpha_fraction(text: str) -> float:
    visible = len(text) - len(_SPACE.findall(text))
    return len(_LETTER.findall(text)) / visible if visible else 0.0


def _responses(batch: pa.RecordBatch) -> list[str] | None:
    names = batch.schema.names
    if "output" in names:
        return batch.column("output").to_pylist()
    if "completion" in names:
        return batch.column("completion").to_pylist()
    if "messages" in names:
        return [next((m["content"] for m in reversed(conv) if m["role"] == "assistant"), "")
                for conv in batch.column("messages").to_pylist()]
    return None


class Filter(BaseStep):
    def __init__(self, options: FilterOptions, *, tokenizer):
        super().__init__()
        self.options = options
        self.tokenizer = tokenizer
        self.fields = None  # the row's whole text, whatever its format
        self.rejects = StagedFile(options.rejects) if options.rejects else None

    def _reasons(self, batch: pa.RecordBatch, texts: list[str]) -> list[str | None]:
        o = self.options
        reasons: list[str | None] = [None] * len(texts)

        def mark(flags, reason):
            for i, bad in enumerate(flags):
                if bad and reasons[i] is None:
                    reasons[i] = reason

        responses = _responses(batch)
        if o.drop_empty_response and responses is not None:
            mark([not (r or "").strip() for r in responses], "empty_response")
        lengths = np.array([len(t) for t in texts])
        if o.min_chars is not None:
            mark(lengths < o.min_chars, "too_few_chars")
        if o.max_chars is not None:
            mark(lengths > o.max_chars, "too_many_chars")
        if o.min_tokens is not None or o.max_tokens is not None:
            n_tokens = self.tokenizer.encode(texts, add_special_tokens=False).lengths
            if o.min_tokens is not None:
                mark(n_tokens < o.min_tokens, "too_few_tokens")
            if o.max_tokens is not None:
                mark(n_tokens > o.max_tokens, "too_many_tokens")
        if o.max_repeated_line_fraction is not None:
            mark([repeated_line_fraction(t) > o.max_repeated_line_fraction for t in texts], "repeated_lines")
        if o.max_repeated_ngram_fraction is not None:
            mark([repeated_ngram_fraction(t) > o.max_repeated_ngram_fraction for t in texts], "repeated_ngrams")
        if o.min_alpha_fraction is not None:
            mark([alpha_fraction(t) < o.min_alpha_fraction for t in texts], "low_alpha")
        return reasons

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        texts = row_texts(batch, self.fields)
        reasons = self._reasons(batch, texts)
        drop = np.array([r is not None for r in reasons])
        if not drop.any():
            return [batch]
        for r in reasons:
            if r is not None:
                self.stats.add("rows_dropped", reason=r)
        if self.rejects is not None:
            out = self.rejects.file or self.rejects.open()
            rows = batch.to_pylist()
            for row, reason in zip(rows, reasons):
                if reason is not None:
                    record = {k: v for k, v in row.items() if not k.startswith("_")}
                    out.write(json.dumps({"where": row["_where"], "reason": reason, "row": record},
                                                   ensure_ascii=False) + "\n")
        return [batch.filter(pa.array(~drop))]

    def close(self, *, ok: bool) -> None:
        """Move the rejects file into place (ok) or remove it; the build calls this before it
        moves its output into place, so a failure here leaves the earlier output untouched."""
        if self.rejects is None:
            return
        if ok:
            self.rejects.commit()
        else:
            self.rejects.discard()
