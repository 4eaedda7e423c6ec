"""What a ``tokenizers`` pipeline does, read from its components' own JSON state.

surface.py (can the ids spell the text?) and prefix.py (can a text be cut?) both ask the same two
questions: which components are there, and is the normalizer only Llama's ``▁`` space rules.
"""
from __future__ import annotations

import json

SPACE_MARK = "▁"  # what SentencePiece and Metaspace write for a space


def component(obj) -> dict | None:
    """A normalizer's or pre-tokenizer's JSON form (its own, without serializing the whole tokenizer)."""
    return None if obj is None else json.loads(obj.__getstate__())


def flatten(node: dict | None) -> list[dict]:
    """The components of a (possibly nested) ``Sequence``, in order; [] for None."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        inner = node.get("normalizers") or node.get("pretokenizers") or []
        return [leaf for n in inner for leaf in flatten(n)]
    return [node]


def types(node: dict | None) -> list[str]:
    return [n.get("type") for n in flatten(node)]


def space_rules(normalizer: dict | None) -> bool | None:
    """For a normalizer made only of Llama's rules (``Prepend("▁")``, ``Replace(" ", "▁")``):
    whether it replaces spaces. None for any other normalizer (it may change byte lengths)."""
    replaces = False
    for n in flatten(normalizer):
        if n.get("type") == "Prepend" and n.get("prepend") == SPACE_MARK:
            continue
        if n.get("type") == "Replace" and n.get("pattern", {}).get("String") == " " \
                and n.get("content") == SPACE_MARK:
            replaces = True
            continue
        return None
    return replaces
