"""Best-fit decreasing bin packing of row lengths, vectorised over rows of equal length.

``best_fit_decreasing`` gives exactly the packs of the textbook one-row-at-a-time BFD (and of
TRL's ``pack_dataset(strategy="bfd")``): rows sorted by length, longest first (a stable sort, so
equal lengths keep their input order); each row goes into the open pack with the least free room
that still holds it, the oldest such pack on a tie; a new pack opens when none does.

Processing equal lengths together is what makes it fast. While rows of length ``s`` are placed,
the pack with the least room ``c >= s`` takes one; its room becomes ``c - s``, the least again if
still ``>= s`` (every pack with room in ``[s, c)`` was already filled below ``s``), so it takes
``c // s`` rows in a row. A whole level of packs with room ``c`` is therefore filled at once, and a
size costs a few NumPy calls per level of room it visits instead of a tree search per row: 1M
rows pack in well under a second (bench/run.py measures it).
"""
from __future__ import annotations

from collections import deque

import numpy as np


class _Levels:
    """Open packs grouped by free room; each level is FIFO (oldest pack first)."""

    def __init__(self, block_size: int):
        self.chunks: list[deque] = [deque() for _ in range(block_size)]
        self.count = np.zeros(block_size, dtype=np.int64)

    def push(self, room: int, packs: np.ndarray) -> None:
        if room > 0 and len(packs):  # a full pack is never searched again
            self.chunks[room].append(packs)
            self.count[room] += len(packs)

    def pop(self, room: int, n: int) -> np.ndarray:
        """The ``n`` oldest packs with this room."""
        queue, out, need = self.chunks[room], [], n
        while need:
            head = queue[0]
            if len(head) <= need:
                out.append(queue.popleft())
                need -= len(head)
            else:
                out.append(head[:need])
                queue[0] = head[need:]
                need = 0
        self.count[room] -= n
        return out[0] if len(out) == 1 else np.concatenate(out)


def best_fit_decreasing(lengths: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack rows of ``lengths`` (each 1..block_size) into packs of at most ``block_size`` tokens.

    Returns ``(order, rows_per_pack)``: the row indices pack by pack (packs in the order they were
    opened, rows in the order they were placed), and how many rows each pack holds.

    Example:
        >>> best_fit_decreasing(np.array([3, 1, 2, 4]), 5)
        (array([3, 1, 0, 2]), array([2, 2]))
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if lengths.min() < 1 or lengths.max() > block_size:
        raise ValueError(f"row lengths must be within 1..{block_size} (got {lengths.min()}..{lengths.max()})")
    order = np.argsort(-lengths, kind="stable")
    sizes, firsts, counts = np.unique(-lengths[order], return_index=True, return_counts=True)
    levels = _Levels(block_size)
    placed_rows, placed_packs = [], []
    n_packs = 0
    for neg, first, k in zip(sizes.tolist(), firsts.tolist(), counts.tolist()):
        s = -neg
        rows = order[first:first + k]
        done = 0
        for room in (np.flatnonzero(levels.count[s:]) + s).tolist():
            take = min(levels.count[room], -(-(k - done) // (room // s)))
            packs = levels.pop(room, take)
            done += _fill(packs, room, s, rows[done:], levels, placed_rows, placed_packs)
            if done == k:
                break
        if done < k:
            per = block_size // s
            new = np.arange(n_packs, n_packs + -(-(k - done) // per), dtype=np.int64)
            n_packs += len(new)
            _fill(new, block_size, s, rows[done:], levels, placed_rows, placed_packs)
    pack_of = np.concatenate(placed_packs)
    by_pack = np.argsort(pack_of, kind="stable")  # placement order within a pack
    return np.concatenate(placed_rows)[by_pack], np.bincount(pack_of, minlength=n_packs)


def _fill(packs: np.ndarray, room: int, s: int, rows: np.ndarray, levels: _Levels,
          placed_rows: list, placed_packs: list) -> int:
    """Give ``packs`` (all with ``room``) up to ``room // s`` rows of length ``s`` each, in order;
    the last may get fewer. Returns how many rows were placed."""
    per = room // s
    n = min(len(rows), len(packs) * per)
    placed_rows.append(rows[:n])
    placed_packs.append(np.repeat(packs, per)[:n])
    full, rest = divmod(n, per)
    levels.push(room - per * s, packs[:full])
    if rest:
        levels.push(room - rest * s, packs[full:full + 1])
    return n
