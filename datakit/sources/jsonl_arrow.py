"""JSON Lines through pyarrow's C++ JSON reader: ``read_jsonl``'s chunks, batches and errors, faster.

``readers.read_jsonl`` (one ``json.loads`` per line, under the GIL) stays the reference. This reader
cuts the file into the same chunks (CHUNK_ROWS records or CHUNK_BYTES bytes), parses a chunk with
``pyarrow.json.read_json`` (which releases the GIL) against the format's explicit schema, and checks
and converts it column by column (``arrow_formats``). A chunk goes through ``jsonl_chunks`` and
``formats.to_batch`` instead, which give the reference's result or error word for word, when
anything in it is unusual:

- a record's line that is not exactly one object, ``{`` to ``}`` (space around a record, two records
  on a line, a record over two lines: pyarrow reads each of those differently);
- invalid UTF-8 (pyarrow does not check it) or a ``\\uD800``-style surrogate escape (pairs too);
- anything pyarrow rejects: malformed JSON, a field of another type (content given as a list of
  parts), a key the format reads given twice;
- in keys the format does not read (skipped, as the adapters skip them): an ``Inf``, ``-Inf`` or
  ``-NaN`` value, or a line deep enough in brackets that ``json.loads`` might give up on it;
- anything the converter rejects (nulls, missing fields, unknown roles, empty conversations).

Blank lines (spaces, tabs, CRs; a form feed sends the chunk to json.loads), a UTF-8 byte order
mark on line 1, CRLF line ends and a last line without one read fast. CPU seconds
of ``read_source`` (best of 3, json.loads path and this one in turn, three times, on a busy 2-core
machine): 20,000 conversations (39 MB, ``messages``) 0.44-0.72 -> 0.25-0.36 s, half of it in
``read_json`` without the GIL; 6,000 ``text`` documents (32 MB) 0.17-0.24 -> 0.13-0.18 s. The same
conversations with an ``id`` per record and a ``name`` per turn: 0.59-0.67 -> 0.40 s.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from . import readers
from .arrow_formats import plan
from .formats import SCHEMAS
from .readers import BOM, Chunk, FileInfo, Span, jsonl_chunks

# pyarrow parses a chunk (~1 MB) as one block on the calling thread: the build reads in a feeder
# thread while tokenizer threads use every core, so a thread pool here only adds hand-offs.
USE_THREADS = False
WINDOW = 8 << 20  # bytes read from the file at a time
SURROGATE = r"\\u[dD][89a-fA-F]"  # the JSON escape of half a UTF-16 pair


class _Window:
    """A file's bytes from ``start`` on (lines that start before ``end``), read WINDOW bytes at a
    time; positions are file offsets. Bytes before ``keep`` may be dropped."""

    def __init__(self, f, start: int, end: int | None):
        self.f, self.base, self.end, self.keep = f, start, end, start
        self.buf, self.eof = b"", False

    def _more(self) -> bool:
        kept = self.buf[self.keep - self.base:]
        data = b"" if self.eof else self.f.read(max(WINDOW, len(kept)))  # doubling: a 1 GB line reads in O(size)
        if not data:
            self.eof = True
            return False
        self.buf, self.base = kept + data, self.keep
        return True

    def starts_line(self, pos: int) -> bool:
        return (self.end is None or pos < self.end) and (pos - self.base < len(self.buf) or self._more())

    def line_end(self, pos: int) -> int:
        searched = pos
        while (j := self.buf.find(b"\n", searched - self.base)) < 0:
            searched = self.base + len(self.buf)
            if not self._more():
                return searched
        return self.base + j + 1

    def take(self, start: int, stop: int) -> bytes:
        return self.buf[start - self.base:stop - self.base]

    def lines(self, pos: int) -> Iterator[bytes]:
        while self.starts_line(pos):
            end = self.line_end(pos)
            yield self.take(pos, end)
            pos = end


def read_jsonl_arrow(path: Path, info: FileInfo, *, fmt: str, columns: dict[str, str],
                     span: Span | None = None) -> Iterator[Chunk]:
    """``read_jsonl``'s chunks, each already a canonical batch (``Chunk.batch``) when it reads plainly."""
    how = plan(fmt, columns)
    if how is None:  # no chunk can read plainly: the reference reads the file once
        yield from readers.read_jsonl(path, info, span=span)
        return
    parser = _Parser(how.schema)
    name = str(path)
    pos, end, line = span if span is not None else (0, None, 1)
    with open(path, "rb") as f:
        f.seek(pos)
        window = _Window(f, pos, end)
        while window.starts_line(pos):
            window.keep = pos
            stop, lines = _cut(window, pos, line)
            data = window.take(pos, stop)
            batch = _batch(data, parser, fmt, how.convert, name, lines) if lines.numbers else None
            if batch is not None:
                info._hash.update(data)
                chunk = Chunk([], [], stop - pos, batch)
            else:  # the reference reads the chunk and says what is wrong
                chunk = next(jsonl_chunks(window.lines(pos), name, info, line))
                stop = pos + chunk.nbytes
            yield chunk
            line += lines.count if batch is not None else window.take(pos, stop).count(b"\n")
            pos = stop


@dataclass
class _Lines:
    """The records of a chunk: where each starts and ends in it, and its line number; ``count``
    lines in all, blank ones included."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    count: int = 0


def _cut(window: _Window, start: int, line: int) -> tuple[int, _Lines]:
    """The end of the chunk ``jsonl_chunks`` makes from ``start`` (line number ``line``), and its records."""
    rows, size = readers.CHUNK_ROWS, readers.CHUNK_BYTES  # read here, so tests may make chunks small
    out, pos, stop = _Lines(), start, window.end
    buf, base = window.buf, window.base
    while stop is None or pos < stop:
        j = buf.find(b"\n", pos - base)  # -1 too when pos is past the bytes read so far
        if j >= 0:
            end = base + j + 1
        elif window.starts_line(pos):
            end = window.line_end(pos)
            buf, base = window.buf, window.base
        else:
            break
        if buf[pos - base] == 0x7B or not _blank(window.take(pos, end), line + out.count):  # `{`
            out.starts.append(pos - start)
            out.ends.append(end - start)
            out.numbers.append(line + out.count)
        out.count += 1
        pos = end
        if out.numbers and out.numbers[-1] == line + out.count - 1 and (
                len(out.numbers) >= rows or pos - start >= size):
            break
    return pos, out


def _blank(raw: bytes, number: int) -> bool:
    return not (readers._without_bom(raw) if number == 1 else raw).strip()


def _one_object_a_line(body: bytes, starts: np.ndarray, ends: np.ndarray) -> bool:
    """Every line that ``starts`` and ``ends`` in ``body`` (the records; the lines between are
    blank) starts with ``{`` and ends with ``}`` (then LF or CRLF, or the end of the file)."""
    a = np.frombuffer(body, np.uint8)
    if (a[starts] != ord("{")).any():
        return False
    last = ends - 1 - (a[ends - 1] == ord("\n"))  # a line's last byte before its LF
    last -= a[last] == ord("\r")
    return bool((a[last] == ord("}")).all())


def _text(body: bytes) -> pa.Array | None:
    """``body`` as a one-value binary array when it is UTF-8 (which pyarrow's JSON reader does not
    check) without a surrogate escape; else None."""
    offsets = pa.py_buffer(np.array([0, len(body)], np.int64))
    view = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])
    try:
        view.view(pa.large_string()).validate(full=True)
    except pa.ArrowInvalid:
        return None
    return None if _found(view, SURROGATE) else view


def _found(text: pa.Array, pattern: str) -> bool:
    """RE2 (a pattern with a literal prefix scans ~10 GB/s) finds ``pattern`` in the one value of ``text``."""
    return pc.match_substring_regex(text, pattern)[0].as_py()


class _Parser:
    """pyarrow's JSON reader for one file. A key the format does not read is an error at first, so
    nothing goes unchecked; from the first chunk that has one, such keys are skipped, in chunks where
    what they hold cannot be something pyarrow accepts and ``json.loads`` refuses."""

    def __init__(self, schema: pa.Schema):
        self.schema, self.skip = schema, False

    def table(self, body: bytes, text: pa.Array, ends: np.ndarray) -> pa.Table | None:
        if not self.skip:
            try:
                return self._read(body, "error")
            except pa.ArrowInvalid as e:
                if "unexpected field" not in str(e):
                    return None
                self.skip = True
        if not _skippable(body, text, ends):
            return None
        try:
            return self._read(body, "ignore")
        except pa.ArrowInvalid:
            return None

    def _read(self, body: bytes, unexpected: str) -> pa.Table:
        return pj.read_json(pa.BufferReader(body),
                            read_options=pj.ReadOptions(use_threads=USE_THREADS, block_size=len(body) + 1),
                            parse_options=pj.ParseOptions(explicit_schema=self.schema,
                                                          unexpected_field_behavior=unexpected))


def _skippable(body: bytes, text: pa.Array, ends: np.ndarray) -> bool:
    """No ``Inf``, ``-Inf`` or ``-NaN`` value (pyarrow reads them, json.loads only ``Infinity``,
    ``-Infinity`` and ``NaN``) and no line with more ``[``/``{`` than half the recursion limit
    (json.loads follows nesting about as deep as the limit, 1000; pyarrow any depth)."""
    if _found(text, "-NaN") or _found(text, r"Inf[ \t\r\n]*[,\]}]") and _inf_value(body):
        return False
    a = np.frombuffer(body, np.uint8)
    opens = np.flatnonzero((a | 0x20) == ord("{"))  # `[` is 0x5b, `{` 0x7b
    limit = sys.getrecursionlimit() // 2
    return len(opens) <= limit or int(np.diff(np.searchsorted(opens, ends), prepend=0).max()) <= limit


def _inf_value(body: bytes) -> bool:
    """An ``Inf`` between `:`, `,` or `[` and `,`, `]` or `}` (", Infamous" is text), perhaps in a text."""
    at = body.find(b"Inf")
    while at >= 0:
        before = body[max(0, at - 64):at].rstrip(b"-").rstrip(b" \t\r\n")[-1:]  # b"" after 64 spaces
        after = body[at + 3:at + 67].lstrip(b" \t\r\n")[:1]
        if before in b":,[" and after in b",]}":
            return True
        at = body.find(b"Inf", at + 3)
    return False


def _batch(data: bytes, parser: _Parser, fmt: str, convert, name: str, lines: _Lines) -> pa.RecordBatch | None:
    """The canonical batch of the records of ``data``, or None when one is unusual."""
    skip = len(BOM) if lines.numbers[0] == 1 and data.startswith(BOM) else 0
    body = data[skip:]
    starts = np.maximum(np.array(lines.starts, np.int64) - skip, 0)  # line 1 starts after the BOM
    ends = np.array(lines.ends, np.int64) - skip
    if len(body) >= 1 << 31 or not _one_object_a_line(body, starts, ends) or (text := _text(body)) is None:
        return None
    table = parser.table(body, text, ends)
    if table is None or table.num_rows != len(ends):  # two records on a line
        return None
    columns = convert([table.column(i).combine_chunks() for i in range(table.num_columns)])
    if columns is None:
        return None
    schema = SCHEMAS[fmt]
    wheres = pa.array([f"{name}:{n}" for n in lines.numbers], pa.string())
    return pa.RecordBatch.from_arrays([columns[f.name] for f in list(schema)[:-1]] + [wheres], schema=schema)
