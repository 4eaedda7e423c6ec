"""Hugging Face tokenizers (tokenizer.json, folders, hub ids), driven through their Rust backend."""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path

import numpy as np

from ..errors import TokenizerError
from .base import _UNSET, Encoded, Tokenizer, _fingerprint, _flatten
from .kit import ENGINE_ENV, KitEncoder, TokenizerMismatch
from .long import LONG

KIT_WHOLE = 6  # characters a token: a longer row is cut at its cutoff rather than tokenized whole (kitoken)

_EOS_GUESSES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>")
_BOS_GUESSES = ("<s>", "<|begin_of_text|>", "<bos>")


class HFTokenizer(Tokenizer):
    """A Hugging Face fast tokenizer, driven through its Rust backend (``tokenizers.Tokenizer``)."""

    kind = "huggingface"

    def __init__(self, backend, *, source: str, config: dict, files: list[Path]):
        # A tokenizer.json may carry truncation or padding for inference; transformers applies
        # them only when a call asks for it, and so does datakit (cutoff_len): never here.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        self.backend = backend
        self.source = source
        self.files = [str(f) for f in files]
        self.fingerprint = _fingerprint(files) if files else hashlib.sha256(
            backend.to_str().encode()).hexdigest()
        self.chat_template = config.get("chat_template")
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise TokenizerError(f"tokenizer {source}: chat_template in its config must be a string (or a list of "
                                 f"{{name, template}}), got {type(self.chat_template).__name__}")
        added = [t.content for t in backend.get_added_tokens_decoder().values() if t.special]

        def token(key, guesses):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value is not None and not isinstance(value, str):
                raise TokenizerError(f"tokenizer {source}: {key} in its config must be a string or "
                                     f"{{\"content\": string}}, got {json.dumps(config.get(key))[:80]}")
            if value is None and key != "pad_token":
                value = next((g for g in guesses if g in added), None)
            return value if value is not None and backend.token_to_id(value) is not None else None

        self.bos_token = token("bos_token", _BOS_GUESSES)
        self.eos_token = token("eos_token", _EOS_GUESSES)
        pad_token = token("pad_token", ())
        self.bos_id = backend.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_id = backend.token_to_id(self.eos_token) if self.eos_token else None
        self.pad_id = backend.token_to_id(pad_token) if pad_token else None
        self._special = {i for i in map(backend.token_to_id, added) if i is not None}
        self._prefix_lock = threading.Lock()
        self._kit_lock = threading.Lock()
        self._fast_forms: dict[int, object] = {}  # id(engine) -> its PreSpaced form, or itself

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def special_ids(self) -> set[int]:
        return set(self._special)

    def _ordinary(self):
        """The backend with special-token strings read as text (``encode_special_tokens``), and the
        PieceEncoder for rows whose data holds one (markup.py); built once."""
        if "_ordinary_cache" not in self.__dict__:
            with self._prefix_lock:
                if "_ordinary_cache" not in self.__dict__:
                    from tokenizers import Tokenizer as RustTokenizer

                    from .markup import PieceEncoder

                    ordinary = RustTokenizer.from_str(self.backend.to_str())
                    ordinary.encode_special_tokens = True
                    self._ordinary_cache = ordinary, PieceEncoder.for_backend(self.backend, ordinary)
        return self._ordinary_cache

    def _specials(self):
        """A pattern of the special added tokens' strings (None without any); built once."""
        if "_specials_cache" not in self.__dict__:
            from .markup import special_pattern

            self._specials_cache = special_pattern(
                t.content for t in self.backend.get_added_tokens_decoder().values() if t.special)
        return self._specials_cache

    def _engine(self, parse_special: bool, texts):
        """The backend, or for ordinary text holding a special-token string its copy that reads them
        as text (copying Llama 2's backend costs ~0.5 s, so it is made only when a text needs it)."""
        if parse_special or (pattern := self._specials()) is None or not any(map(pattern.search, texts)):
            return self.backend
        return self._ordinary()[0]

    def encode(self, texts, *, add_special_tokens=None, parse_special=False) -> Encoded:
        """Ids of ``texts``; a text longer than long.LONG characters is tokenized in pieces whose
        ids are those of the whole (long.py), which keeps memory flat."""
        special = add_special_tokens is not False
        texts = list(texts)
        engine = self._engine(parse_special, texts)
        cuts = {}
        if any(len(t) > LONG for t in texts) and (long := self._long_encoder()) is not None:
            cuts = {i: c for i, t in enumerate(texts) if len(t) > LONG and (c := long.cuts(t))}
        # documents stay with tokenizers: with kitoken the 32 MB pretraining build took 10.6-11.5 s
        # against 8.9-9.1 s (less CPU, but longer), where the chat rows' build is faster with it
        fast = self._fast(engine)
        if not cuts:
            return Encoded(*_flatten([e.ids for e in fast.encode_batch_fast(texts, add_special_tokens=special)]))
        short = [i for i in range(len(texts)) if i not in cuts]
        rows: list = [None] * len(texts)
        for i, e in zip(short, fast.encode_batch_fast([texts[i] for i in short], add_special_tokens=special)):
            rows[i] = np.asarray(e.ids, dtype=np.int32)
        n_pre, n_post = self.added_around(special)
        for i, c in cuts.items():
            rows[i] = long.encode(engine, texts[i], c, special=special, n_pre=n_pre, n_post=n_post)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return Encoded(np.concatenate(rows) if rows else np.zeros(0, np.int32), lengths)

    def _rows(self, engine, texts: list[str], special: bool) -> list[list[int]]:
        """The ids of each text by ``engine``: kitoken's where it gives the backend's (kit.py)."""
        kit = self._kit() if engine is self.backend else None
        if kit is not None:
            try:
                rows = kit.ids(texts, add_special_tokens=special)
            except UnicodeEncodeError:  # a lone surrogate: the backend says what it makes of it
                kit = None
        if kit is None:
            return [e.ids for e in self._fast(engine).encode_batch_fast(texts, add_special_tokens=special)]
        try:
            kit.check(texts, rows, add_special_tokens=special)
        except TokenizerMismatch as e:
            raise TokenizerError(f"tokenizer {self.source}: kitoken and tokenizers give different ids for the "
                                 f"text {e.text[:60]!r}; set {ENGINE_ENV}=tokenizers to build with tokenizers "
                                 f"alone (and please report the text)") from None
        return rows

    def _kit(self):
        """The kitoken encoder of the backend (kit.py), or None; made once."""
        if "_kit_cache" not in self.__dict__:
            with self._kit_lock:
                if "_kit_cache" not in self.__dict__:
                    n_pre, n_post = self.added_around(True)
                    self._kit_cache = KitEncoder.for_backend(self.backend, n_pre=n_pre, n_post=n_post)
        return self._kit_cache

    def _fast(self, engine):
        """``engine``, or its form that applies Metaspace in Python when that gives the same ids
        (metaspace.py); made once per engine."""
        fast = self._fast_forms.get(id(engine), _UNSET)
        if fast is _UNSET:
            from .metaspace import PreSpaced

            fast = self._fast_forms[id(engine)] = PreSpaced.of(engine) or engine
        return fast

    def _long_encoder(self):
        if "_long" not in self.__dict__:
            from .long import LongEncoder

            self._long = LongEncoder.for_backend(self.backend, self._prefix_encoder())
        return self._long

    def _pieces(self, texts, data, special: bool):
        """Rows whose data holds a special-token string, encoded piece by piece: {row: (ids, offsets)}."""
        from .markup import rows_with_data_specials

        rows = rows_with_data_specials(texts, self._specials(), data)
        if not rows:
            return {}
        pieces = self._ordinary()[1]
        n_pre, n_post = self.added_around(special)
        return {r: pieces.encode(texts[r], data[r], special=special, n_pre=n_pre, n_post=n_post) for r in rows}

    def encode_with_offsets(self, texts, *, add_special_tokens=None, parse_special=False, data=None) -> Encoded:
        special = add_special_tokens is not False
        texts = list(texts)
        encs = self._engine(parse_special, texts).encode_batch(texts, add_special_tokens=special)
        rows = [(e.ids, e.offsets, e.special_tokens_mask) for e in encs]
        for r, (ids, offs) in (self._pieces(texts, data, special) if parse_special else {}).items():
            rows[r] = ids, offs, [0] * len(ids)  # added tokens there already sit at (0, 0)
        ids, lengths = _flatten([r[0] for r in rows])
        offsets = np.array(list(itertools.chain.from_iterable(r[1] for r in rows)), dtype=np.int64).reshape(-1, 2)
        # A token the post-processor added (BOS/EOS) reports (0, 0): keep it empty, never in a span.
        added = np.fromiter(itertools.chain.from_iterable(r[2] for r in rows), dtype=bool, count=len(ids))
        offsets[added] = 0
        return Encoded(ids, lengths, offsets)

    def fast_ids(self, texts, *, special, max_tokens, n_pre, n_post, parse_special=False, data=None):
        """``encode_batch_fast``; with ``max_tokens``, a row past that many tokens is tokenized only
        as far as needed when that is exact (prefix.py). Rows whose data holds a special-token
        string are encoded piece by piece, and whole."""
        pieces = self._pieces(texts, data, special) if parse_special else {}
        prefix = self._prefix_encoder(wait=False) if max_tokens is not None and parse_special else None
        if prefix is None:
            rows = self._rows(self._engine(parse_special, texts), texts, special)
            ends = None
        else:
            rows, ends = self._prefix_rows(prefix, texts, max_tokens + 1 - n_pre, special=special,
                                           n_pre=n_pre, n_post=n_post)
        for r, (ids, _) in pieces.items():
            rows[r] = ids
            if ends is not None:
                ends[r] = len(texts[r])
        return *_flatten(rows), ends

    def _prefix_rows(self, prefix, texts, need: int, *, special: bool, n_pre: int, n_post: int):
        """``prefix.encode``; with kitoken, the rows of up to ``KIT_WHOLE`` characters a token are
        tokenized whole by it (twice as fast as tokenizers, so tokenizing the text past the cutoff
        costs less than cutting it), the longer ones by ``prefix``."""
        kit = self._kit()
        if kit is None:
            return prefix.encode(texts, need, add_special_tokens=special, n_pre=n_pre, n_post=n_post)
        whole = [i for i, t in enumerate(texts) if len(t) <= KIT_WHOLE * need]
        rows: list = [None] * len(texts)
        ends = [len(t) for t in texts]
        if whole:
            for i, ids in zip(whole, self._rows(self.backend, [texts[i] for i in whole], special)):
                rows[i] = ids
        cut = [i for i in range(len(texts)) if rows[i] is None]
        if cut:
            cut_rows, cut_ends = prefix.encode([texts[i] for i in cut], need, add_special_tokens=special,
                                               n_pre=n_pre, n_post=n_post)
            for i, ids, end in zip(cut, cut_rows, cut_ends):
                rows[i], ends[i] = ids, end
        return rows, ends

    def _prefix_encoder(self, *, wait: bool = True):
        """The PrefixEncoder (None when this tokenizer cannot be cut). With ``wait=False`` a thread
        that finds another one building it gets None and tokenizes whole texts meanwhile: the
        ids are the same either way."""
        if "_prefix" in self.__dict__:
            return self._prefix
        if not self._prefix_lock.acquire(blocking=wait):
            return None
        try:
            if "_prefix" not in self.__dict__:
                from .prefix import PrefixEncoder

                self._prefix = PrefixEncoder.for_backend(self.backend, self._vocab())
        finally:
            self._prefix_lock.release()
        return self._prefix

    def _vocab(self) -> dict[str, int]:
        """The vocabulary with added tokens (built once: 32k entries cost ~15 ms)."""
        vocab = self.__dict__.get("_vocab_cache")
        if vocab is None:
            vocab = self._vocab_cache = self.backend.get_vocab(with_added_tokens=True)
        return vocab

    def _build_surfaces(self):
        from .surface import Surfaces

        return Surfaces.for_backend(self.backend, self._vocab())

    def added_around(self, special: bool) -> tuple[int, int]:
        """How many tokens the post-processor puts before and after a single sequence."""
        if not special:
            return 0, 0
        with_special = self.backend.encode("a", add_special_tokens=True).ids
        plain = self.backend.encode("a", add_special_tokens=False).ids
        for pre in range(len(with_special) - len(plain) + 1):
            if with_special[pre:pre + len(plain)] == plain:
                return pre, len(with_special) - len(plain) - pre
        return 0, 0

    def id_to_piece(self, token_id: int) -> str:
        return self.backend.id_to_token(int(token_id)) or f"<id {int(token_id)}>"

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)


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
        named = {t.get("name"): t.get("template") for t in config["chat_template"] if isinstance(t, dict)}
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


def _from_tekken(path: Path) -> HFTokenizer:
    """mistral-common's tekken.json, converted by transformers into a ``tokenizers`` backend."""
    try:
        from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer
    except ImportError:
        raise TokenizerError(f"{path}: a tekken.json needs transformers >= 5 (its Mistral converter)") from None
    try:
        tok = convert_tekken_tokenizer(str(path))
    except Exception as e:
        raise TokenizerError(f"{path}: not a tekken.json ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    config = {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "chat_template": getattr(tok, "chat_template", None)}
    return HFTokenizer(tok.backend_tokenizer, source=str(path), config=config, files=[path])


def _from_auto(name: str, *, trust_remote_code: bool = False) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as e:
        message = str(e).splitlines()[0] if str(e) else ""
        if "trust_remote_code" in str(e):
            raise TokenizerError(f"tokenizer '{name}' wants to run its own Python code (auto_map in its "
                                 f"tokenizer_config.json), which datakit does not allow unless "
                                 f"trust_remote_code is set") from None
        raise TokenizerError(f"cannot load tokenizer '{name}': not a tokenizer file or folder datakit "
                             f"recognizes, and loading it as a hub id failed ({type(e).__name__}: "
                             f"{message})") from None
    backend = getattr(tok, "_tokenizer", None) or getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"tokenizer '{name}' has no fast (tokenizers) form; give its "
                             f"tokenizer.json or SentencePiece .model instead")
    config = {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "chat_template": getattr(tok, "chat_template", None)}
    folder = Path(name)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return HFTokenizer(backend, source=name, config=config, files=files)


