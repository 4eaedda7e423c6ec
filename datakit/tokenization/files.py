"""Which tokenizer a path holds, recognized by its content rather than its name.

Supported, as they ship:
- a SentencePiece model, whatever its name (``tokenizer.model``, mistral-common's
  ``tokenizer.model.v1`` / ``.v3`` / ``.v7``), encoded by SentencePiece itself;
- a Hugging Face ``tokenizer.json`` (the ``tokenizers`` serialization), alone or in its folder;
- mistral-common's ``tekken.json``, converted by transformers' Mistral converter (exact ids; a
  131k vocabulary takes ~13 s to convert);
- a Hugging Face tokenizer folder without a tokenizer.json, or a hub id, through AutoTokenizer
  (never running the folder's own Python code unless ``trust_remote_code`` is set).

Anything else (a tiktoken BPE file such as Llama 3's original ``tokenizer.model``, GGUF,
``vocab.json``/``merges.txt`` alone) is one error line naming what is supported.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import TokenizerError

SUPPORTED = ("a SentencePiece model, a tokenizer.json, a tekken.json, a Hugging Face tokenizer folder or a hub id")
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+\r?$")


def kind_of_file(path: Path) -> str:
    """``"sentencepiece"``, ``"tokenizer.json"`` or ``"tekken"`` for a file; a TokenizerError otherwise."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.lstrip()[:1] == b"{":
        try:
            data = json.loads(path.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: invalid JSON ({e}); expected {SUPPORTED}") from None
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            return "tokenizer.json"
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and isinstance(data.get("vocab"), list):
            return "tekken"
        raise TokenizerError(f"{path}: a JSON file that is neither a tokenizer.json nor a tekken.json; "
                             f"expected {SUPPORTED}")
    if head.startswith(b"GGUF"):
        raise TokenizerError(f"{path}: a GGUF file is not supported; expected {SUPPORTED}")
    lines = head.split(b"\n")[:4]
    if lines and all(_TIKTOKEN_LINE.match(line) for line in lines if line):
        raise TokenizerError(f"{path}: a tiktoken BPE file is not supported directly; convert it to a "
                             f"tokenizer.json with transformers (its TikTokenConverter), or give {SUPPORTED}")
    return "sentencepiece"


def kind_of_folder(folder: Path) -> tuple[str, Path | None]:
    """What to load from a folder: its tokenizer.json, its tekken.json, its one SentencePiece model
    (when no tokenizer_config.json says more), or else AutoTokenizer on the folder."""
    if (folder / "tokenizer.json").is_file():
        return "tokenizer.json", folder / "tokenizer.json"
    if (folder / "tekken.json").is_file():
        return "tekken", folder / "tekken.json"
    if not (folder / "tokenizer_config.json").is_file():
        models = sorted(p for p in folder.iterdir() if p.is_file() and re.search(r"\.model(\.v\w+)?$", p.name))
        if models:
            return "sentencepiece", models[-1]  # tokenizer.model.v7 after .v3: the newest version
    return "auto", None
