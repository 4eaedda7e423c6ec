"""Tokenizers behind one small interface: Hugging Face (tokenizer.json / folder / hub id) and SentencePiece.

Both encode in batches on every core: the Rust ``tokenizers`` pool and SentencePiece's
``num_threads``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TokenizerError
from .base import Encoded, Tokenizer
from .hf import HFTokenizer, _from_auto, _from_tokenizer_json
from .spm import SentencePieceTokenizer

__all__ = ["Encoded", "Tokenizer", "HFTokenizer", "SentencePieceTokenizer", "load_tokenizer"]


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
