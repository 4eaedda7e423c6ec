"""The counts a build records (``manifest["counts"]``): every name defined once, here.

Steps count through ``Counts.add`` (safe from several threads: a stateless step may run on two
batches at once); the engine adds what no step owns: the rows read from the inputs and the rows
and tokens handed to the split. A count with a reason is stored as ``name.reason`` and nested in
the manifest (``{"rows_dropped": {"overlong": 3}}``).
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Mapping

COUNTS = {
    "rows_read": "records read from the inputs: documents for pretraining, rows for instruction data",
    "tokens_read": "tokens the tokenizer made of them (a row longer than cutoff_len counts cutoff_len)",
    "rows_written": "rows the steps handed to the split, before mixing repeats or subsamples them",
    "tokens_written": "tokens in those rows, padding not counted",
    "eos_added": "EOS tokens appended to documents, rows or blocks",
    "padding_tokens": "padding tokens in the written rows (attention_mask 0, label -100)",
    "supervised_tokens": "tokens with a label (trained)",
    "prompt_tokens": "tokens without a label that are not padding",
    "rows_truncated": "rows cut to cutoff_len",
    "first_labels_masked": "labels set to -100 on the first token of a document packed behind another",
    "rows_inference_mismatch": "conversations whose ids before the last assistant turn differ from the inference prompt's",
}
BY_REASON = {
    "rows_dropped": "rows a step did not pass on, by reason",
    "tokens_dropped": "tokens a step did not pass on, by reason",
    "rows_grouped": "rows passed on in the split group of an earlier copy (dedup `action: group`), by reason",
    "inference_mismatch": "the first rows counted in rows_inference_mismatch, by file:line (1 each)",
}


def key(name: str, reason: str | None = None) -> str:
    """The stored name of a count; raises KeyError for a name not defined above."""
    if reason is None and name in COUNTS:
        return name
    if reason is not None and name in BY_REASON:
        return f"{name}.{reason}"
    raise KeyError(f"{name!r}{' with a reason' if reason is not None else ''} is not a datakit count "
                   f"(see datakit/counts.py)")


class Counts(Counter):
    """Counts under the names above; ``add`` and ``merge`` may be called from several threads."""

    def __init__(self, counts: Mapping[str, int] | None = None):
        super().__init__()
        self._lock = threading.Lock()
        if counts:
            self.merge(counts)

    def add(self, name: str, n: int = 1, *, reason: str | None = None) -> None:
        k = key(name, reason)
        with self._lock:
            self[k] += int(n)

    def merge(self, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (stored names, ``name.reason`` included) to these."""
        for k in counts:
            name, _, reason = k.partition(".")
            key(name, reason or None)
        with self._lock:
            self.update(counts)
