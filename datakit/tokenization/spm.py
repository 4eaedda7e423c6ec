"""SentencePiece ``.model`` files, encoded by SentencePiece itself (no transformers conversion)."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from ..errors import TokenizerError
from .base import THREADS, Encoded, Tokenizer, _fingerprint, _flatten
from .files import SUPPORTED
from .long import LONG
from .markup import markup_matches, special_pattern


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model``; the ids are SentencePiece's own (no transformers conversion).

    BOS is added by default when the model defines one, as Llama's tokenizer does; EOS is not.
    """

    kind = "sentencepiece"

    def __init__(self, path: Path):
        import sentencepiece as spm

        self.source = str(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # sentencepiece raises OSError/RuntimeError with C++ text
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TokenizerError(f"{path}: not a SentencePiece model ({first}); datakit reads {SUPPORTED}") from None
        sp = self.sp
        self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
        self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else None
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else None
        self.bos_token = sp.id_to_piece(self.bos_id) if self.bos_id is not None else None
        self.eos_token = sp.id_to_piece(self.eos_id) if self.eos_id is not None else None
        self.files = [str(path)]
        self.fingerprint = _fingerprint([path])
        self._control = {i: sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)}
        self._special_re = special_pattern(self._control.values())
        self._special_by_piece = {p: i for i, p in self._control.items()}

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def special_ids(self) -> set[int]:
        return set(self._control)

    def _bos(self, add_special_tokens: bool | None) -> bool:
        return self.bos_id is not None and add_special_tokens is not False

    def encode(self, texts, *, add_special_tokens=None, parse_special=False) -> Encoded:
        """``sp.encode`` reads control-token strings as text; ``parse_special`` makes them control tokens."""
        texts = list(texts)
        if parse_special and not self.spells(texts, parse_special=True):
            enc = self.encode_with_offsets(texts, add_special_tokens=add_special_tokens, parse_special=True)
            return Encoded(enc.ids, enc.lengths)
        add_bos = self._bos(add_special_tokens)
        cuts = {}
        if any(len(t) > LONG for t in texts) and (long := self._long_encoder()) is not None:
            cuts = {i: c for i, t in enumerate(texts) if len(t) > LONG and (c := long.cuts(t))}
        if not cuts:
            return Encoded(*_flatten(self.sp.encode(texts, add_bos=add_bos, num_threads=THREADS)))
        # a long text in pieces whose ids are those of the whole (long.py): memory stays flat
        short = [i for i in range(len(texts)) if i not in cuts]
        rows: list = [None] * len(texts)
        for i, r in zip(short, self.sp.encode([texts[i] for i in short], add_bos=add_bos, num_threads=THREADS)):
            rows[i] = np.asarray(r, dtype=np.int32)
        for i, c in cuts.items():
            rows[i] = long.encode(self.sp, texts[i], c, add_bos=add_bos, threads=THREADS)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return Encoded(np.concatenate(rows) if rows else np.zeros(0, np.int32), lengths)

    def _long_encoder(self):
        if "_long" not in self.__dict__:
            from .long import SentencePieceLong

            self._long = SentencePieceLong.for_model(self.source)
        return self._long

    def spells(self, texts, *, parse_special):
        """``sp.encode`` reads control-token strings as text: a text holding one, when they are to
        be parsed, needs the per-row protos of ``encode_with_offsets``."""
        return not (parse_special and self._special_re is not None and any(map(self._special_re.search, texts)))

    def added_around(self, special):
        return int(self._bos(special)), 0

    def _build_surfaces(self):
        from .surface import Surfaces

        return Surfaces.for_sentencepiece(self.sp)

    def encode_with_offsets(self, texts, *, add_special_tokens=None, parse_special=False, data=None) -> Encoded:
        rows, offs = [], []
        add_bos = self._bos(add_special_tokens)
        for r, text in enumerate(texts):
            ids, off = self._encode_one(text, parse_special, data[r] if data is not None else None)
            if add_bos:
                ids.insert(0, self.bos_id)
                off.insert(0, (0, 0))
            rows.append(ids)
            offs.append(off)
        ids, lengths = _flatten(rows)
        offsets = np.array(list(itertools.chain.from_iterable(offs)), dtype=np.int64).reshape(-1, 2)
        return Encoded(ids, lengths, offsets)

    def _encode_one(self, text: str, parse_special: bool, data):
        """A text split at its control-token strings (those outside ``data``), each part encoded alone."""
        parts = [(0, text)]
        specials = []
        if parse_special and self._special_re is not None:
            parts, pos = [], 0
            for m in markup_matches(text, self._special_re, data):
                parts.append((pos, text[pos:m.start()]))
                specials.append((m.start(), m.end(), self._special_by_piece[m.group()]))
                pos = m.end()
            parts.append((pos, text[pos:]))
        ids, off = [], []
        for k, (base, part) in enumerate(parts):
            if part:
                self._encode_part(part, base, ids, off)
            if k < len(specials):
                s, e, i = specials[k]
                ids.append(i)
                off.append((s, e))
        return ids, off

    def _encode_part(self, text: str, base: int, ids: list, off: list) -> None:
        proto = self.sp.encode(text, return_type="proto")
        raw = text.encode("utf-8")
        # SentencePiece offsets are byte offsets; map them to characters. A byte-fallback
        # character (an emoji as 4 <0x..> pieces) gives its first pieces an empty span; they
        # take the span of the character they belong to, so masks never split a character.
        starts = (np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80  # first byte of each character
        char_at = np.append(np.cumsum(starts) - 1, len(text))
        pending = []
        for p in proto.pieces:
            s, e = int(char_at[p.begin]), int(char_at[p.end])
            ids.append(p.id)
            if p.begin == p.end and p.piece.startswith("<0x"):
                pending.append(len(off))
                off.append((s, e))
                continue
            for j in pending:
                off[j] = (base + s, base + e)
            pending = []
            off.append((base + s, base + e))

    def id_to_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id))

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])


