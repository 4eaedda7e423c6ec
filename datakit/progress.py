"""Progress: one bar over the input bytes, with documents/rows, tokens and output rows as counts."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, *, total: int, silent: bool, sft: bool):
        self.silent = silent
        self.sft = sft
        self._last = 0.0
        self._counts = None
        self.bar = None
        if not silent:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                            desc="build", dynamic_ncols=True, leave=True)

    def advance(self, nbytes: int) -> None:
        if self.bar is not None and nbytes:
            self.bar.update(nbytes)

    def update_counts(self, *, read: int, tokens: int, written: int) -> None:
        """Show rows read, tokens read and rows written, at most every 0.2 s; ``close`` shows the
        last ones given."""
        if self.bar is None:
            return
        self._counts = (read, tokens, written)
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        self._show(read, tokens, written)

    def _show(self, read: int, tokens: int, written: int) -> None:
        label = "rows" if self.sft else "blocks"
        self.bar.set_postfix_str(f"{'rows in' if self.sft else 'docs'}={read:,} tokens={tokens:,} "
                                 f"{label}={written:,}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            if self._counts is not None:
                self._show(*self._counts)
            self.bar.close()

    def writing(self, total: int):
        """A second bar for gathering the splits into their Arrow files (rows written)."""
        if self.silent:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit=" rows", desc="write", file=sys.stderr, dynamic_ncols=True, leave=True)
