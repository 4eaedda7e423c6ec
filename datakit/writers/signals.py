"""SIGINT and SIGTERM while a build is staged (``atomic.staged_output``): SIGTERM stops a build the
way Ctrl-C does, and ``held()`` defers both while the stage is swapped into place."""
from __future__ import annotations

import contextlib
import signal
import threading


class BuildSignals:
    """SIGINT/SIGTERM handling while a build is staged: SIGTERM stops the build like Ctrl-C, and
    during the swap both are held back until it is done, so a swap is never cut by a signal
    (only by SIGKILL, which the journal covers)."""

    def __init__(self):
        self.main = threading.current_thread() is threading.main_thread()
        self.saved = {}
        self.pending: int | None = None

    def __enter__(self):
        if self.main:
            self.saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt("terminated")

    def _hold(self, signum, frame):
        self.pending = signum

    @contextlib.contextmanager
    def held(self):
        if self.main:
            for s in self.saved:
                signal.signal(s, self._hold)
        try:
            yield
        finally:
            if self.main:
                signal.signal(signal.SIGINT, self.saved[signal.SIGINT])
                signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc):
        if self.main:
            for s, handler in self.saved.items():
                signal.signal(s, handler)
