"""``inspect``: the summary, tokens and labels of a built folder, read lazily (memory-mapped Arrow).

Opening a build maps its Arrow files without reading them, so showing one row of a
million-row build reads that row only. The tokenizer named in the manifest turns ids into
readable pieces; when it cannot be found, ids are shown as they are.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from .columns import IGNORE_INDEX
from .errors import InspectError
from .inspect_open import Build, open_build
from .pieces import Piece, visible

__all__ = ["Build", "open_build"]  # opened here for inspect's callers


# ---------------------------------------------------------------- statistics

def split_stats(table: pa.Table) -> dict:
    ids = table.column("input_ids").combine_chunks() if table.num_rows else None
    if ids is None:
        return {"rows": 0, "tokens": 0, "supervised": 0, "lengths": np.zeros(0, np.int64)}
    lengths = np.diff(ids.offsets.to_numpy())
    labels = table.column("labels").combine_chunks().values.to_numpy()
    attention = table.column("attention_mask").combine_chunks().values.to_numpy()
    return {"rows": table.num_rows, "tokens": int(attention.sum()), "padding": int((attention == 0).sum()),
            "supervised": int((labels != IGNORE_INDEX).sum()), "lengths": lengths}


def histogram(lengths: np.ndarray, *, bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets over the row lengths."""
    if len(lengths) == 0:
        return []
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo == hi:
        return [(lo, hi, len(lengths))]
    bins = min(bins, hi - lo + 1)
    edges = np.unique(np.linspace(lo, hi + 1, bins + 1).round().astype(np.int64))
    counts, _ = np.histogram(lengths, bins=edges)
    return [(int(a), int(b) - 1, int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts)]


def percentiles(lengths: np.ndarray) -> dict:
    if len(lengths) == 0:
        return {}
    q = np.percentile(lengths, [50, 90, 99], method="lower")
    return {"min": int(lengths.min()), "p50": int(q[0]), "p90": int(q[1]), "p99": int(q[2]), "max": int(lengths.max())}


def summary_text(build: Build) -> str:
    m = build.manifest
    out = [f"{build.path}  ({m['kind']}, datakit {m.get('datakit_version', '?')})"]
    tok = m.get("tokenizer", {})
    out.append(f"tokenizer: {tok.get('source')} ({tok.get('kind')}, vocab {tok.get('vocab_size')}, "
               f"bos {tok.get('bos_id')}, eos {tok.get('eos_id')}, pad {tok.get('pad_id')})")
    if build.tokenizer_error:
        out.append(f"  note: {build.tokenizer_error}")
    recipe = m.get("recipe", {})
    steps = ", ".join(json.dumps(s, default=str) for s in recipe.get("transforms", []))
    out.append(f"recipe: {recipe.get('path')}; steps: {steps}")
    out.append("inputs: " + ", ".join(f"{Path(i['path']).name} ({i['records']:,} records)" for i in m.get("inputs", [])))
    for name, table in build.splits.items():
        s = split_stats(table)
        share = 100 * s["supervised"] / s["tokens"] if s["tokens"] else 0
        out.append(f"\n[{name}] rows {s['rows']:,}  tokens {s['tokens']:,}  supervised {s['supervised']:,} "
                   f"({share:.1f}%)" + (f"  padding {s['padding']:,}" if s.get("padding") else ""))
        packing = packing_stats(build, name)
        if packing:
            out.append(packing_line(packing, unit=packed_unit(build)))
        pct = percentiles(s["lengths"])
        if pct:
            out.append("  length " + "  ".join(f"{k} {v:,}" for k, v in pct.items()))
            hist = histogram(s["lengths"])
            top = max(c for _, _, c in hist) or 1
            for lo, hi, c in hist:
                out.append(f"  {lo:>7,}-{hi:<7,} {'█' * max(1 if c else 0, round(30 * c / top)):<30} {c:,}")
    out.append("")
    out.extend(_counts_lines(m.get("counts", {}), kind=m["kind"]))
    for src in m.get("sources", []):
        out.append(f"  source {src['name']}: rows {src.get('rows', 0):,}, tokens {src.get('tokens', 0):,}")
    return "\n".join(out)


def _counts_lines(c: dict, *, kind: str) -> list[str]:
    lines = [f"read {c.get('rows_read', 0):,} {'documents' if kind == 'pretrain' else 'rows'}, "
             f"{c.get('tokens_read', 0):,} tokens; wrote {c.get('tokens_written', 0):,} tokens"]
    for key, label in (("rows_dropped", "rows dropped"), ("tokens_dropped", "tokens dropped")):
        items = {k: v for k, v in c.get(key, {}).items() if v}
        lines.append(f"{label}: " + (", ".join(f"{k} {v:,}" for k, v in items.items()) if items else "none"))
    if "rows_truncated" in c:
        lines.append(f"rows truncated: {c['rows_truncated']:,}")
    if c.get("rows_truncated") or c.get("rows_dropped", {}).get("overlong"):
        lines.append("(a row longer than cutoff_len counts as cutoff_len tokens read)")
    return lines + _inference_lines(c)


def _inference_lines(c: dict) -> list[str]:
    """Chat rows whose text before the last assistant turn is not what inference feeds the model."""
    n = c.get("rows_inference_mismatch")
    if not n:
        return []
    named = list(c.get("inference_mismatch", {}))
    return [f"rows whose prompt differs from the inference prompt (messages[:last] + generation prompt): {n:,}"
            + (f"; e.g. {', '.join(named)}" if named else "")]


# ---------------------------------------------------------------- row views

TRAINED_OPEN, TRAINED_CLOSE = "«", "»"


def row_text(build: Build, split: str, index: int, *, color: bool) -> str:
    """The row's tokens in order. Trained tokens: green (color) or inside «…» (plain). Tokens are
    separated by a dim │ (color) or | (plain); special tokens and padding stay visible."""
    row = build.row(split, index)
    if "seq_lens" in row:
        return packed_row_text(build, split, index, color=color)
    ps = build.pieces(row)
    n_sup = int((row["labels"] != IGNORE_INDEX).sum())
    head = f"[{split} row {index}] {len(row['input_ids'])} tokens, {n_sup} trained" + _legend(color)
    note = f"\n(note: {build.tokenizer_error})" if build.tokenizer_error else ""
    return head + "\n" + _rendered(ps, color=color) + note


def _legend(color: bool) -> str:
    import click

    if color:
        return "  (" + click.style("trained", fg="green", bold=True) + " / " + click.style("masked", dim=True) + ")"
    return f"  (trained tokens inside {TRAINED_OPEN}…{TRAINED_CLOSE}, tokens separated by |)"


def _rendered(ps: list[Piece], *, color: bool) -> str:
    import click

    parts = []
    inside = False
    for k, p in enumerate(ps):
        text = _shown(p)
        if color:
            style = {"fg": "green", "bold": True} if p.trained else {"dim": True}
            if p.special:
                style = {"fg": "magenta", "bold": p.trained, "dim": not p.trained}
            parts.append(click.style(text, **style) + click.style("│", fg="bright_black"))
            continue
        if p.trained and not inside:
            parts.append(TRAINED_OPEN)
            inside = True
        elif not p.trained and inside:
            parts.append(TRAINED_CLOSE)
            inside = False
        parts.append(text + ("|" if k < len(ps) - 1 else ""))
    if inside:
        parts.append(TRAINED_CLOSE)
    return "".join(parts)


# ---------------------------------------------------------------- packed rows

def segments(row: dict) -> list[tuple[int, int]]:
    """(start, end) of every row packed into ``row`` (from seq_lens), then of its padding if any."""
    ends = np.cumsum(row["seq_lens"]).tolist()
    out = list(zip([0] + ends[:-1], ends))
    filled = ends[-1] if ends else 0
    if filled < len(row["input_ids"]):
        out.append((filled, len(row["input_ids"])))
    return out


def segment_pieces(build: Build, row: dict, start: int, end: int) -> list[Piece]:
    """The pieces of one packed row; their positions count within the pack."""
    part = {k: row[k][start:end] for k in ("input_ids", "labels", "attention_mask")}
    ps = build.pieces(part)
    for p in ps:
        p.positions = [start + q for q in p.positions]
    return ps


def packed_row_text(build: Build, split: str, index: int, *, color: bool) -> str:
    """A packed row, one packed row after the other, each under a marker line with its length,
    its own positions (position_ids restart at 0) and its trained tokens; padding last."""
    import click

    row = build.row(split, index)
    n_rows, filled = len(row["seq_lens"]), int(np.sum(row["seq_lens"]))
    head = (f"[{split} pack {index}] {len(row['input_ids'])} tokens: {n_rows} {packed_unit(build)} packed, "
            f"{len(row['input_ids']) - filled} padding" + _legend(color))
    lines = [head]
    for k, (a, b) in enumerate(segments(row)):
        trained = int((row["labels"][a:b] != IGNORE_INDEX).sum())
        if k < n_rows:
            pos = row["position_ids"][a:b]
            mark = (f"── row {k + 1}/{n_rows}: tokens {a}..{b - 1}, {b - a} tokens, "
                    f"position_ids {int(pos[0])}..{int(pos[-1])}, {trained} trained ──")
        else:
            mark = f"── padding: tokens {a}..{b - 1}, {b - a} tokens (attention 0, label -100) ──"
        lines.append(click.style(mark, fg="cyan") if color else mark)
        lines.append(_rendered(segment_pieces(build, row, a, b), color=color))
    if build.tokenizer_error:
        lines.append(f"(note: {build.tokenizer_error})")
    return "\n".join(lines)


def packing_stats(build: Build, split: str) -> dict | None:
    """Packing figures of a packed split: from the manifest when it has them (instruction rows),
    else counted from the columns (pretraining blocks with isolated documents: the recipe's
    block_size, and a "row" is a document piece)."""
    table = build.table(split)
    if "seq_lens" not in table.column_names:
        return None
    recorded = build.manifest.get("splits", {}).get(split, {}).get("packing")
    if recorded:
        return recorded
    seq_lens = table.column("seq_lens").combine_chunks()
    packs = table.num_rows
    tokens = int(seq_lens.values.to_numpy().sum()) if packs else 0
    pack = next((next(iter(t.values())) for t in build.manifest.get("recipe", {}).get("transforms", [])
                 if "pack" in t), None) or {}
    block = pack.get("block_size") or (
        int(np.diff(table.column("input_ids").combine_chunks().offsets.to_numpy()).max()) if packs else 0)
    slots = packs * block
    return {"block_size": block, "rows_packed": len(seq_lens.values), "packs": packs, "tokens": tokens,
            "padding_tokens": slots - tokens, "efficiency": round(tokens / slots, 6) if slots else 0.0,
            "rows_per_pack": round(len(seq_lens.values) / packs, 3) if packs else 0.0}


def packed_unit(build: Build) -> str:
    """What a pack holds: instruction rows, or pieces of documents (pretraining blocks)."""
    return "document pieces" if build.manifest.get("kind") == "pretrain" else "rows"


def packing_line(stats: dict, *, unit: str = "rows") -> str:
    return (f"  packing: {stats['rows_packed']:,} {unit} in {stats['packs']:,} packs of {stats['block_size']:,} "
            f"tokens, {stats['rows_per_pack']:.2f} {unit} per pack, efficiency {100 * stats['efficiency']:.2f}%, "
            f"padding {stats['padding_tokens']:,} tokens")


def _shown(p: Piece) -> str:
    if p.special:
        return p.text + ("(pad)" if p.padding and "pad" not in p.text.lower() else "")
    text = visible(p.text)
    if len(p.ids) > 1:
        text += _subscript(len(p.ids))
    return text


def _subscript(n: int) -> str:
    return "".join("₀₁₂₃₄₅₆₇₈₉"[int(d)] for d in str(n))


def row_table(build: Build, split: str, index: int) -> str:
    row = build.row(split, index)
    lines = [f"{'pos':>5}  {'id':>7}  {'label':>7}  {'piece':<20} text"]
    tok = build.tokenizer
    shown = {}
    for p in build.pieces(row):
        for k, pos in enumerate(p.positions):
            if len(p.positions) == 1:
                shown[pos] = repr(p.text) if not p.special else p.text
            else:
                shown[pos] = f"{p.text!r} (token {k + 1} of {len(p.positions)})"
    packed = "seq_lens" in row
    marks = {}
    if packed:  # a marker line before every packed row, and the row's own positions
        lines[0] = f"{'pos':>5}  {'pos_id':>6}  {'id':>7}  {'label':>7}  {'piece':<20} text"
        n_rows = len(row["seq_lens"])
        for k, (a, b) in enumerate(segments(row)):
            marks[a] = (f"── row {k + 1}/{n_rows}: {b - a} tokens ──" if k < n_rows
                        else f"── padding: {b - a} tokens ──")
    for pos, (tid, lab) in enumerate(zip(row["input_ids"].tolist(), row["labels"].tolist())):
        piece = tok.id_to_piece(tid) if tok else ""
        label = "-100" if lab == IGNORE_INDEX else str(lab)
        if pos in marks:
            lines.append(marks[pos])
        own = f"  {int(row['position_ids'][pos]):>6}" if packed else ""
        lines.append(f"{pos:>5}{own}  {tid:>7}  {label:>7}  {piece!s:<20} {shown.get(pos, '')}")
    return "\n".join(lines)


def sample_rows(build: Build, split: str, k: int, *, seed: int) -> list[int]:
    if k < 1:
        raise InspectError(f"a sample needs at least 1 row (asked for {k})")
    n = build.table(split).num_rows
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def grep_rows(build: Build, split: str, text: str, *, limit: int) -> list[int]:
    """Rows whose decoded text contains ``text`` (the first ``limit``)."""
    if build.tokenizer is None:
        raise InspectError(f"finding rows by their text needs the build's tokenizer: {build.tokenizer_error}")
    table = build.table(split)
    found = []
    for start in range(0, table.num_rows, 1000):
        chunk = table.slice(start, 1000).column("input_ids").to_pylist()
        for k, ids in enumerate(chunk):
            if text in build.tokenizer.decode(ids):
                found.append(start + k)
                if len(found) >= limit:
                    return found
    return found
