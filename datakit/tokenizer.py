"""Tokenizers behind one small interface: Hugging Face (tokenizer.json / folder / hub id) and SentencePiece.

Both encode in batches on every core: the Rust `tokenizers` pool and SentencePiece's
``num_threads``. Ids come back flat (one int32 array plus row lengths), which is what Arrow's
list arrays are made of, so no step ever holds a Python list per token.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import TokenizerError

THREADS = max(1, os.cpu_count() or 1)
_EOS_GUESSES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>")
_BOS_GUESSES = ("<s>", "<|begin_of_text|>", "<bos>")


class Encoded:
    """A batch of token rows: ``ids`` (flat int32), ``lengths`` and, when asked, char ``offsets`` (flat, n x 2)."""

    __slots__ = ("ids", "lengths", "offsets")

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, offsets: np.ndarray | None = None):
        self.ids, self.lengths, self.offsets = ids, lengths, offsets

    @property
    def starts(self) -> np.ndarray:
        out = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    def row(self, i: int) -> np.ndarray:
        s = self.starts
        return self.ids[s[i]:s[i + 1]]


def _flatten(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return ids, lengths


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class Tokenizer:
    """What datakit needs from a tokenizer. Subclasses fill the ids and the methods."""

    kind = "base"
    source: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    bos_token: str | None
    eos_token: str | None
    chat_template: str | None = None
    fingerprint: str = ""
    files: list[str]

    def encode(self, texts: list[str], *, add_special_tokens: bool | None = None) -> Encoded:
        raise NotImplementedError

    def encode_with_offsets(self, texts: list[str], *, add_special_tokens: bool | None = None,
                            parse_special: bool = False) -> Encoded:
        raise NotImplementedError

    def encode_with_spans(self, texts: list[str], spans: list[list[tuple[int, int]]], *,
                          add_special_tokens: bool | None = None, parse_special: bool = False
                          ) -> tuple[Encoded, np.ndarray, list[int]]:
        """Encode once and mark the tokens that lie inside each row's character spans.

        Returns the encoding, a bool per token (supervised), and the rows whose marks failed the
        independent check (empty unless something is wrong).
        """
        enc = self.encode_with_offsets(texts, add_special_tokens=add_special_tokens, parse_special=parse_special)
        return self._mask_from_offsets(enc, spans)

    def _mask_from_offsets(self, enc: Encoded, spans):
        """Supervised tokens from char offsets, and the rows whose marks fail the independent check."""
        from .transforms.mask import misplaced, tokens_in_spans

        tok_row = np.repeat(np.arange(len(spans)), enc.lengths)
        span_row = np.array([i for i, row in enumerate(spans) for _ in row], dtype=np.int64)
        span_start = np.array([a for row in spans for a, _ in row], dtype=np.int64)
        span_end = np.array([b for row in spans for _, b in row], dtype=np.int64)
        off = enc.offsets
        sup = tokens_in_spans(tok_row, off[:, 0], off[:, 1], span_row, span_start, span_end)
        bad = misplaced(tok_row, off[:, 0], off[:, 1], sup, span_row, span_start, span_end)
        return enc, sup, sorted({int(tok_row[b]) for b in bad})

    def id_to_piece(self, token_id: int) -> str:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def special_ids(self) -> set[int]:
        raise NotImplementedError

    def require_eos(self, why: str) -> int:
        if self.eos_id is None:
            raise TokenizerError(f"tokenizer {self.source} has no EOS token, which {why} needs")
        return self.eos_id

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
                "fingerprint": self.fingerprint, "files": self.files}


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
            raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None
        sp = self.sp
        self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
        self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else None
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else None
        self.bos_token = sp.id_to_piece(self.bos_id) if self.bos_id is not None else None
        self.eos_token = sp.id_to_piece(self.eos_id) if self.eos_id is not None else None
        self.files = [str(path)]
        self.fingerprint = _fingerprint([path])
        self._control = {i: sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)}
        specials = sorted((p for p in self._control.values() if p), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None
        self._special_by_piece = {p: i for i, p in self._control.items()}

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def special_ids(self) -> set[int]:
        return set(self._control)

    def _bos(self, add_special_tokens: bool | None) -> bool:
        return self.bos_id is not None and add_special_tokens is not False

    def encode(self, texts, *, add_special_tokens=None) -> Encoded:
        rows = self.sp.encode(list(texts), add_bos=self._bos(add_special_tokens), num_threads=THREADS)
        return Encoded(*_flatten(rows))

    def encode_with_offsets(self, texts, *, add_special_tokens=None, parse_special=False) -> Encoded:
        rows, offs = [], []
        add_bos = self._bos(add_special_tokens)
        for text in texts:
            ids, off = self._encode_one(text, parse_special)
            if add_bos:
                ids.insert(0, self.bos_id)
                off.insert(0, (0, 0))
            rows.append(ids)
            offs.append(off)
        ids, lengths = _flatten(rows)
        offsets = np.array(list(itertools.chain.from_iterable(offs)), dtype=np.int64).reshape(-1, 2)
        return Encoded(ids, lengths, offsets)

    def _encode_one(self, text: str, parse_special: bool):
        parts = [(0, text)]
        specials = []
        if parse_special and self._special_re is not None:
            parts, pos = [], 0
            for m in self._special_re.finditer(text):
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
        char_at = np.zeros(len(raw) + 1, dtype=np.int64)
        pos = 0
        for ci, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            char_at[pos:pos + n] = ci
            pos += n
        char_at[len(raw)] = len(text)
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


class HFTokenizer(Tokenizer):
    """A Hugging Face fast tokenizer, driven through its Rust backend (``tokenizers.Tokenizer``)."""

    kind = "huggingface"

    def __init__(self, backend, *, source: str, config: dict, files: list[Path]):
        self.backend = backend
        self.source = source
        self.files = [str(f) for f in files]
        self.fingerprint = _fingerprint(files) if files else hashlib.sha256(
            backend.to_str().encode()).hexdigest()
        self.chat_template = config.get("chat_template")
        vocab = backend.get_vocab(with_added_tokens=True)
        added = [t.content for t in backend.get_added_tokens_decoder().values() if t.special]

        def token(key, guesses):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value is None and key != "pad_token":
                value = next((g for g in guesses if g in added), None)
            return value if value in vocab else None

        self.bos_token = token("bos_token", _BOS_GUESSES)
        self.eos_token = token("eos_token", _EOS_GUESSES)
        pad_token = token("pad_token", ())
        self.bos_id = vocab.get(self.bos_token) if self.bos_token else None
        self.eos_id = vocab.get(self.eos_token) if self.eos_token else None
        self.pad_id = vocab.get(pad_token) if pad_token else None
        self._special = {vocab[t] for t in added if t in vocab}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def special_ids(self) -> set[int]:
        return set(self._special)

    def encode(self, texts, *, add_special_tokens=None) -> Encoded:
        encs = self.backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens is not False)
        return Encoded(*_flatten([e.ids for e in encs]))

    def encode_with_offsets(self, texts, *, add_special_tokens=None, parse_special=False) -> Encoded:
        encs = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens is not False)
        ids, lengths = _flatten([e.ids for e in encs])
        offsets = np.array(list(itertools.chain.from_iterable(e.offsets for e in encs)),
                           dtype=np.int64).reshape(-1, 2)
        # A token the post-processor added (BOS/EOS) reports (0, 0): keep it empty, never in a span.
        special = np.fromiter(itertools.chain.from_iterable(e.special_tokens_mask for e in encs),
                              dtype=bool, count=len(ids))
        offsets[special] = 0
        return Encoded(ids, lengths, offsets)

    def encode_with_spans(self, texts, spans, *, add_special_tokens=None, parse_special=False):
        """One fast encode; byte offsets from the ids' spelled bytes when they check out (see
        surface.py; spans are then compared in bytes, which keeps every character whole), else one
        offset-tracking encode with span edges looked up per span."""
        special = add_special_tokens is not False
        surfaces = self._surfaces()
        if surfaces is not None:
            encs = self.backend.encode_batch_fast(list(texts), add_special_tokens=special)
            ids, lengths = _flatten([e.ids for e in encs])
            n_pre, n_post = self._added_by_post_processor(special)
            raw = [t.encode("utf-8") for t in texts]
            offsets = surfaces.byte_offsets(ids, lengths, raw, n_pre=n_pre, n_post=n_post)
            if offsets is not None:
                byte_spans = [row if t.isascii() else [(len(t[:a].encode()), len(t[:b].encode())) for a, b in row]
                              for t, row in zip(texts, spans)]
                return self._mask_from_offsets(Encoded(ids, lengths, offsets), byte_spans)
        return self._encode_with_edges(texts, spans, special)

    def _surfaces(self):
        if not hasattr(self, "_surface_cache"):
            from .surface import Surfaces

            self._surface_cache = Surfaces.for_backend(self.backend)
        return self._surface_cache

    def _added_by_post_processor(self, special: bool) -> tuple[int, int]:
        """How many tokens the post-processor puts before and after a single sequence."""
        if not special:
            return 0, 0
        with_special = self.backend.encode("a", add_special_tokens=True).ids
        plain = self.backend.encode("a", add_special_tokens=False).ids
        for pre in range(len(with_special) - len(plain) + 1):
            if with_special[pre:pre + len(plain)] == plain:
                return pre, len(with_special) - len(plain) - pre
        return 0, 0

    def _encode_with_edges(self, texts, spans, special: bool):
        """One ``encode_batch``; spans become token ranges through the encoding's char->token map.

        Only the tokens at each span's edges are looked at (tokens advance monotonically through
        the text), so no per-token offsets are copied into Python. The edge check that follows is
        the mask check: the first and last marked tokens lie inside the span, and their outer
        neighbours do not.
        """
        encs = self.backend.encode_batch(list(texts), add_special_tokens=special)
        ids, lengths = _flatten([e.ids for e in encs])
        sup = np.zeros(len(ids), dtype=bool)
        bad = []
        row_start = 0
        for r, (e, row_spans) in enumerate(zip(encs, spans)):
            n = int(lengths[r])
            for s, t in row_spans:
                first, last = _span_tokens(e, s, t, n)
                if first <= last:
                    if not _edges_ok(e, s, t, first, last, n):
                        bad.append(r)
                    sup[row_start + first:row_start + last + 1] = True
            row_start += n
        return Encoded(ids, lengths), sup, bad

    def id_to_piece(self, token_id: int) -> str:
        return self.backend.id_to_token(int(token_id)) or f"<id {int(token_id)}>"

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)


def _span_tokens(enc, start: int, end: int, n: int) -> tuple[int, int]:
    """First and last token lying wholly inside chars [start, end); first > last when none does."""
    first = None
    for c in range(start, end):
        first = enc.char_to_token(c)
        if first is not None:
            break
    if first is None:
        return 0, -1
    while first < n and enc.token_to_chars(first) is not None and enc.token_to_chars(first)[0] < start:
        first += 1
    last = None
    for c in range(end - 1, start - 1, -1):
        last = enc.char_to_token(c)
        if last is not None:
            break
    if last is None:
        return first, -1
    # char_to_token gives the first token holding a char; byte-level tokens of one character
    # (an emoji as three tokens) all hold it, so move on to the last of them.
    while last + 1 < n and (nxt := enc.token_to_chars(last + 1)) is not None and nxt[0] < end:
        last += 1
    while last >= first and (enc.token_to_chars(last) or (0, end + 1))[1] > end:
        last -= 1
    return first, last


def _edges_ok(enc, start: int, end: int, first: int, last: int, n: int) -> bool:
    a, b = enc.token_to_chars(first) or (-1, -1), enc.token_to_chars(last) or (-1, -1)
    if not (start <= a[0] < a[1] and b[1] <= end and b[0] < b[1]):
        return False
    if first > 0:
        prev = enc.token_to_chars(first - 1)
        if prev is not None and prev[0] >= start and prev[1] <= end and prev[0] < prev[1]:
            return False  # a wholly inside token was left out
    if last + 1 < n:
        nxt = enc.token_to_chars(last + 1)
        if nxt is not None and nxt[0] >= start and nxt[1] <= end and nxt[0] < nxt[1]:
            return False
    return True


def _read_config(folder: Path) -> dict:
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        if f.is_file():
            try:
                config.update(json.loads(f.read_text("utf-8")))
            except json.JSONDecodeError as e:
                raise TokenizerError(f"{f}:{e.lineno}: invalid JSON ({e.msg})") from None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        config["chat_template"] = jinja.read_text("utf-8")
    if isinstance(config.get("chat_template"), list):  # named templates: take "default"
        named = {t["name"]: t["template"] for t in config["chat_template"]}
        config["chat_template"] = named.get("default", next(iter(named.values()), None))
    return config


def _from_tokenizer_json(path: Path) -> HFTokenizer:
    from tokenizers import Tokenizer as RustTokenizer

    try:
        backend = RustTokenizer.from_file(str(path))
    except Exception as e:
        raise TokenizerError(f"{path}: not a tokenizer.json ({e})") from None
    folder = path.parent
    files = [path] + [folder / n for n in ("tokenizer_config.json", "special_tokens_map.json",
                                             "chat_template.jinja") if (folder / n).is_file()]
    return HFTokenizer(backend, source=str(path), config=_read_config(folder), files=files)


def _from_auto(name: str) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise TokenizerError(f"cannot load tokenizer '{name}': not a .model, tokenizer.json or "
                             f"tokenizer folder, and loading it as a hub id failed ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    backend = getattr(tok, "_tokenizer", None) or getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"tokenizer '{name}' has no fast (tokenizers) form; give its "
                             f"tokenizer.json or SentencePiece .model instead")
    config = {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "chat_template": getattr(tok, "chat_template", None)}
    folder = Path(name)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return HFTokenizer(backend, source=name, config=config, files=files)


def load_tokenizer(spec: str) -> Tokenizer:
    """Load ``spec``: a SentencePiece ``.model``, a ``tokenizer.json``, an HF folder or a hub id."""
    p = Path(spec).expanduser()
    if p.is_file():
        if p.suffix == ".model":
            return SentencePieceTokenizer(p)
        if p.suffix == ".json":
            return _from_tokenizer_json(p)
        raise TokenizerError(f"{spec}: unknown tokenizer file (expected a .model or tokenizer.json)")
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return _from_tokenizer_json(p / "tokenizer.json")
        if any(p.glob("*.model")) and not (p / "tokenizer_config.json").is_file():
            return SentencePieceTokenizer(next(iter(sorted(p.glob("*.model")))))
        return _from_auto(str(p))
    if spec.startswith((".", "/", "~")) or spec.endswith((".model", ".json")) or spec.count("/") > 1:
        raise TokenizerError(f"tokenizer not found: {spec}")
    return _from_auto(spec)
