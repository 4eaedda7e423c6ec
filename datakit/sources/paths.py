"""Which files a source names: a file, a glob or a folder -> the inputs to read, each once, sorted.

Folders and ``**`` are walked the way their user means them:

- hidden entries (a name that starts with ``.``: ``.ipynb_checkpoints/``, ``.git/``, ``.DS_Store``)
  are skipped, unless a pattern names them itself (``data/.cache/*.jsonl``, ``data/.*.jsonl``);
- a symlink to a folder is followed, but never into a folder that is already on the way down
  (``loop -> .``), and a folder reached twice is walked once;
- a file reached by two paths (a symlink beside its target) is read once, at its first sorted path;
- a folder saved by ``datasets`` (``dataset_info.json``, ``dataset_dict.json`` or ``state.json``)
  is one input and is not walked into: its JSON files are metadata, not records.
"""
from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterator

from ..errors import SourceError

TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | {".json", ".parquet", ".csv"}
_MAGIC = re.compile(r"[*?[]")


def is_dataset_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()
                           or (p / "state.json").is_file())


def is_pattern(path: str) -> bool:
    return _MAGIC.search(path) is not None


def expand(path: str) -> list[Path]:
    """A file, a glob or a folder -> the files (or dataset folders) to read, in sorted order."""
    if is_pattern(path):
        parts = Path(path).parts
        first = next(i for i, part in enumerate(parts) if is_pattern(part))
        base = Path(*parts[:first]) if first else Path()
        found = [p for p in _match(base, parts[first:], set()) if _readable(p)]
        if not found:
            raise SourceError("no input files match this pattern", file=path)
        return _once(found)
    p = Path(path)
    if not p.exists():
        raise SourceError("file not found", file=path)
    if p.is_file() or is_dataset_folder(p):
        return [p]
    found = [f for f in _match(p, ("**", "*"), set()) if _readable(f)]
    if not found:
        raise SourceError(f"folder holds no readable files ({', '.join(sorted(KNOWN_SUFFIXES))})", file=path)
    return _once(found)


def _readable(p: Path) -> bool:
    return (p.is_file() and p.suffix.lower() in KNOWN_SUFFIXES) or is_dataset_folder(p)


def _once(found: list[Path]) -> list[Path]:
    """Sorted, and each resolved file only at its first path."""
    seen: set[str] = set()
    out = []
    for p in sorted(set(found)):
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except NotADirectoryError:
        return []
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SourceError(f"cannot list this folder ({e.strerror})", file=str(folder)) from None


def _match(folder: Path, parts: tuple[str, ...], walked: set) -> Iterator[Path]:
    """Paths under ``folder`` matching the pattern ``parts``, one path component each (``**``:
    any number of folders). ``walked`` holds (real folder, parts left) pairs already expanded by a
    ``**``, so a symlink loop or a second way into a folder ends there."""
    if not parts:
        yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        key = (os.path.realpath(folder), len(parts))
        if key in walked:
            return
        walked.add(key)
        yield from _match(folder, rest, walked)
        for entry in _entries(folder):
            sub = folder / entry.name
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and not is_dataset_folder(sub):
                yield from _match(sub, parts, walked)
            elif not rest:  # a trailing ``**`` matches files too, as in glob.glob(recursive=True)
                yield sub
    elif is_pattern(head):
        hidden_ok = head.startswith(".")
        for entry in _entries(folder):
            if (hidden_ok or not entry.name.startswith(".")) and fnmatchcase(entry.name, head):
                yield from _match(folder / entry.name, rest, walked)
    elif os.path.lexists(folder / head):
        yield from _match(folder / head, rest, walked)
