"""Atomic output: a build is written to a hidden stage beside the target and swapped into place.

Names beside an output ``NAME`` (all made by datakit, matched exactly, never by a pattern):

- ``.NAME.datakit-stage-<12 hex>``: a build in progress. Its file ``.datakit-stage`` is locked
  (``flock``) by the build for as long as it runs, so a stage whose lock can be taken belongs to a
  dead build, whatever PID namespace or host it ran in, and is removed by the next build.
- ``.NAME.datakit-swap``: the journal of a swap in progress; it names the two folders below.
- ``.NAME.datakit-old-<12 hex>``: the earlier build, between its two renames.

The swap writes the journal, renames ``NAME`` to the old name, renames the stage to ``NAME``,
removes the old build and then the journal. At every instant ``NAME`` holds the complete old build
or the complete new one, except between the two renames, when the journal says where the old one
is: the next build (or ``recover``) puts it back. Swaps and cleanups in one folder take turns
under a ``flock`` on that folder.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from ..errors import OutputError
from .signals import BuildSignals
from .target import MANIFEST, _real, check_target

STAGE, OLD, JOURNAL, PART = "datakit-stage", "datakit-old", "datakit-swap", "datakit-part"
MARKER = ".datakit-stage"  # inside a stage; its flock says the build is alive
_TOKEN = re.compile(r"[0-9a-f]{12}")
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}
log = logging.getLogger("datakit")

__all__ = ["MANIFEST", "StagedFile", "staged_output", "recover", "check_target"]


def _name(target: Path, kind: str, token: str | None = None) -> Path:
    return target.parent / (f".{target.name}.{kind}-{token}" if token else f".{target.name}.{kind}")


def _ours(target: Path, kind: str) -> list[Path]:
    """The entries beside ``target`` named exactly ``.NAME.kind-<12 hex>``."""
    prefix = f".{target.name}.{kind}-"
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    return [target.parent / n for n in sorted(names)
            if n.startswith(prefix) and _TOKEN.fullmatch(n[len(prefix):])]


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Swaps and cleanups of the outputs in ``folder`` take turns (an exclusive flock on it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a filesystem without flock: run unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _remove_stage(stage: Path) -> None:
    """Remove a stage, its marker last: a removal cut short leaves a stage that is still
    recognisably ours (marker present, lock free), which the next build removes."""
    if not stage.is_dir():
        return
    for entry in stage.iterdir():
        if entry.name != MARKER:
            _rmtree(entry)
    (stage / MARKER).unlink(missing_ok=True)
    stage.rmdir()


def _remove_dead_stage(stage: Path) -> None:
    try:
        fd = os.open(stage / MARKER, os.O_RDWR)
    except FileNotFoundError:
        # A stage is made with its marker under the folder lock, which the caller holds: an
        # empty stage without one was left by a removal cut short. A full one is not provably ours.
        with contextlib.suppress(OSError):
            stage.rmdir()
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a live build (in any process namespace) owns it
        os.close(fd)
        return
    try:
        _remove_stage(stage)
    finally:
        os.close(fd)


def _read_journal(target: Path) -> dict[str, Path | None]:
    try:
        entry = json.loads(_name(target, JOURNAL).read_text("utf-8"))
    except (OSError, ValueError):
        entry = {}
    out: dict[str, Path | None] = {}
    for key, kind in (("old", OLD), ("stage", STAGE)):
        token = entry.get(key) if isinstance(entry, dict) else None
        out[key] = _name(target, kind, token) if isinstance(token, str) and _TOKEN.fullmatch(token) else None
    return out


def _recover(target: Path) -> str | None:
    """Finish or undo a swap that a killed build left half done (the caller holds the folder lock)."""
    journal, torn = _name(target, JOURNAL), _name(target, JOURNAL + ".tmp")
    if os.path.lexists(torn):  # (unlink(missing_ok=True) would still fail on a read-only folder)
        torn.unlink()
    if not journal.exists():
        return None
    entry = _read_journal(target)
    note = None
    old, stage = entry["old"], entry["stage"]
    if old is not None and old.exists():
        if not os.path.lexists(target):
            os.rename(old, target)
            note = f"restored the earlier build at {target}: a build was stopped while replacing it"
        else:  # the new build is in place; the old one was being removed
            _rmtree(old)
    if stage is not None:
        _rmtree(stage)
    journal.unlink()
    return note


def recover(target: str | Path) -> str | None:
    """Repair what a killed build left beside ``target``: finish or undo an interrupted swap and
    remove the stages of dead builds. Returns a note when it restored an earlier build."""
    real = _real(target)
    if not real.parent.is_dir():
        return None
    with _folder_lock(real.parent):
        note = _recover(real)
        for stage in _ours(real, STAGE):
            _remove_dead_stage(stage)
    return note


def _write_journal(target: Path, old: Path | None, stage: Path) -> None:
    journal, tmp = _name(target, JOURNAL), _name(target, JOURNAL + ".tmp")
    data = {"target": target.name, "stage": stage.name.rsplit("-", 1)[1],
            "old": old.name.rsplit("-", 1)[1] if old else None}
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, journal)
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # not every filesystem syncs folders
            os.fsync(fd)
    finally:
        os.close(fd)


def _record_files(stage: Path) -> None:
    """List the build's top-level entries in its manifest (``layout``), so that only a folder
    holding nothing else counts as a build that may be replaced."""
    path = stage / MANIFEST
    if not path.is_file():
        return
    manifest = json.loads(path.read_text("utf-8"))
    manifest["layout"] = sorted(n for n in os.listdir(stage) if n != MARKER)
    tmp = stage / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _swap(stage: Path, target: Path) -> Path | None:
    """Put ``stage`` at ``target`` (the caller holds the folder lock) and return where the earlier
    build went (None: there was none). A failed rename is undone before the error is raised."""
    old = _name(target, OLD, uuid.uuid4().hex[:12]) if os.path.lexists(target) else None
    _write_journal(target, old, stage)
    os.unlink(stage / MARKER)  # the journal names the stage from here on
    moved = False
    try:
        if old is not None:
            os.rename(target, old)
            moved = True
        os.rename(stage, target)
    except BaseException:
        with contextlib.suppress(OSError):  # if this fails too, the journal lets the next build undo it
            if moved:
                os.rename(old, target)
            os.unlink(_name(target, JOURNAL))
        raise
    _fsync_folder(target.parent)
    return old


def _discard(target: Path, old: Path | None) -> None:
    """Remove the earlier build, then the journal. A failure only leaves them for the next build."""
    try:
        if old is not None:
            _rmtree(old)
        os.unlink(_name(target, JOURNAL))
    except OSError as e:
        log.warning(f"could not remove the earlier build {old} ({e.strerror or e}); the next build "
                    f"into {target} removes it")


def _write_error(e: OSError, stage: Path, target: Path, kept: str) -> OutputError | None:
    """An OSError from writing the stage (full disk, read-only, quota...) as one line, or None."""
    text = str(e)
    code = e.errno if e.errno is not None else next(
        (c for c in _WRITE_ERRNOS if os.strerror(c) in text), None)
    name = e.filename if isinstance(e.filename, (str, os.PathLike)) else None
    inside = name is not None and str(stage) in os.path.abspath(str(name))
    if code not in _WRITE_ERRNOS and not inside:
        return None
    reason = os.strerror(code) if code in _WRITE_ERRNOS else (e.strerror or text)
    where = f" ({os.path.relpath(str(name), target.parent)})" if inside else ""
    return OutputError(f"{target}: cannot write the build: {reason}{where}; {kept}")


def _make_stage(target: Path) -> tuple[Path, int]:
    stage = _name(target, STAGE, uuid.uuid4().hex[:12])
    stage.mkdir()
    fd = -1
    try:
        fd = os.open(stage / MARKER, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    except BaseException:  # SIGTERM or Ctrl-C right after the mkdir: the stage goes with the build
        if fd >= 0:
            os.close(fd)
        _remove_stage(stage)
        raise
    return stage, fd


@contextlib.contextmanager
def staged_output(target: str | Path, *, overwrite: bool, protect: Iterable[tuple[str, str | Path]] = ()):
    """Yield a stage folder to write a build into; when the block ends without an error the stage
    replaces ``target`` (see the module docstring), otherwise it is removed and ``target`` is
    left as it was.

    ``target`` is checked before anything is written (``check_target``; ``protect`` lists the
    ``(what, path)`` pairs it may not hold), and again just before the swap.

    Raises:
        OutputError: the target may not be replaced, or cannot be written (read-only, full disk).
        KeyboardInterrupt: Ctrl-C or SIGTERM; its message says what became of ``target``.
    """
    given = Path(target)
    protect = list(protect)
    with BuildSignals() as signals:  # from here SIGTERM stops the build the way Ctrl-C does
        stage, lock_fd, real, kept = _open_stage(given, overwrite=overwrite, protect=protect, signals=signals)
        committed = False
        try:
            yield stage
            with _folder_lock(real.parent):
                check_target(given, overwrite=overwrite, protect=protect)
                _record_files(stage)
                with signals.held():
                    old = _swap(stage, real)
                    committed = True
                    _discard(real, old)
            if signals.pending is not None:
                raise KeyboardInterrupt(f"interrupted after the new build was in place at {given}")
        except KeyboardInterrupt as e:
            if committed:
                raise
            _remove_stage(stage)
            raise KeyboardInterrupt(f"interrupted; {kept}") from e
        except OSError as e:
            if committed:
                raise
            _remove_stage(stage)
            error = _write_error(e, stage, real, kept)
            if error is None:
                raise
            raise error from e
        except BaseException:
            if not committed:
                _remove_stage(stage)
            raise
        finally:
            os.close(lock_fd)


def _open_stage(given: Path, *, overwrite: bool, protect: list, signals: BuildSignals) -> tuple[Path, int, Path, str]:
    """Recover what a killed build left, check the target, make the locked stage (Ctrl-C and
    SIGTERM held back meanwhile, so no half-made stage is left); returns the stage, its lock fd,
    the real target and what a failure leaves of the target (for messages)."""
    real = _real(given)
    kept = "nothing was written"
    try:
        note = recover(real)
        if note:
            log.warning(note)
        real = check_target(given, overwrite=overwrite, protect=protect)
        kept = f"{given} is untouched" if os.path.lexists(real) else f"nothing was written to {given}"
        real.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(real.parent), signals.held():
            stage, lock_fd = _make_stage(real)
    except OSError as e:
        raise OutputError(f"{given}: cannot write in {real.parent}: {e.strerror or e}; {kept}") from None
    except KeyboardInterrupt as e:  # before the stage: nothing to remove
        raise KeyboardInterrupt(f"interrupted; {kept}") from e
    if signals.pending is not None:  # while the stage was made
        signals.pending = None
        os.close(lock_fd)
        _remove_stage(stage)
        raise KeyboardInterrupt(f"interrupted; {kept}")
    return stage, lock_fd, real, kept


class StagedFile:
    """A text file written under a locked temporary name beside ``dest`` (``.NAME.datakit-part-<12 hex>``)
    and moved onto ``dest`` by ``commit``. Nothing is created until ``open``. Temporary files of
    builds that died (their lock can be taken) are removed when the next one opens.
    """

    def __init__(self, dest: str | Path):
        self.dest = _real(dest)
        self.tmp: Path | None = None
        self.file = None

    def open(self):
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        for part in _ours(self.dest, PART):
            with contextlib.suppress(OSError), open(part, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                part.unlink()
        self.tmp = _name(self.dest, PART, uuid.uuid4().hex[:12])
        self.file = open(self.tmp, "x", encoding="utf-8")
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        return self.file

    def commit(self) -> None:
        """Move the file onto ``dest`` (an empty file if nothing was written)."""
        if self.file is None:
            self.open()
        self.file.close()
        os.replace(self.tmp, self.dest)
        self.file = self.tmp = None

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            self.file = self.tmp = None
