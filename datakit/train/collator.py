"""Batches for the Trainer: padded rows, or packed rows whose attention stays inside each row.

Packed builds (``pack`` on SFT rows, or pretraining blocks with ``isolate_documents``) carry
``position_ids`` that restart at 0 for every row in a pack, and ``seq_lens``. Which attention
implementations of transformers 5 keep the rows of a pack apart, read from its source
(``masking_utils.py``, ``modeling_flash_attention_utils.py``):

- ``eager``, ``sdpa``, ``flex_attention``: ``create_causal_mask`` looks for restarts in
  ``position_ids`` (``find_packed_sequence_indices``) and builds a block-diagonal causal mask,
  but only when the batch has **no** ``attention_mask`` and the forward has **no** cache. So a
  packed batch carries no ``attention_mask``, and training runs with ``use_cache=False``.
  With an attention mask of ones, or a cache, the whole pack is one causal sequence: rows leak.
- ``flash_attention_2`` / ``_3``: the varlen kernel isolates rows when it is given
  ``cu_seq_lens_q/k`` and ``max_length_q/k``. It infers them from ``position_ids`` only for a
  batch of one; for larger batches it falls back to a plain causal kernel over each pack. So the
  collator passes the cumulative lengths of every row (and of each pack's padding) over the
  flattened batch.
- Anything else (paged or hub kernels) gets no packed mask: ``check_packed_attention`` refuses it.

Padding after the last row of a pack has ``position_ids`` 0, 1, ... of its own, so it is a
segment of its own that no real token attends to, and its labels are -100.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..columns import IGNORE_INDEX
from ..errors import TrainError

ISOLATING = ("eager", "sdpa", "flex_attention")
FLASH = ("flash_attention_2", "flash_attention_3")


def check_packed_attention(attn_implementation: str) -> None:
    """Refuse an attention implementation that would let packed rows attend to each other."""
    if attn_implementation not in ISOLATING + FLASH:
        raise TrainError(f"attention implementation '{attn_implementation}' does not keep packed rows apart "
                         f"(rows would attend to each other); use one of {', '.join(ISOLATING + FLASH)}")


def _pad_to(n: int, multiple: int | None) -> int:
    return (n + multiple - 1) // multiple * multiple if multiple else n


@dataclass
class Collator:
    """Pads a batch: input_ids with ``pad_id``, attention_mask with 0, labels with -100.

    Labels are padded with -100 rather than copied from input_ids, so padding never counts in the
    loss even when the pad id is the EOS id, and a real EOS keeps its label.
    """

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]):
        import torch

        longest = _pad_to(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_id] * pad)
            batch["attention_mask"].append(list(f.get("attention_mask") or [1] * n) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


@dataclass
class PackedCollator:
    """Batches packed rows so that attention never crosses a row boundary (see the module doc).

    ``flash``: also pass ``cu_seq_lens_q/k`` and ``max_length_q/k`` for the varlen kernel.
    """

    pad_id: int
    flash: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]):
        import torch

        longest = _pad_to(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        ids, labels, positions, lengths = [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            ids.append(list(f["input_ids"]) + [self.pad_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            positions.append(list(f["position_ids"]) + list(range(pad)))
            lengths.extend(_segments(f, n) + ([pad] if pad else []))
        batch = {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                 "position_ids": torch.tensor(positions, dtype=torch.long)}
        if self.flash:
            cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
            cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
            batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))
        return batch


def _segments(feature: dict, n: int) -> list[int]:
    """The lengths of the rows in one pack: ``seq_lens`` when the build wrote it, else the restarts
    of ``position_ids``; whatever ``seq_lens`` leaves of the pack is padding, a segment of its own."""
    seq_lens = feature.get("seq_lens")
    if seq_lens is None:
        pos = feature["position_ids"]
        starts = [i for i in range(n) if pos[i] == 0] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        return [b - a for a, b in zip(starts, starts[1:] + [n])]
    seq_lens = [int(s) for s in seq_lens if s]
    rest = n - sum(seq_lens)
    return seq_lens + ([rest] if rest > 0 else [])


def is_packed(column_names) -> bool:
    return "position_ids" in column_names
