"""Where a built row came from, for ``inspect --row`` and the HTML page: its provenance file's
pieces (``writers/provenance.py``) as lines, followed through build sources (``format: build``)
to the files those builds read, while the source builds are still where they were."""
from __future__ import annotations

from pathlib import Path

from .inspect_open import Build
from .writers.provenance import provenance_file, read_pieces

MAX_DEPTH = 8  # builds of builds: a chain longer than this is cut (a loop cannot happen, but a long chain can)


def where_text(piece: dict) -> str:
    """``file:line`` or ``file: row N``, as datakit's errors name records."""
    if piece.get("line") is not None:
        return f"{piece['input']}:{piece['line']}"
    return f"{piece['input']}: row {piece['record']}"


def provenance_lines(build: Build, split: str, index: int) -> list[str]:
    """One line per piece of the row (a packed row or a block has several: their token ranges),
    each followed by the chain through source builds (``<- ...``)."""
    pieces = read_pieces(build.path, split, index)
    if pieces is None:
        return ["from: not recorded (this build has no provenance/ folder: built by an earlier datakit "
                "or another engine)"]
    length = len(build.row(split, index)["input_ids"])
    names = [s.get("name") for s in build.manifest.get("sources", [])]
    several = len(pieces) > 1 or "seq_lens" in build.table(split).column_names
    lines = []
    for k, p in enumerate(pieces):
        end = pieces[k + 1]["start"] if k + 1 < len(pieces) else length
        head = f"tokens {p['start']}..{end - 1}: " if several else ""
        name = names[p["source"]] if p["source"] < len(names) else p["source"]
        tail = f" (from its token {p['offset']})" if p["offset"] else ""
        lines.append(f"from: {head}{where_text(p)}{tail}  [source {name}, split group {p['group']}]")
        lines += [f"      <- {line}" for line in _chain(p)]
    return lines


def _chain(piece: dict, depth: int = 0) -> list[str]:
    """The pieces of a build source's row, in the build it was read from (``build/a/train: row N``)."""
    split_folder = Path(piece["input"])
    build, split = split_folder.parent, split_folder.name
    if piece.get("record") is None or depth >= MAX_DEPTH or not provenance_file(build, split).is_file():
        return []
    out = []
    for p in read_pieces(build, split, piece["record"]) or []:
        tail = f" (from its token {p['offset']})" if p["offset"] else ""
        out.append(where_text(p) + tail)
        out += _chain(p, depth + 1)
    return out


__all__ = ["provenance_lines", "where_text"]
