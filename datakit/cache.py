"""The tokenized-rows cache: a source's rows after the steps up to ``tokenize``, kept by content.

An entry is keyed by sha256 over (see ``source_key``): the bytes of the source's input files, the
source's own options (format, columns, document_separator), the steps up to and including
``tokenize`` (their effective options and the chat template's text), the tokenizer's fingerprint
(its files) and datakit's version. Nothing else: not the output path, the cwd, the source's
weight or repeat, the split, the steps after tokenize, nor the order of keys in the recipe.

An entry is a folder ``entries/ab/abcdef...`` holding ``rows.arrow`` (the rows as an Arrow IPC
stream, split groups relative to the source's first row) and ``entry.json`` (the sha256 of
``rows.arrow``, the files read, the records read and each cached step's counts). It is written in
a temporary folder and renamed into place, so it appears whole or not at all; one whose
``rows.arrow`` does not match its sha256 is removed and rebuilt. Using an entry touches its
mtime; past the size limit, the least recently used entries go first.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from . import __version__
from .errors import DatakitError

FORMAT = 1  # the entries' layout; a change makes every old entry miss
CACHE_DIR_ENV = "DATAKIT_CACHE_DIR"
CACHE_SIZE_ENV = "DATAKIT_CACHE_SIZE"
DEFAULT_SIZE = 20 * 10**9  # bytes: 20 GB, ~25 builds of the 32 MB corpus' size ten times over
ROWS, ENTRY = "rows.arrow", "entry.json"
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12}


def default_dir() -> Path:
    """``$DATAKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/datakit``, else ``~/.cache/datakit``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "datakit"


def parse_size(text: str | int) -> int:
    """``"20GB"``, ``"500 MB"``, ``"1e9"`` or an int -> bytes (powers of ten)."""
    s = str(text).strip().lower().replace(" ", "")
    digits = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(digits):]
    try:
        size = float(digits) * _UNITS[unit]
    except (KeyError, ValueError):
        size = float("nan")
    if not 0 <= size < float("inf"):
        raise DatakitError(f"cache size {text!r} is not a size (e.g. 20GB, 500MB, 0 to keep nothing)") from None
    return int(size)


def human_size(n: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of ten, like ``parse_size``)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def default_size() -> int:
    return parse_size(os.environ[CACHE_SIZE_ENV]) if os.environ.get(CACHE_SIZE_ENV) else DEFAULT_SIZE


def canonical(value) -> bytes:
    """Canonical JSON: sorted keys, no spaces, so the order of keys in a recipe never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def inputs_sha256(paths: list[Path]) -> list[str]:
    """sha256 of each input file, in reading order; a dataset folder hashes its files by name."""
    out = []
    for p in paths:
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                h.update(f.relative_to(p).as_posix().encode() + b"\0" + file_sha256(f).encode())
            out.append(h.hexdigest())
        else:
            out.append(file_sha256(p))
    return out


def source_key(*, files: list[str], source: dict, steps: list[dict], tokenizer: str) -> str:
    """The key of one source's cached rows (see the module's docstring)."""
    return hashlib.sha256(canonical({
        "format": FORMAT, "datakit": __version__, "files": files, "source": source,
        "steps": steps, "tokenizer": tokenizer})).hexdigest()


def step_description(step, recipe_entry: dict) -> dict:
    """What a cached step's output depends on: its class, its effective options (tokenize's
    cutoff_len may come from pack) and its recipe entry."""
    options = getattr(step, "options", None)
    return {"step": type(step).__name__, "recipe": recipe_entry,
            "options": asdict(options) if is_dataclass(options) else None}


@dataclass
class Entry:
    """A verified entry: its rows (Arrow IPC stream in memory) and what was recorded with them."""

    path: Path
    meta: dict
    data: pa.Buffer = field(repr=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as written: one IPC stream per run of batches with one schema."""
        starts = self.meta.get("streams", [0])
        for start, stop in zip(starts, [*starts[1:], self.data.size]):
            yield from pa.ipc.open_stream(self.data.slice(start, stop - start))


class Cache:
    """Entries under ``root`` (``default_dir()``), at most ``max_bytes`` in all."""

    def __init__(self, root: str | Path | None = None, *, max_bytes: int | None = None):
        self.root = Path(root).expanduser() if root is not None else default_dir()
        self.max_bytes = default_size() if max_bytes is None else max_bytes

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    def path(self, key: str) -> Path:
        return self.entries_dir / key[:2] / key

    def load(self, key: str) -> Entry | None:
        """The entry for ``key``, or None; a damaged entry (unreadable, wrong checksum) is removed."""
        path = self.path(key)
        if not path.is_dir():
            return None
        try:
            meta = json.loads((path / ENTRY).read_text("utf-8"))
            raw = (path / ROWS).read_bytes()
            ok = meta.get("format") == FORMAT and hashlib.sha256(raw).hexdigest() == meta["sha256"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            if _own(path, True):
                shutil.rmtree(path, ignore_errors=True)
            return None
        try:
            os.utime(path)  # used now: the last to be evicted
        except OSError:
            pass
        return Entry(path=path, meta=meta, data=pa.py_buffer(raw))

    def writer(self, key: str) -> EntryWriter:
        return EntryWriter(self, key)

    def entries(self) -> list[tuple[Path, int, float]]:
        """Every entry: (folder, bytes, last use), least recently used first. Only folders laid out
        as entries are (``entries/ab/ab<62 hex>`` holding nothing but its files): whatever else a
        user put there is never counted, evicted nor cleared."""
        out = []
        if self.entries_dir.is_dir():
            for path in self.entries_dir.glob("*/*"):
                if not _own(path, _KEY.fullmatch(path.name) is not None and path.name[:2] == path.parent.name):
                    continue
                try:
                    size = sum(f.stat().st_size for f in path.iterdir())
                    out.append((path, size, path.stat().st_mtime))
                except OSError:
                    continue
        return sorted(out, key=lambda e: e[2])

    def info(self) -> dict:
        entries = self.entries()
        return {"location": str(self.root), "entries": len(entries), "bytes": sum(e[1] for e in entries),
                "max_bytes": self.max_bytes}

    def clear(self) -> dict:
        """Remove every entry (and unfinished writes); returns what was removed. Folders the cache
        did not lay out stay, and so do the folders holding them."""
        before = self.info()
        for path, _, _ in self.entries():
            shutil.rmtree(path, ignore_errors=True)
        tmp = self.root / "tmp"
        for path in tmp.iterdir() if tmp.is_dir() else ():
            if _own(path, _WRITING.fullmatch(path.name) is not None):
                shutil.rmtree(path, ignore_errors=True)
        for folder in [*(self.entries_dir.iterdir() if self.entries_dir.is_dir() else ()), self.entries_dir, tmp]:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        return before

    def evict(self) -> int:
        """Remove least recently used entries until the cache fits ``max_bytes``; returns how many.
        A build evicts when it has read its sources, whose entries are then the most recent."""
        entries = self.entries()
        total = sum(e[1] for e in entries)
        removed = 0
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed += 1
        return removed


_KEY = re.compile(r"[0-9a-f]{64}")  # an entry's folder: its key
_WRITING = re.compile(r"[0-9a-f]{16}\.[A-Za-z0-9_]+")  # an unfinished write: tempfile.mkdtemp(prefix=key[:16] + ".")


def _own(path: Path, named: bool) -> bool:
    """Whether ``path`` is a folder the cache made: named as it names them, holding only its files."""
    if not named or path.is_symlink() or not path.is_dir():
        return False
    try:
        return all(f.name in (ROWS, ENTRY) and f.is_file() and not f.is_symlink() for f in path.iterdir())
    except OSError:
        return False


class _HashingFile:
    """A file written once, front to back, that hashes what it is given: an entry's sha256 is
    ready when its rows are (reading 140 MB of rows back took ~0.1 s at the end of a chat build)."""

    def __init__(self, path: Path):
        self.raw = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.position = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        n = self.raw.write(data)
        self.position += n
        return n

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed


class EntryWriter:
    """Rows of one entry as they are made; ``commit`` puts them into place, ``abort`` drops them."""

    def __init__(self, cache: Cache, key: str):
        self.cache, self.key = cache, key
        (cache.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{key[:16]}.", dir=cache.root / "tmp"))
        self._file = _HashingFile(self.folder / ROWS)
        self._sink = pa.PythonFile(self._file, mode="w")
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self.streams: list[int] = []  # where each stream starts: batches of another schema start one

    def write(self, batch: pa.RecordBatch) -> None:
        if self._stream is None or batch.schema != self._schema:
            if self._stream is not None:
                self._stream.close()
            self.streams.append(self._sink.tell())
            self._stream = pa.ipc.new_stream(self._sink, batch.schema)
            self._schema = batch.schema
        self._stream.write_batch(batch)

    def commit(self, meta: dict) -> None:
        if self._stream is not None:
            self._stream.close()
        self._sink.close()
        meta = {"format": FORMAT, "sha256": self._file.sha256.hexdigest(), "created": time.time(),
                "streams": self.streams, **meta}
        (self.folder / ENTRY).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        target = self.cache.path(self.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.folder, target)
        except OSError:  # another build stored the same entry first: keep theirs
            shutil.rmtree(self.folder, ignore_errors=True)

    def abort(self) -> None:
        try:
            if self._stream is not None:
                self._stream.close()
            self._sink.close()
        except (OSError, pa.ArrowException):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def rebase(batch: pa.RecordBatch, *, source: int | None, shift: int, where: Callable[[str], str] | None = None
           ) -> pa.RecordBatch:
    """``batch`` with ``_source = source`` (None: as it is), split groups shifted by ``shift`` (-1,
    no group, stays) and, with ``where``, its ``_where`` mapped (an input moved since the entry was
    made). The batch itself when nothing changes: the first source's rows go into the cache as they are."""
    if source is None and not shift and where is None:
        return batch
    names = batch.schema.names
    cols = list(batch.columns)
    if "_source" in names and source is not None:
        cols[names.index("_source")] = pa.array(np.full(batch.num_rows, source, np.int32), pa.int32())
    if "_group" in names and shift:
        g = batch.column("_group").to_numpy(zero_copy_only=False)
        cols[names.index("_group")] = pa.array(np.where(g >= 0, g + shift, g), pa.int64())
    if "_where" in names and where is not None:
        cols[names.index("_where")] = pa.array([where(w) for w in batch.column("_where").to_pylist()], pa.string())
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


__all__ = ["CACHE_DIR_ENV", "CACHE_SIZE_ENV", "DEFAULT_SIZE", "Cache", "Entry", "EntryWriter", "canonical",
           "default_dir", "human_size", "inputs_sha256", "parse_size", "rebase", "source_key", "step_description"]
