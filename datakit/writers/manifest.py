"""``manifest.json``: what a build was made from and what it holds, and opening a finished build.

The manifest records the recipe, the tokenizer, every input file with its sha256, the steps'
counts, what each split and each source holds, the row lengths and the steps' timings. The
inputs fingerprint (tokenizer + input hashes + recipe) names the build's content.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import BuildNotFoundError

MANIFEST = "manifest.json"


def nest_counts(counts: Counter) -> dict:
    """``{"rows_dropped.overlong": 3}`` -> ``{"rows_dropped": {"overlong": 3}}``, keys sorted."""
    out: dict = {}
    for key in sorted(counts):
        value = int(counts[key])
        if "." in key:
            head, tail = key.split(".", 1)
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    for key in ("tokens_dropped", "rows_dropped"):
        out.setdefault(key, {})
    return out


def inputs_fingerprint(*, recipe: dict, tokenizer: str, inputs: list[dict]) -> str:
    """sha256 over the tokenizer's fingerprint, every input's sha256 and the recipe."""
    h = hashlib.sha256(tokenizer.encode())
    for f in inputs:
        h.update(f["sha256"].encode())
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    return h.hexdigest()


def length_stats(lengths: np.ndarray) -> dict:
    return {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 2), "max": int(lengths.max())}


def with_pad_id(tokenizer: dict) -> dict:
    """The tokenizer's description with ``pad_id`` set to the id that pads rows (``pack``'s
    ``remainder: pad`` and datakit's collator): its pad token, else its EOS, else 0, and
    ``pad_id_from`` saying which. A plain collator needs a pad id too (README: "Padding")."""
    own, eos = tokenizer.get("pad_id"), tokenizer.get("eos_id")
    pad_id, source = (own, "pad_token") if own is not None else (eos, "eos_token") if eos is not None else (0, "none")
    return {**tokenizer, "pad_id": pad_id, "pad_id_from": source}


def assemble(*, kind: str, recipe: dict, tokenizer: dict, inputs: list[dict], fingerprint: str, counts: Counter,
             splits: dict[str, dict], sources: list[dict], lengths: np.ndarray, timings: dict[str, float]) -> dict:
    """The manifest of a finished build (its keys in the order readers see them)."""
    return {
        "datakit_version": __version__,
        "kind": kind,
        "recipe": recipe,
        "tokenizer": with_pad_id(tokenizer),
        "inputs": inputs,
        "inputs_fingerprint": fingerprint,
        "counts": nest_counts(counts),
        "splits": splits,
        "sources": sources,
        "lengths": length_stats(lengths),
        "timings": {name: round(seconds, 3) for name, seconds in timings.items()},
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read_manifest(path: str | Path) -> dict:
    """The manifest of the build at ``path``."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise BuildNotFoundError(f"{path} is not a datakit build (no {MANIFEST})")
    try:
        manifest = json.loads(p.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BuildNotFoundError(f"{p}: not valid JSON ({e}); the build is damaged, rebuild it") from None
    if not isinstance(manifest, dict) or "datakit_version" not in manifest:
        raise BuildNotFoundError(f"{p}: not a datakit manifest (no datakit_version)")
    return manifest


def load(path: str | Path):
    """Open a built folder as a ``datasets.DatasetDict`` (memory-mapped)."""
    from datasets import load_from_disk

    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise BuildNotFoundError(f"{p} is not a datakit build (no {MANIFEST})")
    if not (p / "dataset_dict.json").is_file():
        formats = ", ".join(read_manifest(p).get("formats", {}))
        raise BuildNotFoundError(f"{p} holds {formats}, not the hf layout that datakit.load opens; "
                           f"read its files as the README's Output formats section shows")
    return load_from_disk(str(p))


__all__ = ["MANIFEST", "assemble", "inputs_fingerprint", "length_stats", "load", "nest_counts", "with_pad_id",
           "read_manifest", "write_manifest"]
