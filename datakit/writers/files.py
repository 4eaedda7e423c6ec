"""What the manifest says about every file a build writes: its path, format, split, rows and bytes."""
from __future__ import annotations

from pathlib import Path
from typing import TypedDict


class FileEntry(TypedDict):
    path: str  # relative to the build folder
    format: str  # hf | parquet | megatron | mds
    split: str | None  # None: a file that covers every split
    rows: int | None  # rows (documents for megatron) it holds; None for an index or metadata file
    bytes: int


def file_entry(path: Path, *, root: Path, format: str, split: str | None, rows: int | None) -> FileEntry:
    return FileEntry(path=path.relative_to(root).as_posix(), format=format, split=split, rows=rows,
                     bytes=path.stat().st_size)


def parse_size(value: int | str) -> int:
    """``268435456``, ``"256MB"``, ``"256MiB"``, ``"1GB"`` -> bytes (MB = 2**20, as
    ``datasets``' ``max_shard_size`` and streaming's ``size_limit`` count them)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30,
             "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            number = text[: -len(unit)]
            return int(float(number) * factor)
    return int(text)
