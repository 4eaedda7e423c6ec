"""One self-contained HTML page for a build: summary, length histograms (inline SVG) and rows with
trained and masked tokens colored. Nothing is loaded from the network: no scripts, fonts or links."""
from __future__ import annotations

import html
import os
from pathlib import Path

from .errors import DatakitError
from .inspect import (Build, histogram, packed_unit, packing_line, packing_stats, percentiles, segment_pieces,
                      segments, split_stats, summary_text)

CSS = """
body{font:14px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1d232a;padding:0 1rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
pre.summary{background:#f6f8fa;padding:1rem;overflow-x:auto;font-size:12px}
.row{font:13px/1.9 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;
 border:1px solid #e1e4e8;border-radius:6px;padding:.8rem;margin:.6rem 0}
.t{border-radius:3px;padding:1px 0;margin-right:1px}
.trained{background:#c8f0c8;color:#0b4f0b}.masked{background:#eceff3;color:#6a737d}
.special{font-weight:bold;outline:1px solid #b392f0}.pad{opacity:.5}.multi{text-decoration:underline dotted}
.legend span{margin-right:1rem}
table.turns{border-collapse:collapse;width:100%}table.turns td,table.turns th{border-top:1px solid #e1e4e8;padding:.3rem;vertical-align:top;text-align:left}
table.turns td.row{border:none;margin:0}
.boundary{display:block;margin:.5rem 0 .2rem;padding:0 .4rem;border-left:4px solid #0366d6;background:#f1f8ff;
 color:#0366d6;font:12px system-ui,sans-serif}
svg text{font:11px sans-serif;fill:#444}
"""


def _token_spans(build: Build, split: str, index: int) -> str:
    row = build.row(split, index)
    if "seq_lens" in row:
        return _packed_spans(build, row)
    return _pieces_html(build.pieces(row), row)


def _pieces_html(pieces, row: dict) -> str:
    return "".join(_span(p, row) for p in pieces)


def _span(p, row: dict) -> str:
    cls = ["t", "trained" if p.trained else "masked"]
    if p.special:
        cls.append("special")
    if p.padding:
        cls.append("pad")
    if len(p.ids) > 1:
        cls.append("multi")
    labels = [int(row["labels"][pos]) for pos in p.positions]
    title = f"pos {p.positions[0]}" + (f"-{p.positions[-1]}" if len(p.positions) > 1 else "")
    if "position_ids" in row:
        title += f" (position_id {int(row['position_ids'][p.positions[0]])})"
    title += f" · id {' '.join(map(str, p.ids))} · label {' '.join(map(str, labels))}"
    text = p.text.replace("\n", "↵\n").replace("\t", "→")
    return f'<span class="{" ".join(cls)}" title="{html.escape(title)}">{html.escape(text)}</span>'


def _packed_spans(build: Build, row: dict) -> str:
    """A packed row: a boundary marker before each packed row (its length and own positions)."""
    out = []
    n_rows = len(row["seq_lens"])
    for k, (a, b) in enumerate(segments(row)):
        label = (f"row {k + 1}/{n_rows} · {b - a} tokens · position_ids 0..{b - a - 1}" if k < n_rows
                 else f"padding · {b - a} tokens")
        out.append(f"<span class='boundary'>{html.escape(label)}</span>")
        out.append(_pieces_html(segment_pieces(build, row, a, b), row))
    return "".join(out)


def _svg_histogram(lengths) -> str:
    hist = histogram(lengths, bins=20)
    if not hist:
        return ""
    w, h, pad = 640, 160, 24
    top = max(c for _, _, c in hist) or 1
    bw = (w - 2 * pad) / len(hist)
    bars = []
    for k, (lo, hi, c) in enumerate(hist):
        bh = (h - 2 * pad) * c / top
        x, y = pad + k * bw, h - pad - bh
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="#79b8ff">'
                    f'<title>{lo}-{hi}: {c} rows</title></rect>')
    lo, hi = hist[0][0], hist[-1][1]
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="row lengths">'
            + "".join(bars) + f'<text x="{pad}" y="{h - 6}">{lo}</text>'
            f'<text x="{w - pad}" y="{h - 6}" text-anchor="end">{hi} tokens</text>'
            f'<text x="{pad}" y="14">max bucket {top} rows</text></svg>')


PAGE_START = "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>datakit inspect: "


def checked_path(path: str | Path, build: str | Path | None = None) -> Path:
    """``path`` as a Path, if a page can be written there: its folder exists, it is not a folder,
    not inside the ``build`` it shows, and not a file other than a page this command wrote."""
    out = Path(path)
    if not out.parent.is_dir():
        raise DatakitError(f"cannot write {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise DatakitError(f"cannot write {out}: it is a folder")
    if build is not None:
        inside = Path(os.path.realpath(build))
        if inside in Path(os.path.realpath(out)).parents:
            raise DatakitError(f"cannot write {out}: it is inside the build {build}; write the page beside it")
    if out.exists():
        try:
            with open(out, "rb") as f:
                head = f.read(len(PAGE_START.encode()))
        except OSError as e:
            raise DatakitError(f"cannot write {out}: {e.strerror}") from None
        if head and head != PAGE_START.encode():
            raise DatakitError(f"cannot write {out}: it exists and is not a page datakit inspect "
                               f"wrote; datakit replaces only files it wrote")
    return out


def write_html(build: Build, path: str | Path, rows: dict[str, list[int]]) -> Path:
    """Write the page to ``path``; ``rows`` names the rows shown per split."""
    out = checked_path(path, build.path)
    parts = [f"{PAGE_START}{html.escape(str(build.path))}</title><style>{CSS}</style></head><body>",
             f"<h1>datakit build <code>{html.escape(str(build.path))}</code></h1>",
             "<p class='legend'><span class='t trained'>trained token</span><span class='t masked'>masked (-100)</span>"
             "<span class='t masked special'>special</span><span class='t masked multi'>character made of several "
             "tokens</span> Hover a token for its position, id and label.</p>",
             f"<pre class='summary'>{html.escape(summary_text(build))}</pre>"]
    from .inspect_provenance import provenance_lines
    from .inspect_turns import layout

    turns_layout = layout(build)
    for name, table in build.splits.items():
        s = split_stats(table)
        pct = ", ".join(f"{k} {v}" for k, v in percentiles(s["lengths"]).items())
        parts.append(f"<h2>{html.escape(name)}: {s['rows']:,} rows</h2><p>lengths: {pct}</p>")
        packing = packing_stats(build, name)
        if packing:
            line = packing_line(packing, unit=packed_unit(build)).strip()
            parts.append(f"<p class='packing'>{html.escape(line)}</p>")
        parts.append(_svg_histogram(s["lengths"]))
        for i in rows.get(name, []):
            parts.append(f"<h3>{html.escape(name)} row {i}</h3><div class='row'>{_token_spans(build, name, i)}</div>")
            parts.append(f"<pre class='from'>{html.escape(chr(10).join(provenance_lines(build, name, i)))}</pre>")
            parts.append(_turns_html(build, name, i, turns_layout))
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _turns_html(build: Build, split: str, index: int, turns_layout) -> str:
    """The row turn by turn (inspect_turns.py): a table of role, tokens, trained tokens and the
    turn's tokens, then the counts per role."""
    from .inspect_turns import row_turns

    row = build.row(split, index)
    turns = row_turns(build, split, index, turns_layout)
    per_role: dict[str, list[int]] = {}
    body = []
    for k, t in enumerate(turns):
        counts = per_role.setdefault(t.role, [0, 0])
        counts[0] += t.tokens
        counts[1] += t.trained
        body.append(f"<tr><td>{k}</td><td>{html.escape(t.role)}</td><td>{t.tokens}</td><td>{t.trained}</td>"
                    f"<td class='row'>{_pieces_html(t.pieces, row)}</td></tr>")
    roles = ", ".join(f"{html.escape(r)} {a:,} tokens ({b:,} trained)" for r, (a, b) in per_role.items())
    return (f"<details><summary>turn by turn: {len(turns)} turns; {roles}</summary><table class='turns'>"
            f"<tr><th>turn</th><th>role</th><th>tokens</th><th>trained</th><th>tokens</th></tr>"
            + "".join(body) + "</table></details>")
