"""File readers: each yields chunks of raw records (dicts) with where each came from.

Reading streams: JSONL, text, Parquet, CSV and dataset folders are read a chunk at a time, so
memory follows the chunk size, not the input size. A JSON array file is read whole (such files are
instruction sets of a few MB) but parsed a chunk of records at a time; a plain-text file without
``document_separator`` is one document. Every chunk says how many bytes of the file it covers, for
the progress bar.

Files are read as their user means them: a UTF-8 byte order mark at the start of a file is not
data, and a text file's CRLF (or CR) line ends read as LF, before ``document_separator`` splits it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import SourceError
from .paths import JSONL_SUFFIXES, is_dataset_folder

if TYPE_CHECKING:
    import pyarrow as pa

CHUNK_ROWS = 500
CHUNK_BYTES = 4 << 20


@dataclass
class Chunk:
    """Raw records from one file: ``rows[i]`` came from ``wheres[i]`` (``file:line`` or ``file: row N``)."""

    rows: list
    wheres: list[str]
    nbytes: int = 0
    batch: pa.RecordBatch | None = None  # the rows already canonical (jsonl_arrow), instead of ``rows``


# A byte range of a file, cut where a line starts: (start, end, number of the first line).
Span = tuple[int, int, int]


@dataclass
class FileInfo:
    path: str
    bytes: int = 0
    records: int = 0
    sha256: str = ""
    _hash: object = field(default_factory=hashlib.sha256, repr=False)


_TOO_DEEP = "malformed JSON (arrays or objects nested deeper than Python's JSON parser can follow)"


def _decode(raw: bytes, file: str, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[:e.start].count(b"\n")
        raise SourceError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x})", file=file, line=line) from None


def read_jsonl(path: Path, info: FileInfo, *, span: "Span | None" = None) -> Iterator[Chunk]:
    """JSON Lines, one record per non-blank line; ``span`` reads only the lines of a byte range."""
    pos, end, first_line = span if span is not None else (0, None, 1)
    with open(path, "rb") as f:
        f.seek(pos)
        yield from jsonl_chunks(_lines_before(f, pos, end), str(path), info, first_line)


def _lines_before(f, pos: int, end: int | None) -> Iterator[bytes]:
    """The lines of ``f`` (positioned at ``pos``) that start before ``end``."""
    for raw in f:
        if end is not None and pos >= end:
            return
        pos += len(raw)
        yield raw


def jsonl_chunks(lines: Iterator[bytes], name: str, info: FileInfo, first_line: int) -> Iterator[Chunk]:
    """Chunks of the JSON Lines ``lines`` (numbered from ``first_line``): a chunk ends after the record
    that makes it CHUNK_ROWS records or CHUNK_BYTES bytes (blank lines count in bytes only); the last
    one has the rest, perhaps only blank lines."""
    rows, wheres, nbytes = [], [], 0
    for lineno, raw in enumerate(lines, first_line):
        info._hash.update(raw)
        nbytes += len(raw)
        if lineno == 1:
            raw = _without_bom(raw)
        if not raw.strip():
            continue
        text = _decode(raw, name, lineno)
        try:
            rows.append(json.loads(text))
        except RecursionError:
            raise SourceError(_TOO_DEEP, file=name, line=lineno) from None
        except json.JSONDecodeError as e:
            # the column in the line itself (a line cut short: just past its last character, where
            # json.loads says "line 2 column 1" of the text with its newline)
            column = min(e.pos, len(text.rstrip("\r\n"))) + 1
            raise SourceError(f"malformed JSON ({e.msg}, column {column})", file=name, line=lineno) from None
        wheres.append(f"{name}:{lineno}")
        if len(rows) >= CHUNK_ROWS or nbytes >= CHUNK_BYTES:
            yield Chunk(rows, wheres, nbytes)
            rows, wheres, nbytes = [], [], 0
    if rows or nbytes:
        yield Chunk(rows, wheres, nbytes)


_SPACE = re.compile(r"[ \t\n\r]*")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which Windows editors put at the start of a file


def _without_bom(raw: bytes) -> bytes:
    return raw[len(BOM):] if raw.startswith(BOM) else raw


def read_json(path: Path, info: FileInfo) -> Iterator[Chunk]:
    """A JSON array of records (or one record object).

    The file is decoded whole (a few MB of instructions decode in milliseconds) and the array is
    parsed a record at a time, so rows go out in chunks and the progress bar moves with the parse.
    ``ijson`` streams too, but its errors carry no line number; pyarrow reads only JSON Lines."""
    name = str(path)
    raw = path.read_bytes()
    info._hash.update(raw)
    size = len(raw)
    text = _decode(_without_bom(raw), name, 1)
    del raw
    pos = _SPACE.match(text).end()
    if text.startswith("[", pos):
        yield from _json_array(text, pos + 1, name, size)
        return
    try:
        data = json.loads(text)
    except RecursionError:
        raise SourceError(_TOO_DEEP, file=name) from None
    except json.JSONDecodeError as e:
        raise SourceError(f"malformed JSON ({e.msg}, column {e.colno})", file=name, line=e.lineno) from None
    if not isinstance(data, dict):
        raise SourceError("a JSON file must hold an array of records (or one record object)", file=name)
    yield Chunk([data], [f"{name}: row 0"], size)  # one record (e.g. a single conversation)


def _json_array(text: str, pos: int, name: str, size: int) -> Iterator[Chunk]:
    """The records of the array whose ``[`` ends at ``text[pos]``, CHUNK_ROWS at a time. A chunk's
    ``nbytes`` is the size in the file of the text parsed for it; the last one has the rest of ``size``."""
    decode = json.JSONDecoder().raw_decode
    space = _SPACE.match
    rows: list = []
    first = done = last = 0  # row number of rows[0]; bytes reported so far, up to text[last]
    pos = space(text, pos).end()
    closed = text.startswith("]", pos)
    while not closed:
        try:
            record, pos = decode(text, pos)
        except RecursionError:
            raise SourceError(_TOO_DEEP, file=name, line=text.count("\n", 0, pos) + 1) from None
        except json.JSONDecodeError as e:  # its line and column count from the start of the file
            raise SourceError(f"malformed JSON ({e.msg}, column {e.colno})", file=name, line=e.lineno) from None
        rows.append(record)
        pos = space(text, pos).end()
        if text.startswith(",", pos):
            pos = space(text, pos + 1).end()
        elif text.startswith("]", pos):
            closed = True
        else:
            raise SourceError("malformed JSON (expected ',' or ']' after a record)", file=name,
                              line=text.count("\n", 0, pos) + 1)
        if len(rows) == CHUNK_ROWS and not closed:
            nbytes = len(text[last:pos].encode("utf-8"))
            yield Chunk(rows, [f"{name}: row {first + i}" for i in range(len(rows))], nbytes)
            first, done, last, rows = first + len(rows), done + nbytes, pos, []
    end = space(text, pos + 1).end()
    if end != len(text):
        raise SourceError("malformed JSON (extra data after the array)", file=name,
                          line=text.count("\n", 0, end) + 1)
    yield Chunk(rows, [f"{name}: row {first + i}" for i in range(len(rows))], size - done)


def _newlines(text: str) -> str:
    """CRLF and CR line ends read as LF, as Python's text mode reads them."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def read_text(path: Path, info: FileInfo, separator: str | None) -> Iterator[Chunk]:
    """Plain text: one document per file, or per ``separator``-delimited piece (streamed). Line
    ends are LF before the split, in the text and in the separator, so ``"\\n\\n"`` splits a CRLF
    file where a blank line is."""
    name = str(path)
    if separator is None:
        raw = path.read_bytes()
        info._hash.update(raw)
        yield Chunk([{"text": _newlines(_decode(_without_bom(raw), name, 1))}], [f"{name}:1"], len(raw))
        return
    separator = _newlines(separator)
    buf, line, rows, wheres, nbytes = "", 1, [], [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            info._hash.update(raw)
            nbytes += len(raw)
            buf += _newlines(_decode(_without_bom(raw) if lineno == 1 else raw, name, lineno))
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


def _arrow_chunks(batches, name: str, size: int, at: Callable[[int], int]) -> Iterator[Chunk]:
    """Rows of Arrow ``batches``; ``at(rows read)`` says how many of the file's ``size`` bytes
    they cover, so the progress bar moves while a big file is read."""
    row = done = 0
    for batch in batches:
        rows = batch.to_pylist()
        row += len(rows)
        now = min(size, max(done, at(row)))
        yield Chunk(rows, [f"{name}: row {row - len(rows) + i}" for i in range(len(rows))], now - done)
        done = now
    yield Chunk([], [], size - done)


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
    total = max(1, pf.metadata.num_rows)
    yield from _arrow_chunks(pf.iter_batches(batch_size=CHUNK_ROWS), str(path), size, lambda n: size * n // total)


def read_csv(path: Path, info: FileInfo) -> Iterator[Chunk]:
    """CSV through pyarrow's streaming reader (which skips a byte order mark)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    size = _hash_file(path, info)
    try:
        with pa.OSFile(str(path)) as f:  # the header's names, to read every column as text
            names = pcsv.open_csv(f).schema.names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SourceError(f"the header names column {twice[0]!r} more than once", file=str(path), line=1)
        # CSV has no types: `42` or `true` in a text column is text, and an empty cell an empty text
        options = pcsv.ConvertOptions(strings_can_be_null=False, column_types={n: pa.string() for n in names})
        with pa.OSFile(str(path)) as f:
            reader = pcsv.open_csv(f, convert_options=options)
            yield from _arrow_chunks(reader, str(path), size, lambda n: f.tell())
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
                yield from _arrow_chunks(_rebatch(reader), str(arrow), size, lambda n, mm=mm: mm.tell())


def _rebatch(reader):
    for batch in reader:
        for start in range(0, batch.num_rows, CHUNK_ROWS):
            yield batch.slice(start, CHUNK_ROWS)


def read_file(path: Path, info: FileInfo, *, separator: str | None = None,
              span: "Span | None" = None) -> Iterator[Chunk]:
    """The file's records a chunk at a time; ``span`` (JSON Lines only) reads one byte range."""
    if is_dataset_folder(path):
        return read_dataset_folder(path, info)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(path, info, span=span)
    if span is not None:
        raise ValueError(f"{path}: only JSON Lines files are read by byte range")
    if suffix == ".json":
        return read_json(path, info)
    if suffix == ".parquet":
        return read_parquet(path, info)
    if suffix == ".csv":
        return read_csv(path, info)
    return read_text(path, info, separator)
