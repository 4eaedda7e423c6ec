"""JSON Lines through pyarrow's C++ JSON reader: ``read_jsonl``'s chunks, batches and errors, faster.

``readers.read_jsonl`` (one ``json.loads`` per line, under the GIL) stays the reference. This reader
cuts the file into the same chunks (CHUNK_ROWS records or CHUNK_BYTES bytes), parses a chunk with
``pyarrow.json.read_json`` (which releases the GIL) against the format's explicit schema, and checks
and converts it column by column (``arrow_formats``). A chunk goes through ``jsonl_chunks`` and
``formats.to_batch`` instead, which give the reference's result or error word for word, when
anything in it is unusual:

- a line that is not exactly one object, ``{`` to ``}`` (blank or whitespace-only lines, space around
  a record, two records on a line, a record over two lines: pyarrow reads each of those differently);
- invalid UTF-8 (pyarrow does not check it) or a ``\\uD800``-style surrogate escape;
- anything pyarrow rejects: malformed JSON, a key the format does not read (pyarrow would skip it
  without Python's checks: ``Inf`` and ``-NaN`` literals, nesting deeper than ``json.loads`` follows),
  a field of another type (content given as a list of parts), the same key twice;
- anything the converter rejects (nulls, missing fields, unknown roles, empty conversations).

A UTF-8 byte order mark on line 1 and CRLF line ends read fast. Measured on 2 cores (CPU seconds of
``read_source``, best of 3): 20,000 conversations (39 MB, ``messages``) 0.57 -> 0.?? s; 6,000 ``text``
documents (32 MB) 0.20 -> 0.?? s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from . import readers
from .arrow_formats import Plan, plan
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
        data = b"" if self.eof else self.f.read(WINDOW)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.keep - self.base:] + data
        self.base = self.keep
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
    name = str(path)
    pos, end, line = span if span is not None else (0, None, 1)
    with open(path, "rb") as f:
        f.seek(pos)
        window = _Window(f, pos, end)
        while window.starts_line(pos):
            window.keep = pos
            stop, ends = _cut(window, pos)
            data = window.take(pos, stop)
            batch = None if how is None else _batch(data, how, fmt, name, line, [e - pos for e in ends])
            if batch is not None:
                info._hash.update(data)
                chunk, count = Chunk([], [], stop - pos, batch), len(ends)
            else:  # the reference reads the chunk (which blank lines may make longer) and says what is wrong
                chunk = next(jsonl_chunks(window.lines(pos), name, info, line))
                stop = pos + chunk.nbytes
                count = window.take(pos, stop).count(b"\n")
            yield chunk
            pos, line = stop, line + count


def _cut(window: _Window, start: int) -> tuple[int, list[int]]:
    """The end of the chunk ``jsonl_chunks`` makes from ``start`` when no line is blank, and where
    each of its lines ends."""
    ends, pos = [], start
    rows, size = readers.CHUNK_ROWS, readers.CHUNK_BYTES  # read here, so tests may make chunks small
    while len(ends) < rows and pos - start < size and window.starts_line(pos):
        pos = window.line_end(pos)
        ends.append(pos)
    return pos, ends


def _one_object_a_line(body: bytes, ends: np.ndarray) -> bool:
    """Every line starts with ``{`` and ends with ``}`` (then LF or CRLF, or the end of the file);
    ``ends`` are where the lines end in ``body``."""
    a = np.frombuffer(body, np.uint8)
    if (a[np.concatenate([[0], ends[:-1]])] != ord("{")).any():
        return False
    last = ends - 1 - (a[ends - 1] == ord("\n"))  # a line's last byte before its LF
    last -= a[last] == ord("\r")
    return bool((a[last] == ord("}")).all())


def _valid_text(body: bytes) -> bool:
    """UTF-8 (which pyarrow's JSON reader does not check) without a surrogate escape."""
    offsets = pa.py_buffer(np.array([0, len(body)], np.int64))
    view = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])
    try:
        view.view(pa.large_string()).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return not pc.match_substring_regex(view, SURROGATE)[0].as_py()


def _batch(data: bytes, how: Plan, fmt: str, name: str, line: int, ends: list[int]) -> pa.RecordBatch | None:
    """The canonical batch of the lines of ``data`` (numbered from ``line``, ending at ``ends``, offsets
    in ``data``), or None when one is unusual."""
    skip = len(BOM) if line == 1 and data.startswith(BOM) else 0
    body = data[skip:]
    if not body.startswith(b"{") or not body.endswith((b"\n", b"}")) or len(body) >= 1 << 31 \
            or not _one_object_a_line(body, np.array(ends, np.int64) - skip) or not _valid_text(body):
        return None
    try:
        table = pj.read_json(pa.BufferReader(body),
                             read_options=pj.ReadOptions(use_threads=USE_THREADS, block_size=len(body) + 1),
                             parse_options=pj.ParseOptions(explicit_schema=how.schema,
                                                           unexpected_field_behavior="error"))
    except pa.ArrowInvalid:
        return None
    if table.num_rows != len(ends):  # two records on a line
        return None
    columns = how.convert([table.column(i).combine_chunks() for i in range(table.num_columns)])
    if columns is None:
        return None
    schema = SCHEMAS[fmt]
    wheres = pa.array([f"{name}:{n}" for n in range(line, line + len(ends))], pa.string())
    return pa.RecordBatch.from_arrays([columns[f.name] for f in list(schema)[:-1]] + [wheres], schema=schema)
