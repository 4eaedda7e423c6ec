"""``tokenize`` for instruction rows: ONE tokenization of the rendered text, labels from char spans.

Options (TokenizeOptions): ``train_on_inputs``, ``add_eos_token`` (the EOS is supervised when the
row ends with a supervised response), ``cutoff_len`` with ``overlong: truncate|drop`` (a
truncated row gets no EOS; the text past the cutoff is not tokenized when that is exact, see
tokenization/prefix.py), ``train_on: all_assistant|last_assistant``. Rows left with no
supervised token are dropped and counted. Every batch is checked before it leaves the step:
supervised tokens lie inside supervised spans, labels are -100 or their input id, and a row never
starts with two BOS tokens. A failed check is an error naming the row.

Chat rows: the template writes its own BOS and markup, so no special token is added unless
``add_special_tokens: true`` (transformers' ``apply_chat_template`` adds none either). The text
before the last assistant turn must be what inference feeds the model: the ids of
``messages[:last]`` rendered with the generation prompt (see chat.py). A row where they differ is
counted as ``rows_inference_mismatch`` (the first few named under ``inference_mismatch``), or is
an error with ``inference_mismatch: error``.
"""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from ..counts import Counts
from ..errors import TemplateError
from ..recipe import TokenizeOptions
from ..tokenization import Encoded, Tokenizer
from ..columns import IGNORE_INDEX, model_batch, provenance, row_offsets, with_columns
from .base import BaseStep, missing_eos


class _Wheres:
    """``file:line`` of each row, read from the Arrow column only when an error names one."""

    def __init__(self, column: pa.Array):
        self.column = column

    def __getitem__(self, i) -> str:
        return self.column[int(i)].as_py()


MISMATCH_EXAMPLES = 5  # rows the manifest names per build when the inference prompt differs


class TokenizeSFT(BaseStep):
    stateless = True
    releases_gil = True  # the tokenizer encodes in Rust or C++

    def __init__(self, options: TokenizeOptions, *, tokenizer: Tokenizer, chat: bool = False):
        super().__init__()
        self.options = options
        self.tokenizer = tokenizer
        # A chat template ends every turn with its own marker (<|im_end|>, </s>, <|eot_id|>...),
        # which is supervised with the turn; appending EOS after the template's text would train
        # a token the model never sees at inference. So add_eos_token applies to alpaca templates.
        self.add_eos = options.add_eos_token and not chat
        self.eos_id = tokenizer.require_eos("`add_eos_token`") if self.add_eos else tokenizer.eos_id
        self.chat = chat
        self.special = options.add_special_tokens if options.add_special_tokens is not None or not chat else False
        self._lock = threading.Lock()

    def _encode_part(self, texts, spans, data, special):
        """The template's markup becomes control tokens; special-token strings in the ``data``
        ranges (message contents, alpaca fields) are text unless ``parse_special_tokens``."""
        return self.tokenizer.encode_with_spans(texts, spans, add_special_tokens=special, parse_special=True,
                                                data=None if self.options.parse_special_tokens else data,
                                                max_tokens=self.options.cutoff_len)

    def _encode(self, texts: list[str], spans: list[list[tuple[int, int]]], data=None):
        """Encode with span marks; a text that already starts with the BOS string gets no second BOS.
        Rows longer than cutoff_len may be tokenized only as far as the cutoff (Encoded.cut)."""
        tok, opt = self.tokenizer, self.special
        bos = tok.bos_token
        flags = [opt is None and bool(bos) and t.startswith(bos) for t in texts]
        if not any(flags) or all(flags):
            special = False if all(flags) and texts else opt
            return self._encode_part(texts, spans, data, special)
        order = [i for i, f in enumerate(flags) if f] + [i for i, f in enumerate(flags) if not f]
        k = sum(flags)
        pick = (lambda rows, sel: None if rows is None else [rows[i] for i in sel])  # noqa: E731
        parts = [self._encode_part([texts[i] for i in order[:k]], [spans[i] for i in order[:k]],
                                   pick(data, order[:k]), False),
                 self._encode_part([texts[i] for i in order[k:]], [spans[i] for i in order[k:]],
                                   pick(data, order[k:]), opt)]
        rows = {}
        bad = []
        cut = np.zeros(len(texts), dtype=bool)
        for base, (enc, sup, part_bad) in zip((0, k), parts):
            starts = enc.starts
            bad += [order[base + r] for r in part_bad]
            for j in range(len(enc.lengths)):
                rows[order[base + j]] = (enc.ids[starts[j]:starts[j + 1]], sup[starts[j]:starts[j + 1]])
                if enc.cut is not None:
                    cut[order[base + j]] = enc.cut[j]
        ids = np.concatenate([rows[i][0] for i in range(len(texts))])
        sup = np.concatenate([rows[i][1] for i in range(len(texts))])
        lengths = np.array([len(rows[i][0]) for i in range(len(texts))], dtype=np.int64)
        return Encoded(ids, lengths, cut=cut if cut.any() else None), sup, sorted(bad)

    def _spans(self, batch: pa.RecordBatch) -> list[list[tuple[int, int]]]:
        starts = batch.column("span_starts").to_pylist()
        ends = batch.column("span_ends").to_pylist()
        spans = [list(zip(a, b)) for a, b in zip(starts, ends)]
        if self.options.train_on == "last_assistant":
            spans = [row[-1:] for row in spans]
        return spans

    @staticmethod
    def _last_starts(batch: pa.RecordBatch) -> list[int | None]:
        """Where each row's last supervised span starts (None: the row has none), from the Arrow offsets."""
        col = batch.column("span_starts")
        offsets = col.offsets.to_numpy()
        values = col.values.to_numpy(zero_copy_only=False)
        counts = np.diff(offsets)
        last = values[np.maximum(offsets[1:] - 1, 0)] if len(values) else np.zeros(len(counts), int)
        return [int(v) if c else None for v, c in zip(last.tolist(), counts.tolist())]

    def _count_mismatch(self, wrong: list[int], wheres, stats: Counts) -> None:
        """Rows whose text before the last turn is not the inference prompt: counted, the first
        few named in the manifest, or an error with ``inference_mismatch: error``."""
        if not wrong:
            return
        if self.options.inference_mismatch == "error":
            raise TemplateError(f"{wheres[wrong[0]]}: the ids before the last assistant turn differ from the "
                                f"ids of the conversation up to it rendered with the generation prompt (what "
                                f"inference feeds the model); see `inference_mismatch` in the README")
        stats.add("rows_inference_mismatch", len(wrong))
        with self._lock:
            named = sum(1 for k in self.stats if k.startswith("inference_mismatch."))
            for r in wrong[:max(0, MISMATCH_EXAMPLES - named)]:
                stats.add("inference_mismatch", reason=wheres[r])

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        opt = self.options
        texts = batch.column("text").to_pylist()
        wheres = _Wheres(batch.column("_where"))
        spans = self._spans(batch)
        stats = Counts()
        data = None
        if "data_starts" in batch.schema.names:
            data = [list(zip(a, b)) for a, b in zip(batch.column("data_starts").to_pylist(),
                                                    batch.column("data_ends").to_pylist())]
        enc, sup, bad = self._encode(texts, spans, data)
        if bad:
            raise TemplateError(f"{wheres[bad[0]]}: mask check failed: the supervised tokens do not match "
                                f"the response's characters (a token straddles or escapes the span)")
        if self.chat and "prompt_ok" in batch.schema.names:
            from .prompt_check import inference_mismatch

            starts = [row[-1][0] if row else None for row in spans] if opt.train_on == "last_assistant" else \
                self._last_starts(batch)
            wrong = inference_mismatch(self.tokenizer, texts, starts, batch.column("prompt_ok").to_pylist(), enc, sup,
                                       special=self.special)
            self._count_mismatch(wrong, wheres, stats)
        if opt.train_on_inputs:
            sup[:] = True
        last_row = np.array([i for i, row in enumerate(spans) if row], dtype=np.int64)
        last_end = np.array([row[-1][1] for row in spans if row], dtype=np.int64)
        ids, lengths, sup, eos = self._append_eos(enc, sup, texts, last_row, last_end)
        out = self._finish(ids, lengths, sup, eos, enc.cut, wheres, stats)
        self.stats.merge(stats)
        if out is None:
            return []
        result, kept = out
        return [with_columns(result, provenance(batch, kept))]

    def _append_eos(self, enc: Encoded, sup, texts, last_row, last_end):
        """Append EOS where the row does not end with it; returns ids, lengths, marks and a bool per
        row (EOS appended)."""
        lengths = enc.lengths
        if not self.add_eos:
            return enc.ids, lengths, sup, np.zeros(len(lengths), dtype=bool)
        needs, where = missing_eos(enc.ids, lengths, self.eos_id)
        # The EOS is trained when the row ends with a supervised response (nothing but white
        # space after the last span), or with train_on_inputs.
        tail = np.zeros(len(lengths), dtype=bool)
        tail[last_row] = last_end >= np.array([len(t.rstrip()) for t in texts], dtype=np.int64)[last_row]
        eos_sup = tail | self.options.train_on_inputs
        ids = np.insert(enc.ids, where, self.eos_id)
        sup = np.insert(sup, where, eos_sup[needs])
        return ids, lengths + needs, sup, needs

    def _finish(self, ids, lengths, sup, eos, cut, wheres, stats: Counts):
        """Cut to cutoff_len, drop rows with nothing to train, check BOS, count.

        A row longer than cutoff_len counts as cutoff_len tokens read: the text past the cutoff
        may not have been tokenized at all (``Encoded.cut``), so only that much is known of it.
        """
        opt = self.options
        n = len(lengths)
        starts = row_offsets(lengths)
        row = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(ids)) - starts[row]
        keep_row = np.ones(n, dtype=bool)
        over = np.zeros(n, dtype=bool)
        if opt.cutoff_len is not None:
            over = lengths > opt.cutoff_len
            if cut is not None and not over[cut].all():
                raise RuntimeError(f"{wheres[int(np.flatnonzero(cut & ~over)[0])]}: a row tokenized only in "
                                   f"part holds no more than cutoff_len tokens (a datakit bug; please report it)")
            if opt.overlong == "drop":
                keep_row &= ~over
                stats.add("rows_dropped", int(over.sum()), reason="overlong")
                stats.add("tokens_dropped", int(over.sum()) * opt.cutoff_len, reason="overlong")
            else:
                stats.add("rows_truncated", int(over.sum()))
        stats.add("tokens_read", int((lengths - eos)[~over].sum()) + int(over.sum()) * (opt.cutoff_len or 0))
        stats.add("eos_added", int(eos[~over].sum()))
        keep = keep_row[row] & (pos < (opt.cutoff_len or np.iinfo(np.int64).max))
        sup_per_row = np.bincount(row[keep & sup], minlength=n)
        empty = keep_row & (sup_per_row == 0)
        if empty.any():
            stats.add("rows_dropped", int(empty.sum()), reason="no_supervised_tokens")
            dropped = int(np.bincount(row[keep], minlength=n)[empty].sum())
            stats.add("tokens_dropped", dropped, reason="no_supervised_tokens")
            keep &= ~empty[row]
        ids, sup, row = ids[keep], sup[keep], row[keep]
        out_lengths = np.bincount(row, minlength=n)
        out_lengths = out_lengths[out_lengths > 0]
        self._check_bos(ids, out_lengths, row, wheres)
        labels = np.where(sup, ids, IGNORE_INDEX).astype(np.int32)
        stats.add("supervised_tokens", int(sup.sum()))
        stats.add("prompt_tokens", int((~sup).sum()))
        if len(out_lengths) == 0:
            return None
        kept = np.flatnonzero(np.bincount(row, minlength=n) > 0)
        return model_batch(ids.astype(np.int32), out_lengths, labels=labels), kept

    def _check_bos(self, ids, lengths, row, wheres) -> None:
        bos = self.tokenizer.bos_id
        if bos is None or len(ids) == 0:
            return
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        two = starts[(lengths >= 2)]
        double = two[(ids[two] == bos) & (ids[two + 1] == bos)]
        if len(double):
            raise TemplateError(f"{wheres[row[double[0]]]}: mask check failed: the row starts with two BOS "
                                f"tokens (the template writes BOS and the tokenizer adds one); set "
                                f"`tokenize: {{add_special_tokens: false}}`")
