"""Tokenizers behind one small interface: Hugging Face (tokenizer.json, tekken.json, folder, hub id) and SentencePiece.

Both encode in batches on every core: the Rust ``tokenizers`` pool and SentencePiece's
``num_threads``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TokenizerError
from .base import Encoded, Tokenizer
from .files import kind_of_file, kind_of_folder
from .hf import HFTokenizer, _from_auto, _from_tekken, _from_tokenizer_json
from .spm import SentencePieceTokenizer

__all__ = ["Encoded", "Tokenizer", "HFTokenizer", "SentencePieceTokenizer", "load_tokenizer"]


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> Tokenizer:
    """Load ``spec``: a SentencePiece model, a ``tokenizer.json``, a ``tekken.json``, a Hugging Face
    folder or a hub id, recognized by content (see files.py). ``trust_remote_code`` lets a folder's
    own Python code run (an ``auto_map`` in its tokenizer_config.json); off, it never runs."""
    p = Path(spec).expanduser()
    if p.is_file():
        kind, path = kind_of_file(p), p
    elif p.is_dir():
        kind, path = kind_of_folder(p)
    elif spec.startswith((".", "/", "~")) or spec.endswith((".model", ".json")) or spec.count("/") > 1:
        raise TokenizerError(f"tokenizer not found: {spec}")
    else:
        kind, path = "auto", None
    if kind == "sentencepiece":
        return SentencePieceTokenizer(path)
    if kind == "tokenizer.json":
        return _from_tokenizer_json(path)
    if kind == "tekken":
        return _from_tekken(path)
    return _from_auto(spec if path is None and not p.is_dir() else str(p), trust_remote_code=trust_remote_code)
