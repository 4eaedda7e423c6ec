"""Long documents tokenized in pieces whose ids are exactly those of the whole text.

Tokenizing one 10 MB string costs ~70 bytes of tokenizer state per character (a 9.7 MB document
peaked at 1.46 GB) and runs on one core. A text longer than ``LONG`` characters is cut into pieces
of about ``PIECE`` characters, only where a cut cannot change an id, and the pieces are tokenized
in batches of ``GROUP`` on every core; only their ids are kept.

Where a cut is exact:
- BPE of the SentencePiece kind (Metaspace pieces, or Llama's ``▁`` normalizer): at a barrier of
  prefix.py, two neighbouring characters that no token of the vocabulary holds side by side. The
  pieces after the first are tokenized with nothing put before them (prefix.py's continuation).
- Byte-level BPE whose pre-tokenizer is GPT-2's regex (``ByteLevel(use_regex=true)``) or the
  Llama 3 / Qwen2 split pattern: before a space that follows a letter and precedes a letter. No
  alternative of those patterns matches a letter followed by a space, none looks behind, and the
  one lookahead (``\\s+(?!\\S)``) only follows white space; so the text before and after the space
  splits into the same words alone as in the whole, and BPE never merges across words.
- A SentencePiece BPE model with byte fallback and identity normalization (Llama 2's, Mistral's):
  at the same barriers, from its pieces; the pieces after the first are tokenized by the same
  model without the dummy prefix.
A text holding an added token's string is tokenized whole (added tokens split the text before the
model sees it, with rules of their own), as is the text of any other tokenizer.
"""
from __future__ import annotations

import numpy as np

from .state import component, flatten, types

LONG = 1 << 16  # characters: past this, pieces (Llama 2 on 3 MB of wiki text: 6.7 s and +38 MB in 16K pieces, 18.8 s and +225 MB whole)
PIECE = 1 << 14  # characters per piece (4K: 7.8 s, 256K: 11.0 s on the same text)
GROUP = 64  # pieces tokenized at once (~1M characters, ~70 MB of state)

# Llama 3's (and Qwen2's, with \p{N} for \p{N}{1,3}) pre-tokenizer split pattern
_SPLIT_PATTERNS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _gpt2_like(backend) -> bool:
    """Byte-level BPE behind GPT-2's regex or a Llama 3 / Qwen2 split, no normalizer but NFC."""
    if type(backend.model).__name__ != "BPE" or backend.model.dropout:
        return False
    if not set(types(component(backend.normalizer))) <= {"NFC"}:
        return False
    parts = flatten(component(backend.pre_tokenizer))
    if len(parts) == 1 and parts[0].get("type") == "ByteLevel":
        return bool(parts[0].get("use_regex", True))
    if len(parts) == 2 and parts[0].get("type") == "Split" and parts[1].get("type") == "ByteLevel":
        pattern = parts[0].get("pattern", {}).get("Regex")
        return (pattern in _SPLIT_PATTERNS and parts[0].get("behavior") == "Isolated"
                and not parts[0].get("invert") and not parts[1].get("use_regex", True))
    return False


class LongEncoder:
    """Cuts long texts where no id changes and tokenizes the pieces (see the module docstring)."""

    def __init__(self, backend, *, prefix=None, byte_level: bool = False):
        self.backend, self.prefix, self.byte_level = backend, prefix, byte_level

    @classmethod
    def for_backend(cls, backend, prefix) -> "LongEncoder | None":
        if prefix is not None:
            return cls(backend, prefix=prefix)
        if _gpt2_like(backend):
            return cls(backend, byte_level=True)
        return None

    def _added_in(self, text: str) -> bool:
        if self.prefix is not None:
            return self.prefix.limit(text) < len(text)
        added = [t.content for t in self.backend.get_added_tokens_decoder().values()]
        return any(a in text for a in added)

    def cuts(self, text: str) -> list[int] | None:
        """Cut positions about ``PIECE`` characters apart, or None when the text must stay whole."""
        if self._added_in(text):
            return None
        out, p, n = [], PIECE, len(text)
        while p < n - PIECE // 4:
            q = self._barrier(text, p, min(n, p + PIECE))
            if q is None:
                p += PIECE
                continue
            out.append(q)
            p = q + PIECE
        return out

    def _barrier(self, text: str, p: int, limit: int) -> int | None:
        if self.prefix is not None:
            return self.prefix.barrier(text, p, limit)
        while p < limit - 1:
            p = text.find(" ", p, limit - 1)
            if p < 0:
                return None
            if p > 0 and text[p - 1].isalpha() and text[p + 1].isalpha():
                return p
            p += 1
        return None

    def encode(self, engine, text: str, cuts: list[int], *, special: bool, n_pre: int, n_post: int) -> np.ndarray:
        """The ids of ``text`` (what ``engine.encode(text)`` gives), tokenized piece by piece."""
        bounds = [0] + cuts + [len(text)]
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
        cont = self.prefix.continuation if self.prefix is not None else engine
        around = engine.encode("", add_special_tokens=special).ids if special and (n_pre or n_post) else []
        out = [np.asarray(around[:n_pre], dtype=np.int32)]
        for g in range(0, len(pieces), GROUP):
            group = pieces[g:g + GROUP]
            if g == 0:  # the first piece is the start of the text: the tokenizer's own rules
                first = engine.encode_batch_fast(group[:1], add_special_tokens=False)
                rest = cont.encode_batch_fast(group[1:], add_special_tokens=False) if len(group) > 1 else []
                encs = list(first) + list(rest)
            else:
                encs = cont.encode_batch_fast(group, add_special_tokens=False)
            out += [np.asarray(e.ids, dtype=np.int32) for e in encs]
        out.append(np.asarray(around[len(around) - n_post:] if n_post else [], dtype=np.int32))
        return np.concatenate(out)


class SentencePieceLong:
    """Long texts of a SentencePiece BPE model, cut at barriers of its vocabulary."""

    def __init__(self, continuation, crossing: set[str]):
        self.continuation, self.crossing = continuation, crossing

    @classmethod
    def for_model(cls, path) -> "SentencePieceLong | None":
        from pathlib import Path

        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(Path(path).read_bytes())
        norm, trainer = m.normalizer_spec, m.trainer_spec
        if trainer.model_type != pb.TrainerSpec.BPE or not trainer.byte_fallback or trainer.treat_whitespace_as_suffix:
            return None
        if norm.name != "identity" or norm.remove_extra_whitespaces or not norm.escape_whitespaces:
            return None
        if any(p.type == pb.ModelProto.SentencePiece.USER_DEFINED for p in m.pieces):
            return None  # matched before BPE, like added tokens
        normal = [p.piece for p in m.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL]
        crossing = {t[i:i + 2] for t in normal if len(t) > 1 for i in range(len(t) - 1)}
        norm.add_dummy_prefix = False
        return cls(spm.SentencePieceProcessor(model_proto=m.SerializeToString()), crossing)

    def cuts(self, text: str) -> list[int]:
        from .prefix import find_barrier

        out, p, n = [], PIECE, len(text)
        while p < n - PIECE // 4:
            q = find_barrier(text, p, min(n, p + PIECE), self.crossing, "▁")
            if q is not None:
                out.append(q)
                p = q + PIECE
            else:
                p += PIECE
        return out

    def encode(self, sp, text: str, cuts: list[int], *, add_bos: bool, threads: int) -> np.ndarray:
        bounds = [0] + cuts + [len(text)]
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
        out = [np.asarray(sp.encode(pieces[0], add_bos=add_bos), dtype=np.int32)]
        for g in range(1, len(pieces), GROUP):
            out += [np.asarray(r, dtype=np.int32)
                    for r in self.continuation.encode(pieces[g:g + GROUP], num_threads=threads)]
        return np.concatenate(out)
