"""Readable token pieces that never lie about the ids.

Every token is turned into the bytes it stands for: SentencePiece/Metaspace pieces (``▁`` is a
space, ``<0xNN>`` is one byte) and GPT-2 byte-level pieces (``Ġ`` is a space, ``ä¸`` are two
bytes). Runs of tokens that only together make a character (a CJK character as three byte tokens)
become one ``Piece`` that shows the character and says how many tokens made it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .columns import IGNORE_INDEX
from .tokenization.surface import token_bytes


@dataclass
class Piece:
    """One shown unit: ``text`` made by the tokens ``positions`` (ids ``ids``), all with one label state."""

    text: str
    positions: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    trained: bool = False
    special: bool = False
    padding: bool = False
    partial: bool = False  # bytes that do not form a whole character on their own


def visible(text: str) -> str:
    """White space a reader can see: newline as ↵ (then a real line break), tab as →."""
    return text.replace("\t", "→").replace("\r", "␍").replace("\n", "↵\n")


def pieces(ids, labels, attention, *, id_to_piece, special_ids: set[int], byte_level: bool) -> list[Piece]:
    out: list[Piece] = []
    pending: list[tuple[int, int, bytes, bool]] = []  # (position, id, bytes, trained)

    def flush_pending():
        while pending:
            # the longest prefix run with one label state that decodes as UTF-8
            state = pending[0][3]
            run = []
            for item in pending:
                if item[3] != state:
                    break
                run.append(item)
            for k in range(len(run), 0, -1):
                raw = b"".join(x[2] for x in run[:k])
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                out.append(Piece(text, [x[0] for x in run[:k]], [x[1] for x in run[:k]], trained=state))
                del pending[:k]
                break
            else:
                x = pending.pop(0)
                out.append(Piece("".join(f"<0x{b:02X}>" for b in x[2]), [x[0]], [x[1]], trained=x[3], partial=True))

    for pos, (tid, lab, att) in enumerate(zip(ids, labels, attention)):
        tid = int(tid)
        trained = int(lab) != IGNORE_INDEX
        if not att or tid in special_ids:
            flush_pending()
            out.append(Piece(id_to_piece(tid), [pos], [tid], trained=trained, special=True, padding=not att))
            continue
        raw = token_bytes(id_to_piece(tid), byte_level=byte_level)
        try:
            text = raw.decode("utf-8")
            if pending:
                raise UnicodeDecodeError("utf-8", raw, 0, 1, "joins a pending character")
        except UnicodeDecodeError:
            pending.append((pos, tid, raw, trained))
            flush_pending_if_complete(pending, out)
            if len(pending) > 4:  # no UTF-8 character takes more than 4 bytes
                flush_pending()
            continue
        out.append(Piece(text, [pos], [tid], trained=trained))
    flush_pending()
    return out


def flush_pending_if_complete(pending: list, out: list[Piece]) -> None:
    """Emit the pending byte tokens once they decode as a whole (a complete character)."""
    raw = b"".join(x[2] for x in pending)
    states = {x[3] for x in pending}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    if len(states) == 1:
        out.append(Piece(text, [x[0] for x in pending], [x[1] for x in pending], trained=states.pop()))
        pending.clear()
