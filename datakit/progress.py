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

    def update_counts(self, steps, *, rows: int) -> None:
        """Show the counts, at most every 0.2 s; ``close`` shows the last ones given."""
        if self.bar is None:
            return
        self._counts = (steps, rows)
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        self._show(steps, rows)

    def _show(self, steps, rows: int) -> None:
        docs = sum(s.stats.get("documents_read", 0) + s.stats.get("rows_read", 0) for s in steps)
        tokens = sum(s.stats.get("tokens_read", 0) for s in steps)
        label = "rows" if self.sft else "blocks"
        self.bar.set_postfix_str(f"{'rows in' if self.sft else 'docs'}={docs:,} tokens={tokens:,} "
                                 f"{label}={rows:,}", refresh=False)

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
