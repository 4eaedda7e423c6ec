"""Atomic output: a build is written to a hidden folder beside the target and renamed into place.

A failed or interrupted build removes its staging folder and leaves any earlier output as it
was; a staging folder left by a killed build (its process is gone) is removed by the next build.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from pathlib import Path

from ..errors import OutputError
from .manifest import MANIFEST


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(target: Path) -> None:
    for p in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def check_target(target: Path, *, overwrite: bool) -> None:
    if target.exists():
        if not overwrite:
            raise OutputError(f"{target} already exists; pass --overwrite to replace it")
        if target.is_file() or (any(target.iterdir()) and not (target / MANIFEST).is_file()):
            raise OutputError(f"{target} exists and is not a datakit build (no {MANIFEST}); "
                              f"refusing to replace it")


@contextlib.contextmanager
def staged_output(target: Path, *, overwrite: bool):
    """Yield a staging folder; on success it replaces ``target``, on any failure it is removed."""
    target = Path(target)
    check_target(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    stage = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum, frame):
        raise KeyboardInterrupt("terminated")

    in_main = True
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        in_main = False
    try:
        yield stage
        check_target(target, overwrite=overwrite)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        stage.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
