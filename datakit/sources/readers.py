"""File readers: each yields chunks of raw records (dicts) with where each came from.

Reading streams: JSONL, text, Parquet, CSV and dataset folders are read a chunk at a time, so
memory follows the chunk size, not the input size. A JSON array file is read whole (such files are
instruction sets of a few MB) but parsed a chunk of records at a time; a plain-text file without
``document_separator`` is one document.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import SourceError

CHUNK_ROWS = 500
CHUNK_BYTES = 4 << 20
TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | {".json", ".parquet", ".csv"}


@dataclass
class Chunk:
    """Raw records from one file: ``rows[i]`` came from ``wheres[i]`` (``file:line`` or ``file: row N``)."""

    rows: list
    wheres: list[str]
    nbytes: int = 0


@dataclass
class FileInfo:
    path: str
    bytes: int = 0
    records: int = 0
    sha256: str = ""
    _hash: object = field(default_factory=hashlib.sha256, repr=False)


def is_dataset_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()
                           or (p / "state.json").is_file())


def expand(path: str) -> list[Path]:
    """A file, a glob or a folder -> the files (or dataset folders) to read, in sorted order."""
    p = Path(path)
    if any(ch in path for ch in "*?["):
        found = sorted(Path(x) for x in globlib.glob(path, recursive=True))
        found = [f for f in found if (f.is_file() and f.suffix in KNOWN_SUFFIXES) or is_dataset_folder(f)]
        if not found:
            raise SourceError("no input files match this pattern", file=path)
        return found
    if not p.exists():
        raise SourceError("file not found", file=path)
    if p.is_file() or is_dataset_folder(p):
        return [p]
    found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in KNOWN_SUFFIXES)
    if not found:
        raise SourceError(f"folder holds no readable files ({', '.join(sorted(KNOWN_SUFFIXES))})", file=path)
    return found


def _decode(raw: bytes, file: str, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[:e.start].count(b"\n")
        raise SourceError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x})", file=file, line=line) from None


def read_jsonl(path: Path, info: FileInfo) -> Iterator[Chunk]:
    name = str(path)
    rows, wheres, nbytes = [], [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            info._hash.update(raw)
            nbytes += len(raw)
            if not raw.strip():
                continue
            text = _decode(raw, name, lineno)
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise SourceError(f"malformed JSON ({e.msg}, column {e.colno})", file=name, line=lineno) from None
            wheres.append(f"{name}:{lineno}")
            if len(rows) >= CHUNK_ROWS or nbytes >= CHUNK_BYTES:
                yield Chunk(rows, wheres, nbytes)
                rows, wheres, nbytes = [], [], 0
    if rows or nbytes:
        yield Chunk(rows, wheres, nbytes)


_SPACE = re.compile(r"[ \t\n\r]*")
_SPACE_BYTES = re.compile(rb"[ \t\n\r]*")
_HEAD = 1 << 20  # bytes decoded before the first records are parsed; the rest follows


def read_json(path: Path, info: FileInfo) -> Iterator[Chunk]:
    """A JSON array of records (or one record object). The array is parsed a chunk of records at
    a time, from its first megabyte on, so the first rows are on their way while the rest of the
    file is still being decoded and parsed."""
    name = str(path)
    raw = path.read_bytes()
    pos = _SPACE_BYTES.match(raw).end()  # white space is ASCII: the same index in characters
    cut = max(pos + 1, min(len(raw), _HEAD))
    while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:  # not inside a UTF-8 character
        cut += 1
    head = _decode(raw[:cut], name, 1)
    if head.startswith("[", pos):
        yield from _json_array(raw, head, cut, pos + 1, name)
    else:
        text = head + _decode(raw[cut:], name, raw[:cut].count(b"\n") + 1)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(f"malformed JSON ({e.msg}, column {e.colno})", file=name, line=e.lineno) from None
        if not isinstance(data, dict):
            raise SourceError("a JSON file must hold an array of records (or one record object)", file=name)
        yield Chunk([data], [f"{name}: row 0"], len(raw))  # one record (e.g. a single conversation)
    info._hash.update(raw)  # hashing waits until the rows are out: only the manifest needs it


def _json_array(raw: bytes, text: str, decoded: int, pos: int, name: str) -> Iterator[Chunk]:
    """Records of the array starting at ``text[pos]``; ``text`` is ``raw[:decoded]`` decoded, and
    the rest of ``raw`` is decoded the first time the parse reaches the end of what it has."""
    decode = json.JSONDecoder().raw_decode
    space = _SPACE.match
    rows: list = []
    row = 0
    lines_before = 0  # newlines in the text already dropped

    def more() -> bool:
        nonlocal text, pos, decoded, lines_before
        if decoded == len(raw):
            return False
        lines_before += text.count("\n", 0, pos)
        text = text[pos:] + _decode(raw[decoded:], name, raw[:decoded].count(b"\n") + 1)
        pos, decoded = 0, len(raw)
        return True

    def fail(message: str, at: int) -> SourceError:
        return SourceError(message, file=name, line=lines_before + text.count("\n", 0, at) + 1)

    def skip() -> None:
        nonlocal pos
        pos = space(text, pos).end()
        while pos == len(text) and more():
            pos = space(text, pos).end()

    skip()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                record, end = decode(text, pos)
            except json.JSONDecodeError as e:
                if more():
                    continue
                raise SourceError(f"malformed JSON ({e.msg}, column {e.colno})", file=name,
                                  line=lines_before + e.lineno) from None
            if end == len(text) and more():  # a number may go on past what is decoded
                continue
            rows.append(record)
            if len(rows) == CHUNK_ROWS:
                yield Chunk(rows, [f"{name}: row {row + i}" for i in range(len(rows))], 0)
                row += len(rows)
                rows = []
            pos = end
            skip()
            if text.startswith(",", pos):
                pos += 1
                skip()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            raise fail("malformed JSON (expected ',' or ']' after a record)", pos)
    while more():
        pass
    if space(text, pos).end() != len(text):
        raise fail("malformed JSON (extra data after the array)", space(text, pos).end())
    yield Chunk(rows, [f"{name}: row {row + i}" for i in range(len(rows))], len(raw))


def read_text(path: Path, info: FileInfo, separator: str | None) -> Iterator[Chunk]:
    """Plain text: one document per file, or per ``separator``-delimited piece (streamed)."""
    name = str(path)
    if separator is None:
        raw = path.read_bytes()
        info._hash.update(raw)
        yield Chunk([{"text": _decode(raw, name, 1)}], [f"{name}:1"], len(raw))
        return
    buf, line, rows, wheres, nbytes = "", 1, [], [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            info._hash.update(raw)
            nbytes += len(raw)
            buf += _decode(raw, name, lineno)
            while separator in buf:
                doc, buf = buf.split(separator, 1)
                if doc.strip():
                    rows.append({"text": doc})
                    wheres.append(f"{name}:{line}")
                line += doc.count("\n") + separator.count("\n")
            if len(rows) >= CHUNK_ROWS or nbytes >= CHUNK_BYTES:
                yield Chunk(rows, wheres, nbytes)
                rows, wheres, nbytes = [], [], 0
    if buf.strip():
        rows.append({"text": buf})
        wheres.append(f"{name}:{line}")
    if rows or nbytes:
        yield Chunk(rows, wheres, nbytes)


def _arrow_chunks(batches, name: str, total_bytes: int) -> Iterator[Chunk]:
    row = 0
    for batch in batches:
        rows = batch.to_pylist()
        yield Chunk(rows, [f"{name}: row {row + i}" for i in range(len(rows))])
        row += len(rows)
    yield Chunk([], [], total_bytes)  # progress is counted in bytes, once the file is done


def _hash_file(path: Path, info: FileInfo) -> int:
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            info._hash.update(block)
            size += len(block)
    return size


def read_parquet(path: Path, info: FileInfo) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    size = _hash_file(path, info)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise SourceError(f"not a readable Parquet file ({e})", file=str(path)) from None
    yield from _arrow_chunks(pf.iter_batches(batch_size=CHUNK_ROWS), str(path), size)


def read_csv(path: Path, info: FileInfo) -> Iterator[Chunk]:
    import pyarrow.csv as pcsv

    size = _hash_file(path, info)
    try:
        reader = pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
        yield from _arrow_chunks(reader, str(path), size)
    except Exception as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"not a readable CSV file ({e})", file=str(path)) from None


def read_dataset_folder(path: Path, info: FileInfo) -> Iterator[Chunk]:
    """A folder written by ``Dataset.save_to_disk`` (a DatasetDict folder reads every split)."""
    import pyarrow as pa

    folders = [path]
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text("utf-8"))["splits"]
        folders = [path / s for s in splits]
    for folder in folders:
        state = json.loads((folder / "state.json").read_text("utf-8"))
        for f in state["_data_files"]:
            arrow = folder / f["filename"]
            size = _hash_file(arrow, info)
            with pa.memory_map(str(arrow)) as mm:
                reader = pa.ipc.open_stream(mm)
                yield from _arrow_chunks(_rebatch(reader), str(arrow), size)


def _rebatch(reader):
    for batch in reader:
        for start in range(0, batch.num_rows, CHUNK_ROWS):
            yield batch.slice(start, CHUNK_ROWS)


def read_file(path: Path, info: FileInfo, *, separator: str | None = None) -> Iterator[Chunk]:
    if is_dataset_folder(path):
        return read_dataset_folder(path, info)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(path, info)
    if suffix == ".json":
        return read_json(path, info)
    if suffix == ".parquet":
        return read_parquet(path, info)
    if suffix == ".csv":
        return read_csv(path, info)
    return read_text(path, info, separator)
