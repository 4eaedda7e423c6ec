"""kitoken: a Hugging Face tokenizer's ids for about half the CPU, where it gives the same ids.

``kitoken`` (BSD-2-Clause, Rust; ``pip install 'datakit[fast]'``, wheels for Linux x86_64/aarch64
and Windows) reads a tokenizer.json and encodes with its own BPE. With the Llama 2 tokenizer plus
``<|im_start|>``/``<|im_end|>``, on 6,000 ChatML conversations of the chat benchmark it took 1.62 s
of CPU against 3.33-3.53 s for ``tokenizers``' ``encode_batch_fast``, and gave the same ids on all
of them, on all 106,667 message texts of the 20,000 conversations (2% of which SentencePiece
itself tokenizes differently from the tokenizer.json) and on 50,000 random strings of spaces,
``▁``, special-token strings, CJK, emoji, NBSP, zero-width and control characters.

It tokenizes the rows of a template step (``HFTokenizer.fast_ids``: SFT and chat). Pretraining
documents stay with ``tokenizers`` (``HFTokenizer.encode``): the 32 MB pretraining build took less
CPU with kitoken but longer (10.6-11.5 s against 8.9-9.1 s). It is used when all of these hold,
and the backend (``tokenizers``) otherwise:
- kitoken is installed, and ``DATAKIT_TOKENIZER_ENGINE`` is not ``tokenizers``;
- the backend is a BPE model without dropout (datakit turns off a file's truncation and padding);
- special-token strings are markup (``encode_special_tokens`` off): kitoken reads them as text
  differently from ``tokenizers`` (``" <|im_end|>"`` as text: ``▁``, ``<`` against ``▁<``);
- kitoken reads the backend's tokenizer.json and gives the backend's ids on a probe: texts made of
  the tokenizer's own added tokens and the characters where tokenizers tell apart (runs of spaces,
  ``▁``, byte fallback, CJK, emoji, control characters, leading and trailing white space).
The post-processor's tokens (a BOS, an EOS) are the ids the backend puts around an empty text,
added here. Each batch is also compared with the backend on a sample of its rows (one in
``SAMPLE``, ~1.5% of the backend's time): a difference stops the build with a line saying so.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import random
import threading

ENGINE_ENV = "DATAKIT_TOKENIZER_ENGINE"  # "tokenizers": never kitoken
SAMPLE = 64  # one row in this many is also encoded by the backend and compared

_PROBE_PIECES = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "▁", "▁▁", " ▁", "a", "b", "the", " the", "The",
                 " model", "ing", "'s", "12", " 345", "3.14", "-", "--", "...", "é", "ß", "中", "文字", "日本語",
                 "😀", "👍🏽", "\u00a0", "\u200b", "\u3000", "ﬁ", "\x00", "\x7f", "<", ">", "|", "/"]


class TokenizerMismatch(Exception):
    """kitoken and the backend gave different ids for a text (``text``)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


_POOL = None  # the threads kitoken runs in: made once, kept for the life of the process
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()  # per pool thread: {tokenizer key: its Kitoken}
WORKERS = 2


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="datakit-kitoken")
    return _POOL


class KitEncoder:
    """Encodes like ``backend.encode_batch_fast`` (special tokens split out), with kitoken.

    kitoken runs in ``WORKERS`` threads of its own that live as long as the process, each with the
    ``Kitoken`` objects it made: with kitoken 0.11.1, using an object made in another thread, or
    making one after a thread that had made one ended, crashed the process (a build whose
    tokenizing threads made their own crashed in 6 of 6 runs once it had three sources, whose
    threads end source by source). Made and used only by long-lived threads, every build ran
    through.
    """

    def __init__(self, backend, *, around: tuple[list[int], list[int]], data: bytes):
        self.backend = backend
        self.before, self.after = around  # the post-processor's ids around a single text
        self._data = data  # the backend's tokenizer.json
        self._key = hashlib.sha256(data).hexdigest()

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """In a thread of the pool, with that thread's own Kitoken of this tokenizer."""
        kits = _LOCAL.__dict__.setdefault("kits", {})
        kit = kits.get(self._key)
        if kit is None:
            from kitoken import Kitoken

            kit = kits[self._key] = Kitoken.from_tokenizers(self._data)
        return kit.encode_all(texts, True)

    @classmethod
    def for_backend(cls, backend, *, n_pre: int, n_post: int) -> "KitEncoder | None":
        """The encoder, or None when kitoken is not there or not the same (module docstring).
        ``n_pre``/``n_post``: how many tokens the post-processor puts before and after a text."""
        if os.environ.get(ENGINE_ENV, "").strip().lower() == "tokenizers" or backend.encode_special_tokens:
            return None
        try:
            import kitoken  # noqa: F401
        except ImportError:
            return None
        model = backend.model
        if type(model).__name__ != "BPE" or model.dropout or backend.truncation or backend.padding:
            return None
        empty = backend.encode("", add_special_tokens=True).ids
        if len(empty) != n_pre + n_post or backend.encode("", add_special_tokens=False).ids:
            return None
        encoder = cls(backend, around=(empty[:n_pre], empty[n_pre:]), data=backend.to_str().encode("utf-8"))
        try:
            if encoder.agrees(_probe(backend)):
                return encoder
        except Exception:  # a pipeline kitoken does not read
            pass
        return None

    def ids(self, texts: list[str], *, add_special_tokens: bool) -> list[list[int]]:
        """The ids of each text, as lists (what ``Encoding.ids`` gives)."""
        rows = _pool().submit(self._encode, texts).result()
        if add_special_tokens and (self.before or self.after):
            rows = [self.before + r + self.after for r in rows]
        return rows

    def agrees(self, texts: list[str]) -> bool:
        """Whether kitoken gives the backend's ids for ``texts`` (and with the post-processor's
        tokens for a few of them)."""
        want = [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        some = texts[:64]
        return self.ids(texts, add_special_tokens=False) == want and self.ids(some, add_special_tokens=True) == \
            [e.ids for e in self.backend.encode_batch_fast(some, add_special_tokens=True)]

    def check(self, texts: list[str], rows: list[list[int]], *, add_special_tokens: bool) -> None:
        """Compare a sample of ``rows`` (the ids of ``texts``) with the backend's; raises
        ``TokenizerMismatch`` on a difference."""
        picked = range(0, len(texts), SAMPLE)
        sample = [texts[i] for i in picked]
        want = self.backend.encode_batch_fast(sample, add_special_tokens=add_special_tokens)
        for i, e in zip(picked, want):
            if rows[i] != e.ids:
                raise TokenizerMismatch(texts[i])


def _probe(backend) -> list[str]:
    """Texts of the probe: every pair of probe pieces, the added tokens beside them, and random
    strings of both (a fixed seed: the same probe every time)."""
    added = [t.content for t in backend.get_added_tokens_decoder().values() if t.content]
    pieces = _PROBE_PIECES + added
    pairs = ["".join(p) for p in itertools.product(_PROBE_PIECES, repeat=2)]
    rng = random.Random(20240607)
    mixed = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 24))) for _ in range(500)]
    return pairs + [a + b + a for a in added for b in (" ", "x", "\n", " x ")] + mixed
